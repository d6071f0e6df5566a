from __future__ import annotations

import random

import torch

from unigrpo_kit.tasks.shapeworld.quality_metric import quality, quality_batch
from unigrpo_kit.tasks.shapeworld.renderer import render_batch
from unigrpo_kit.tasks.shapeworld.scene import PALETTE
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld

CLEAN = render_batch(
    [p.scene for p in ShapeWorld().sample_prompts(40, generator=0)], jitter_rng=random.Random(0)
)


def test_quality_orders_clean_noisy_saturated_patterned() -> None:
    generator = torch.Generator().manual_seed(0)
    noisy = (CLEAN + 0.05 * torch.randn(CLEAN.shape, generator=generator)).clamp(0, 1)
    saturated = ((CLEAN - 0.5) * 3 + 0.5).clamp(0, 1)
    patterned = CLEAN.clone()
    patterned[:, :, ::2, ::2] = torch.tensor(PALETTE["red"]).view(3, 1, 1)
    clean_q, noisy_q = quality_batch(CLEAN), quality_batch(noisy)
    saturated_q, patterned_q = quality_batch(saturated), quality_batch(patterned)
    assert clean_q.min() > 0.999
    assert 0.15 < noisy_q.mean() < 0.5
    assert saturated_q.max() < 0.25 and patterned_q.max() < 0.05
    assert quality(CLEAN[0]) == float(clean_q[0])


def test_small_deviation_costs_little() -> None:
    shifted = (CLEAN + 0.005).clamp(0, 1)  # under the noise floor
    assert quality_batch(shifted).min() > 0.99
