"""Weighted sums of rewards, built through the REWARDS registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput


@REWARDS.register_module()
class WeightedSum(Reward):
    """Weighted sum of rewards: score = sum_i weights[i] * rewards[i].

    Args:
        rewards: reward configs (``dict(type="ShapeWorldJudge", mode="partial")``) or built
            rewards.
        weights: one float per reward; default all 1.

    ``needs`` is the union of the parts' needs. Metrics: every part's metrics, plus
    ``<Type>/score`` for each part (``<Type>#<i>/score`` when a type repeats).
    """

    def __init__(
        self, rewards: Sequence[dict | Reward], weights: Sequence[float] | None = None
    ) -> None:
        if not rewards:
            raise ValueError("WeightedSum needs at least one reward in rewards=[dict(type=...)]")
        weights = [1.0] * len(rewards) if weights is None else list(weights)
        if len(weights) != len(rewards):
            raise ValueError(
                f"WeightedSum got {len(weights)} weights for {len(rewards)} rewards; "
                "give one weight per reward"
            )
        self.parts = [part if isinstance(part, Reward) else REWARDS.build(part) for part in rewards]
        self.weights = [float(w) for w in weights]
        self.needs = frozenset().union(*(part.needs for part in self.parts))
        names = [type(part).__name__ for part in self.parts]
        self.names = [
            name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)
        ]

    def compute(
        self,
        *,
        prompts: Sequence[Any],
        images: torch.Tensor | None,
        texts: Sequence[str] | None,
    ) -> RewardOutput:
        total = torch.zeros(len(prompts), dtype=torch.float32)
        metrics: dict[str, torch.Tensor] = {}
        for name, part, weight in zip(self.names, self.parts, self.weights, strict=True):
            output = part(prompts=prompts, images=images, texts=texts)
            total += weight * output.scores.float()
            metrics.update(output.metrics)
            metrics[f"{name}/score"] = output.scores
        return RewardOutput(total, metrics)
