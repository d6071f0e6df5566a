"""Image quality in [0, 1]: a reward-hacking detector, 1 for clean renders.

    quality = exp(-(off / OFF_SCALE
                    + max(0, noise - NOISE_FLOOR) / NOISE_SCALE
                    + max(0, edges - CLEAN_EDGE_DENSITY * 32 / H) / EDGE_SCALE))

``off``: fraction of off-palette pixels (oversaturated or invented colours). ``noise``: RMS
per-channel deviation of the on-palette pixels from their nearest palette colour (pixel noise
and smeared textures). ``edges``: fraction of horizontally or vertically adjacent pixel pairs
whose nearest colours differ (high-frequency patterns), beyond what clean renders have.
A clean render scores 1; one with N(0, 0.05) pixel noise ~0.3; oversaturated or patterned
images near 0 (``tools/judge_check.py`` prints the calibration).
"""

from __future__ import annotations

import numpy as np
import torch

from unigrpo_kit.tasks.shapeworld.pixels import OFF_PALETTE_CLASS, as_numpy_images, classify_pixels

OFF_SCALE = 0.05  # 5% off-palette pixels cost a factor e
NOISE_FLOOR = 0.01  # per-channel RMS deviation that costs nothing (a near-exact sample)
NOISE_SCALE = 0.03  # beyond the floor, std-0.05 noise (RMS ~0.046 after clamping) costs ~e^1.2
# Clean 32x32 renders of three triangles (the most boundary) have ~0.067 of adjacent pairs on a
# colour boundary; boundaries are 1-D, so the density halves at 64x64.
CLEAN_EDGE_DENSITY = 0.09
EDGE_SCALE = 0.05


def quality_terms(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three ingredients ``off``, ``noise``, ``edges``, each float32 ``[N]``."""
    pixels = as_numpy_images(images)
    classes, nearest = classify_pixels(pixels)
    on_palette = classes != OFF_PALETTE_CLASS
    off = 1.0 - on_palette.mean(axis=(1, 2))
    squared = np.where(on_palette, nearest**2, 0.0).sum(axis=(1, 2))
    noise = np.sqrt(squared / np.maximum(on_palette.sum(axis=(1, 2)), 1) / 3)
    changes = (classes[:, 1:, :] != classes[:, :-1, :]).sum(axis=(1, 2))
    changes += (classes[:, :, 1:] != classes[:, :, :-1]).sum(axis=(1, 2))
    _, height, width = classes.shape
    edges = changes / (height * (width - 1) + width * (height - 1))
    return {
        name: torch.as_tensor(value, dtype=torch.float32)
        for name, value in (("off", off), ("noise", noise), ("edges", edges))
    }


def quality_batch(images: torch.Tensor) -> torch.Tensor:
    """Quality ``[N]`` in [0, 1] of ``images [N, 3, H, W]`` (formula in the module docstring)."""
    terms = quality_terms(images)
    clean_edges = CLEAN_EDGE_DENSITY * 32 / images.shape[-2]
    penalty = (
        terms["off"] / OFF_SCALE
        + (terms["noise"] - NOISE_FLOOR).clamp(min=0) / NOISE_SCALE
        + (terms["edges"] - clean_edges).clamp(min=0) / EDGE_SCALE
    )
    return torch.exp(-penalty)


def quality(image: torch.Tensor) -> float:
    """Quality in [0, 1] of one image ``[3, H, W]``."""
    if image.dim() != 3:
        raise ValueError(f"quality takes one image [3, H, W], got shape {tuple(image.shape)}")
    return float(quality_batch(image.unsqueeze(0))[0])
