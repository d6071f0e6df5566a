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
        normalize: ``"sum"`` (the advantage of the weighted sum) or ``"group"``: per-reward
            group normalisation, A_i = sum_k weights[k] * A(r_k)_i, each reward's advantage
            computed within the group before the weighting, so that one reward's scale does
            not drown the others (the trainer reads the parts from ``RewardOutput.components``).

    ``needs`` is the union of the parts' needs. Metrics: every part's metrics, plus
    ``<Type>/score`` for each part (``<Type>#<i>/score`` when a type repeats).
    """

    def __init__(
        self,
        rewards: Sequence[dict | Reward],
        weights: Sequence[float] | None = None,
        normalize: str = "sum",
    ) -> None:
        if normalize not in ("sum", "group"):
            raise ValueError(f"WeightedSum normalize={normalize!r} must be 'sum' or 'group'")
        self.normalize = normalize
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
        components: dict[str, tuple[float, torch.Tensor]] = {}
        for name, part, weight in zip(self.names, self.parts, self.weights, strict=True):
            output = part(prompts=prompts, images=images, texts=texts)
            total += weight * output.scores.float()
            metrics.update(output.metrics)
            metrics[f"{name}/score"] = output.scores
            components[name] = (weight, output.scores.float())
        return RewardOutput(total, metrics, components if self.normalize == "group" else None)


@REWARDS.register_module()
class Gated(Reward):
    """A reward that counts only where a gate is open:

        score = reward * 1[gate > threshold]

    With ``gate=dict(type="ReasoningReward", mode="valid")`` a right picture painted from a
    reasoning that does not parse as a scene scores 0, as the format reward of R1-style RL does:
    the reward then defends the reasoning's format, which the judge of the picture alone does
    not. ``reward`` and ``gate``: reward configs or built rewards. ``needs``: the union of both.
    Metrics: both parts' metrics, plus ``gate/open`` ``[N]`` (1 where the gate let the reward
    through).
    """

    def __init__(self, reward: dict | Reward, gate: dict | Reward, threshold: float = 0.5) -> None:
        self.reward = reward if isinstance(reward, Reward) else REWARDS.build(reward)
        self.gate = gate if isinstance(gate, Reward) else REWARDS.build(gate)
        self.threshold = float(threshold)
        self.needs = self.reward.needs | self.gate.needs

    def compute(
        self,
        *,
        prompts: Sequence[Any],
        images: torch.Tensor | None,
        texts: Sequence[str] | None,
    ) -> RewardOutput:
        inner = self.reward(prompts=prompts, images=images, texts=texts)
        gate = self.gate(prompts=prompts, images=images, texts=texts)
        is_open = (gate.scores.float() > self.threshold).float()
        metrics = {**gate.metrics, **inner.metrics, "gate/open": is_open}
        return RewardOutput(inner.scores.float() * is_open, metrics)
