"""JPEG compressibility, the classic hackable reward of DDPO (arXiv 2305.13301) and Flow-GRPO."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput

BYTES_PER_KB = 1000


def jpeg_kilobytes(image: torch.Tensor, quality: int) -> float:
    """Size in kB of one image ``[3, H, W]`` in [0, 1], saved as an 8-bit JPEG."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(buffer, "JPEG", quality=quality)
    return buffer.tell() / BYTES_PER_KB


@REWARDS.register_module()
class JpegCompressibility(Reward):
    """JPEG compressibility (DDPO): reward = -(JPEG size in kB) at the given quality.

    Metric ``jpeg/kb`` ``[N]``: the size itself.
    """

    needs = frozenset({"images"})

    def __init__(self, quality: int = 95) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"JpegCompressibility quality must be in 1..100, got {quality!r}")
        self.quality = quality

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        sizes = torch.tensor([jpeg_kilobytes(image, self.quality) for image in images])
        return RewardOutput(-sizes, {"jpeg/kb": sizes})
