"""Per-pixel palette classification shared by the judge and the quality metric."""

from __future__ import annotations

import numpy as np
import torch

from unigrpo_kit.tasks.shapeworld.scene import BACKGROUND, COLORS, PALETTE

# Rows 0..5 are the palette colours in COLORS order, row 6 the background.
REFERENCE = np.array([PALETTE[c] for c in COLORS] + [BACKGROUND], dtype=np.float32)
BACKGROUND_CLASS = len(COLORS)
OFF_PALETTE_CLASS = -1
# A pixel farther than this (Euclidean RGB distance, [0, 1] units) from every reference colour
# is "off-palette". Std-0.05 Gaussian noise exceeds it with probability ~1e-3 per pixel, while
# a palette colour pushed to full saturation (red -> (1, 0, 0), 0.24 away) lands beyond it.
OFF_PALETTE_DISTANCE = 0.2


def as_numpy_images(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` or ``[3, H, W]`` float tensor -> float32 numpy ``[N, H, W, 3]``."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] or [3, H, W], got {tuple(images.shape)}")
    return images.detach().float().cpu().permute(0, 2, 3, 1).numpy()


def classify_pixels(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference colour of each pixel of ``pixels [..., 3]``.

    Returns ``(classes, distance)``, each of shape ``[...]``: the class is the palette index
    0..5, ``BACKGROUND_CLASS``, or ``OFF_PALETTE_CLASS``; the distance is to the nearest
    reference colour (off-palette pixels included).
    """
    distances = np.sqrt(((pixels[..., None, :] - REFERENCE) ** 2).sum(axis=-1))
    classes = distances.argmin(axis=-1)
    nearest = distances.min(axis=-1)
    classes = np.where(nearest > OFF_PALETTE_DISTANCE, OFF_PALETTE_CLASS, classes)
    return classes, nearest
