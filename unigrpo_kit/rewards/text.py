"""Text rewards: the reasoning text judged as the scene it describes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput, specs_of
from unigrpo_kit.tasks.shapeworld.scene import parse_reasoning
from unigrpo_kit.tasks.shapeworld.spec import constraints_met

REASONING_MODES = ("valid", "partial", "strict")


@REWARDS.register_module()
class ReasoningReward(Reward):
    """Symbolic judge of reasoning texts: valid scene, or the spec's strict/partial score.

    ``valid``: 1 when the text parses as a scene. ``strict`` / ``partial``: the GenEval-style
    judge of the parsed scene against ``prompt.spec`` (all / fraction of constraints), 0 when
    it does not parse. Metrics ``reasoning/valid``, ``reasoning/strict``,
    ``reasoning/partial``, each ``[N]``.
    """

    needs = frozenset({"texts"})

    def __init__(self, mode: str = "strict") -> None:
        if mode not in REASONING_MODES:
            raise ValueError(f"ReasoningReward mode {mode!r} must be one of {REASONING_MODES}")
        self.mode = mode

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor | None, texts: Sequence[str]
    ) -> RewardOutput:
        valid, strict, partial = [], [], []
        for text, spec in zip(texts, specs_of(prompts, type(self).__name__), strict=True):
            scene = parse_reasoning(text)
            met, total = constraints_met(scene, spec) if scene is not None else (0, 1)
            valid.append(float(scene is not None))
            strict.append(float(met == total))
            partial.append(met / total)
        metrics = {
            f"reasoning/{name}": torch.tensor(values, dtype=torch.float32)
            for name, values in (("valid", valid), ("strict", strict), ("partial", partial))
        }
        return RewardOutput(metrics[f"reasoning/{self.mode}"].clone(), metrics)
