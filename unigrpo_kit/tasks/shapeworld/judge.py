"""The judge: parse an image back into objects and score it against a spec, GenEval-style.

Pipeline per image ``[3, H, W]``: (1) snap each pixel to its nearest palette colour or the
background, ignoring off-palette pixels (``pixels.py``); (2) label 8-connected components of
each colour; (3) drop specks; (4) merge fragments of one colour whose centroids share a
slot (the world never puts two objects in one slot), or that lie within ``MERGE_DISTANCE`` of
each other and together still fit in one object's box (``MAX_OBJECT_EXTENT``), since a ragged
sample can split one shape but two clearly drawn neighbours are two objects; (5) drop objects
smaller than ``MIN_OBJECT_AREA``; (6) classify the kind by template matching: the shape's
pixels (row and column gaps filled) against a square, a circle and an upward triangle each
fitted to its bounding box; the kind whose template overlaps best (intersection over union)
wins. Pixel thresholds are given at 32x32 and scale with the resolution; docs/world.md lists
them with the cases each one decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product

import numpy as np
import torch

from unigrpo_kit.tasks.shapeworld.pixels import BACKGROUND_CLASS, as_numpy_images, classify_pixels
from unigrpo_kit.tasks.shapeworld.scene import COLORS, Obj, Scene
from unigrpo_kit.tasks.shapeworld.spec import Located, Spec, check

# Components under this many pixels are noise specks, dropped before merging (at 32x32).
SPECK_AREA = 3
# Same-colour fragments whose closest pixels are at most this far apart (Chebyshev, pixels at
# 32x32) may be one object: it bridges a 1-px line of background through a shape...
MERGE_DISTANCE = 2
# ... provided the union still fits in this box (pixels at 32x32 per axis: one slot, 16 px,
# against the 11-px shapes). Two neighbours drawn with a 1-px gap span 23 px and stay two.
MAX_OBJECT_EXTENT = 16
# Merged objects under this many pixels are dropped: half the smallest exact shape (a triangle,
# 61 px at 32x32). A person does not count a stray patch-sized blot (a 4x4 block is 16 px) as
# one more shape, and with the "nothing extra" rule such blots would otherwise fail a picture.
MIN_OBJECT_AREA = 30
# The kinds, in the order that breaks an exact tie of template overlaps.
KINDS = ("square", "circle", "triangle")
# Template sizes tried, in pixels beyond the shape's bounding box (see kind_scores): a circle
# 11.77 px across covers 109 of its 121-px box and matches the circle grown by ~0.8 px
# exactly, where the 11-px circle template (97 px) and the square (121) both fall short.
TEMPLATE_GROWTH = (-0.5, 0.0, 0.5, 0.99)
# Pixel lines that a template's box may leave out on each side of the shape's bounding box.
MAX_TRIM = 1
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


def shape_mask(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The shape's pixels in its bounding box, row and then column gaps filled: ``[h, w]``."""
    top, left = ys.min(), xs.min()
    mask = np.zeros((ys.max() - top + 1, xs.max() - left + 1), dtype=bool)
    mask[ys - top, xs - left] = True
    return _fill_gaps(_fill_gaps(mask, axis=1), axis=0)


def kind_templates(height: int, width: int, grow: float = 0.0) -> dict[str, np.ndarray]:
    """Boolean ``[height, width]`` masks of each kind drawn ``grow`` pixels wider and taller
    than the box, centred on it, by pixel centres as the renderer draws: the square; the
    ellipse; the triangle with its apex at the top middle and its base at the bottom."""
    y = ((np.arange(height) + 0.5)[:, None] - height / 2) / (height + grow) + 0.5
    x = ((np.arange(width) + 0.5)[None, :] - width / 2) / (width + grow) + 0.5
    inside = (np.abs(x - 0.5) <= 0.5) & (np.abs(y - 0.5) <= 0.5)
    return {
        "square": inside,
        "circle": (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25,
        "triangle": inside & (np.abs(x - 0.5) <= y / 2),
    }


@lru_cache(maxsize=512)
def _fitted_templates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Every template tried on a ``[height, width]`` box, flattened: ``(kind index [T],
    templates [T, height * width] float32)``; see :func:`kind_scores`."""
    kinds, templates = [], []
    for top, bottom, left, right in product(range(MAX_TRIM + 1), repeat=4):
        h, w = height - top - bottom, width - left - right
        if h < 1 or w < 1:
            continue
        for grow in TEMPLATE_GROWTH:
            for kind, template in kind_templates(h, w, grow).items():
                placed = np.zeros((height, width), dtype=np.float32)
                placed[top : top + h, left : left + w] = template
                kinds.append(KINDS.index(kind))
                templates.append(placed.ravel())
    return np.array(kinds), np.stack(templates)


def kind_scores(ys: np.ndarray, xs: np.ndarray) -> dict[str, float]:
    """Best intersection over union of the shape (:func:`shape_mask`) with each kind's
    template, over the template boxes and sizes the shape's box allows:

        IoU(k) = max_{b, g} |M & T_k(b, g)| / |M | T_k(b, g)|

    The box b is the shape's bounding box with up to ``MAX_TRIM`` pixel lines taken off each
    side (a ragged 1-px stub does not stretch the template); the size g is in
    ``TEMPLATE_GROWTH``: a shape whose pixel centres span n pixels was drawn between n - 1 and
    n + 1 pixels wide. An exact render scores 1.0 for its own kind; a slightly larger or
    smaller, anti-aliased or ragged shape takes the kind it resembles most.
    """
    mask = shape_mask(ys, xs)
    kinds, templates = _fitted_templates(*mask.shape)
    flat = mask.ravel().astype(np.float32)
    overlap = templates @ flat
    iou = overlap / (templates.sum(axis=1) + flat.sum() - overlap)
    return {kind: float(iou[kinds == index].max()) for index, kind in enumerate(KINDS)}


def classify_kind(ys: np.ndarray, xs: np.ndarray) -> str:
    """Kind of a shape from its pixel coordinates: the best-overlapping template."""
    scores = kind_scores(ys, xs)
    return max(KINDS, key=lambda kind: scores[kind])  # max keeps the first of a tie


def _slot_of(cx: float, cy: float, height: int, width: int) -> int:
    return 2 * int(cy >= height / 2) + int(cx >= width / 2)


def _merge_fragments(
    fragments: list[tuple[int, np.ndarray, np.ndarray]],
    height: int,
    width: int,
    reach: float,
    extent: float,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Union same-colour fragments ``(class, ys, xs)`` that share a slot, or that are within
    ``reach`` of each other and whose two bounding boxes together span at most ``extent``
    pixels per axis."""
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
            span = max(
                max(ys_i.max(), ys_j.max()) - min(ys_i.min(), ys_j.min()) + 1,
                max(xs_i.max(), xs_j.max()) - min(xs_i.min(), xs_j.min()) + 1,
            )
            if slots[i] == slots[j] or (gap <= reach and span <= extent):
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
        merged = _merge_fragments(
            fragments, height, width, MERGE_DISTANCE * scale, MAX_OBJECT_EXTENT * scale
        )
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
