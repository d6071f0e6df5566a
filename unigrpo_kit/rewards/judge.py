"""Image rewards from the built-in ShapeWorld judge and its quality metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput, specs_of
from unigrpo_kit.tasks.shapeworld.judge import score_batch
from unigrpo_kit.tasks.shapeworld.quality_metric import quality_batch

JUDGE_MODES = ("strict", "partial")


@REWARDS.register_module()
class ShapeWorldJudge(Reward):
    """GenEval-style ShapeWorld judge of images: strict (all constraints) or partial (fraction).

    Metrics: ``judge/strict``, ``judge/partial`` and ``quality`` (reported, not rewarded), each
    ``[N]``.
    """

    needs = frozenset({"images"})

    def __init__(self, mode: str = "strict") -> None:
        if mode not in JUDGE_MODES:
            raise ValueError(f"ShapeWorldJudge mode {mode!r} must be one of {JUDGE_MODES}")
        self.mode = mode

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        strict, partial = score_batch(images, specs_of(prompts, type(self).__name__))
        quality = quality_batch(images)
        metrics = {"judge/strict": strict, "judge/partial": partial, "quality": quality}
        return RewardOutput(strict if self.mode == "strict" else partial, metrics)


@REWARDS.register_module()
class QualityReward(Reward):
    """Image quality in [0, 1] (off-palette pixels, noise, patterns); 1 for clean renders."""

    needs = frozenset({"images"})

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        scores = quality_batch(images)
        return RewardOutput(scores, {"quality": scores})
