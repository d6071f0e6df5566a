"""The judge: parse an image back into objects and score it against a spec, GenEval-style.

Pipeline per image ``[3, H, W]``: (1) snap each pixel to its nearest palette colour or the
background, ignoring off-palette pixels (``pixels.py``); (2) label 8-connected components of
each colour; (3) drop specks; (4) merge fragments of one colour that lie within
``MERGE_DISTANCE`` of each other or whose centroids share a slot, since a ragged sample can
split one shape and the world never puts two objects in one slot; (5) drop objects smaller
than ``MIN_OBJECT_AREA``; (6) classify the kind by the fill ratio of the bounding box after
filling row and column gaps: square ~1.0, circle ~0.79, triangle ~0.5. Pixel thresholds are
given at 32x32 and scale with the resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unigrpo_kit.tasks.shapeworld.pixels import BACKGROUND_CLASS, as_numpy_images, classify_pixels
from unigrpo_kit.tasks.shapeworld.scene import COLORS, Obj, Scene
from unigrpo_kit.tasks.shapeworld.spec import Located, Spec, check

# Components under this many pixels are noise specks, dropped before merging (at 32x32).
SPECK_AREA = 3
# Same-colour fragments whose closest pixels are at most this far apart (Chebyshev, pixels at
# 32x32) are one object: it bridges a 1-px line of background, while two objects in adjacent
# slots always stand at least 3 px apart.
MERGE_DISTANCE = 2
# Merged objects under this many pixels are dropped: half the smallest exact shape (a triangle,
# 61 px at 32x32). A person does not count a stray patch-sized blot (a 4x4 block is 16 px) as
# one more shape, and with the "nothing extra" rule such blots would otherwise fail a picture.
MIN_OBJECT_AREA = 30
# Fill ratio thresholds, halfway between the exact shapes' ratios (32 and 64 px): square
# 1.0, circle 0.80 / 0.79, triangle 0.50 / 0.52.
SQUARE_MIN_FILL = 0.9
TRIANGLE_MAX_FILL = 0.65
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass(frozen=True)
class Detected:
    """One object found in an image: centroid ``(cx, cy)`` and ``area`` in pixels."""

    color: str
    kind: str
    cx: float
    cy: float
    area: int
    slot: int


def label_components(classes: np.ndarray) -> np.ndarray:
    """8-connected components of equal, non-background class in ``classes [N, H, W]``.

    Returns int64 labels ``[N, H, W]``: -1 for background and off-palette pixels, otherwise a
    flat pixel index shared by all pixels of the component. Min-label propagation with
    pointer jumping, vectorised over the whole batch.
    """
    n, h, w = classes.shape
    foreground = (classes >= 0) & (classes != BACKGROUND_CLASS)
    sentinel = n * h * w
    labels = np.where(foreground, np.arange(sentinel).reshape(n, h, w), sentinel)
    padded_classes = np.pad(classes, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    while True:
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=sentinel)
        updated = labels.copy()
        for dy, dx in _NEIGHBOURS:
            window = (slice(None), slice(1 + dy, 1 + dy + h), slice(1 + dx, 1 + dx + w))
            joined = foreground & (padded_classes[window] == classes)
            updated = np.where(joined, np.minimum(updated, padded[window]), updated)
        flat = np.append(updated.ravel(), sentinel)
        updated = np.where(foreground, flat[updated], sentinel)  # pointer jumping
        if np.array_equal(updated, labels):
            break
        labels = updated
    return np.where(foreground, labels, -1)


def _fill_gaps(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill each line of ``mask`` along ``axis`` from its first to its last True pixel."""
    after_first = np.maximum.accumulate(mask, axis=axis)
    before_last = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
    return after_first & before_last


def _fill_ratio(ys: np.ndarray, xs: np.ndarray) -> float:
    """Pixels of the shape, with row and then column gaps filled, over its bounding box."""
    top, left = ys.min(), xs.min()
    mask = np.zeros((ys.max() - top + 1, xs.max() - left + 1), dtype=bool)
    mask[ys - top, xs - left] = True
    return float(_fill_gaps(_fill_gaps(mask, axis=1), axis=0).mean())


def classify_kind(ys: np.ndarray, xs: np.ndarray) -> str:
    """Kind of a shape from its pixel coordinates, by the (gap-filled) bounding-box fill."""
    fill = _fill_ratio(ys, xs)
    if fill >= SQUARE_MIN_FILL:
        return "square"
    return "triangle" if fill <= TRIANGLE_MAX_FILL else "circle"


def _slot_of(cx: float, cy: float, height: int, width: int) -> int:
    return 2 * int(cy >= height / 2) + int(cx >= width / 2)


