from __future__ import annotations

import pytest
import torch

from unigrpo_kit.rewards.base import Reward, RewardOutput
from unigrpo_kit.rewards.judge import ShapeWorldJudge
from unigrpo_kit.rewards.text import ReasoningReward
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld

PROMPTS = ShapeWorld().eval_prompts(n=7)


class _Constant(Reward):
    needs = frozenset()

    def compute(self, *, prompts, images, texts) -> RewardOutput:
        return RewardOutput(torch.ones(len(prompts) + 1))


def test_missing_needed_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ShapeWorldJudge needs images"):
        ShapeWorldJudge()(prompts=PROMPTS, texts=["x"] * 7)
    with pytest.raises(ValueError, match="ReasoningReward needs texts"):
        ReasoningReward()(prompts=PROMPTS, images=torch.zeros(7, 3, 32, 32))


def test_input_lengths_must_match_prompts() -> None:
    with pytest.raises(ValueError, match=r"\[N=7, 3, H, W\]"):
        ShapeWorldJudge()(prompts=PROMPTS, images=torch.zeros(6, 3, 32, 32))
    with pytest.raises(ValueError, match="one text per prompt"):
        ReasoningReward()(prompts=PROMPTS, texts=["x"] * 6)


def test_prompts_without_spec_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"prompts with a \.spec"):
        ReasoningReward()(prompts=["a circle"], texts=["red circle top left"])


def test_wrong_output_shape_is_caught() -> None:
    with pytest.raises(RuntimeError, match="shape"):
        _Constant()(prompts=PROMPTS)
