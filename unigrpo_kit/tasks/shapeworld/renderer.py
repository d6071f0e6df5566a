"""Exact flat-colour rasteriser: a scene -> a float32 image tensor ``[3, H, W]`` in [0, 1].

Geometry is defined at 32x32 and scaled by ``resolution / 32``: each object is ``OBJECT_SIZE``
pixels across, centred in its 16x16 slot, shifted by an integer jitter of at most ``jitter``
pixels per axis. A pixel takes an object's colour when its centre lies inside the shape
(hard edges, no anti-aliasing): circles by distance, squares by box, triangles (pointing up)
by three half-planes.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from unigrpo_kit.tasks.shapeworld.scene import BACKGROUND, PALETTE, Obj, Scene, slot_center

BASE_RESOLUTION = 32
OBJECT_SIZE = 11.0  # pixels across at 32x32: diameter, side, and triangle base and height


def check_resolution(resolution: int) -> None:
    """Raise unless ``resolution`` is a positive multiple of 32."""
    if resolution < BASE_RESOLUTION or resolution % BASE_RESOLUTION:
        raise ValueError(f"resolution must be a multiple of 32 (32 or 64), got {resolution!r}")


def _shape_mask(kind: str, cx: float, cy: float, size: float, resolution: int) -> np.ndarray:
    """Boolean ``[H, W]`` mask of the pixels whose centres fall inside the shape."""
    centres = np.arange(resolution, dtype=np.float64) + 0.5
    x, y = centres[None, :], centres[:, None]
    half = size / 2
    if kind == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    if kind == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    # Triangle with apex (cx, cy - half) and base y = cy + half: the half-width grows from 0 at
    # the apex to `half` at the base, i.e. |x - cx| <= (y - apex_y) / 2 for a height of `size`.
    apex_y = cy - half
    return (y <= cy + half) & (np.abs(x - cx) <= (y - apex_y) / 2)


def object_center(
    obj: Obj, resolution: int = BASE_RESOLUTION, offset: tuple[int, int] = (0, 0)
) -> tuple[float, float]:
    """Pixel-space centre ``(x, y)`` of an object, with an integer jitter ``offset`` at 32 px.

    The centre sits half a (32-px) pixel up-left of the slot centre: on a pixel centre at 32 px,
    so that the 11-px shapes are symmetric on the pixel grid, and on a pixel corner at 64 px.
    """
    scale = resolution / BASE_RESOLUTION
    fx, fy = slot_center(obj.slot)
    return (
        fx * resolution + (offset[0] - 0.5) * scale,
        fy * resolution + (offset[1] - 0.5) * scale,
    )


def render(
    scene: Scene,
    resolution: int = BASE_RESOLUTION,
    jitter_rng: random.Random | None = None,
    *,
    jitter: int = 1,
) -> torch.Tensor:
    """Float32 image ``[3, resolution, resolution]`` of ``scene`` on the plain background.

    ``jitter_rng`` None places every object exactly at its slot centre; otherwise each object
    moves by integers drawn uniformly from ``[-jitter, jitter]`` (in 32-px pixels) per axis.
    """
    check_resolution(resolution)
    image = np.empty((resolution, resolution, 3), dtype=np.float32)
    image[:] = BACKGROUND
    size = OBJECT_SIZE * resolution / BASE_RESOLUTION
    for obj in scene.objects:
        offset = (0, 0)
        if jitter_rng is not None and jitter > 0:
            offset = (jitter_rng.randint(-jitter, jitter), jitter_rng.randint(-jitter, jitter))
        cx, cy = object_center(obj, resolution, offset)
        image[_shape_mask(obj.kind, cx, cy, size, resolution)] = PALETTE[obj.color]
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def render_batch(
    scenes: list[Scene],
    resolution: int = BASE_RESOLUTION,
    jitter_rng: random.Random | None = None,
    *,
    jitter: int = 1,
) -> torch.Tensor:
    """Float32 images ``[N, 3, resolution, resolution]``, one per scene (see :func:`render`)."""
    if not scenes:
        raise ValueError("render_batch needs at least one scene, got an empty list")
    return torch.stack([render(s, resolution, jitter_rng, jitter=jitter) for s in scenes])