def _merge_fragments(
    fragments: list[tuple[int, np.ndarray, np.ndarray]], height: int, width: int, reach: float
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Union same-colour fragments ``(class, ys, xs)`` that are close or share a slot."""
    parent = list(range(len(fragments)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    slots = [_slot_of(xs.mean() + 0.5, ys.mean() + 0.5, height, width) for _, ys, xs in fragments]
    for i, (class_i, ys_i, xs_i) in enumerate(fragments):
        for j in range(i + 1, len(fragments)):
            class_j, ys_j, xs_j = fragments[j]
            if class_i != class_j:
                continue
            gap = np.maximum(
                np.abs(ys_i[:, None] - ys_j[None, :]), np.abs(xs_i[:, None] - xs_j[None, :])
            ).min()
            if slots[i] == slots[j] or gap <= reach:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(fragments)):
        groups.setdefault(root(i), []).append(i)
    return [
        (
            fragments[members[0]][0],
            np.concatenate([fragments[m][1] for m in members]),
            np.concatenate([fragments[m][2] for m in members]),
        )
        for members in groups.values()
    ]


def parse_images(images: torch.Tensor) -> list[list[Detected]]:
    """Detected objects of each image of ``images [N, 3, H, W]`` (values in [0, 1])."""
    pixels = as_numpy_images(images)
    n, height, width, _ = pixels.shape
    scale = height / 32
    classes, _ = classify_pixels(pixels)
    labels = label_components(classes)
    results: list[list[Detected]] = []
    for index in range(n):
        image_labels = labels[index]
        fragments = []
        for label in np.unique(image_labels[image_labels >= 0]):
            ys, xs = np.nonzero(image_labels == label)
            if ys.size >= SPECK_AREA * scale**2:
                fragments.append((int(classes[index, ys[0], xs[0]]), ys, xs))
        detections = []
        merged = _merge_fragments(fragments, height, width, MERGE_DISTANCE * scale)
        for color_index, ys, xs in merged:
            if ys.size < MIN_OBJECT_AREA * scale**2:
                continue
            cx, cy = float(xs.mean() + 0.5), float(ys.mean() + 0.5)  # pixel centres
            detections.append(
                Detected(
                    COLORS[color_index],
                    classify_kind(ys, xs),
                    cx,
                    cy,
                    int(ys.size),
                    _slot_of(cx, cy, height, width),
                )
            )
        results.append(detections)
    return results


def parse_image(image: torch.Tensor) -> list[Detected]:
    """Detected objects of one image ``[3, H, W]``."""
    if image.dim() != 3:
        raise ValueError(f"parse_image takes one image [3, H, W], got shape {tuple(image.shape)}")
    return parse_images(image)[0]


def parse_scene(image: torch.Tensor) -> Scene:
    """The image as a Scene: detections snapped to slots; of two in one slot the larger wins."""
    taken: dict[int, Obj] = {}
    for found in sorted(parse_image(image), key=lambda d: -d.area):
        taken.setdefault(found.slot, Obj(found.color, found.kind, found.slot))
    return Scene(tuple(taken.values()))


def _score_detections(detections: list[Detected], spec: Spec, height: int, width: int):
    located = [Located(d.color, d.kind, d.cx / width, d.cy / height) for d in detections]
    results = check(located, spec)
    return float(all(results)), sum(results) / len(results)


def score_batch(images: torch.Tensor, specs: list[Spec]) -> tuple[torch.Tensor, torch.Tensor]:
    """GenEval-style ``(strict [N], partial [N])`` float32 scores of ``images [N, 3, H, W]``.

    strict is 1 iff every constraint of the spec holds; partial is the fraction that hold.
    """
    if images.dim() != 4 or len(specs) != images.shape[0]:
        raise ValueError(
            f"score_batch needs images [N, 3, H, W] and N specs; got shape "
            f"{tuple(images.shape)} and {len(specs)} specs"
        )
    height, width = images.shape[-2:]
    scores = [
        _score_detections(found, spec, height, width)
        for found, spec in zip(parse_images(images), specs, strict=True)
    ]
    strict, partial = zip(*scores, strict=True)
    return torch.tensor(strict, dtype=torch.float32), torch.tensor(partial, dtype=torch.float32)


def score(image: torch.Tensor, spec: Spec) -> tuple[float, float]:
    """``(strict, partial)`` of one image ``[3, H, W]`` against ``spec`` (see score_batch)."""
    strict, partial = score_batch(image.unsqueeze(0), [spec])
    return float(strict[0]), float(partial[0])
