"""Image rewards from the built-in ShapeWorld judge and its quality metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput, specs_of
from unigrpo_kit.tasks.shapeworld.judge import score_batch
from unigrpo_kit.tasks.shapeworld.quality_metric import quality_batch
from unigrpo_kit.tasks.shapeworld.scene import parse_reasoning
from unigrpo_kit.tasks.shapeworld.spec import constraints_met

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


@REWARDS.register_module()
class PainterFidelity(Reward):
    """The painter's share of a unified episode: the judge's score of the image where the
    episode's reasoning states a right scene, and no score (NaN) where it does not (a painter
    told to draw a wrong scene says nothing about the painter by drawing it):

        f_i = judge_mode(x_i, spec_i) + quality_weight * quality(x_i)   if the reasoning of
              episode i parses to a scene that meets every constraint of spec_i, else NaN

    Meant for ``algorithm.image_reward`` (the painter's own advantage term), where a NaN row
    gets no term; as the terminal ``reward`` its NaN rows would be invalid episodes.
    Metrics: ``painter/fidelity`` (the judge's score over the right reasonings, NaN elsewhere).
    """

    needs = frozenset({"images", "texts"})

    def __init__(self, mode: str = "partial", quality_weight: float = 0.0) -> None:
        if mode not in JUDGE_MODES:
            raise ValueError(f"PainterFidelity mode {mode!r} must be one of {JUDGE_MODES}")
        if quality_weight < 0:
            raise ValueError(f"PainterFidelity quality_weight must be >= 0, got {quality_weight}")
        self.mode = mode
        self.quality_weight = quality_weight

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        specs = specs_of(prompts, type(self).__name__)
        strict, partial = score_batch(images, specs)
        judged = strict if self.mode == "strict" else partial
        right = []
        for text, spec in zip(texts, specs, strict=True):
            scene = parse_reasoning(text)
            met, total = constraints_met(scene, spec) if scene is not None else (0, 1)
            right.append(met == total)
        right = torch.tensor(right, dtype=torch.bool)
        nan = torch.full_like(judged, float("nan"))
        fidelity = torch.where(right, judged, nan)
        scores = fidelity
        if self.quality_weight:
            scores = fidelity + self.quality_weight * quality_batch(images)
        return RewardOutput(scores, {"painter/fidelity": fidelity})
