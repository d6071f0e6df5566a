"""Verifiable answer rewards for text tasks, e.g. the ``Arithmetic`` task.

Rule-based rewards for GRPO (DeepSeekMath, Shao et al., 2024) on GSM8K/MATH-style problems:
exact match of the final answer, DeepSeekMath's answer-correctness signal (its RFT / Online RFT;
its GRPO runs used a learned reward model) and DeepSeek-R1's rule-based accuracy reward (2025);
and TinyZero's Countdown (Pan et al., 2025), which checks the equation. Both rewards use the
task's one parser, :func:`~unigrpo_kit.tasks.arithmetic.check_answer`: the last ``Answer:``
line, numbers normalised, countdown expressions parsed with ``ast`` and evaluated exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput
from unigrpo_kit.tasks.arithmetic import AnswerCheck, check_answer


def check_all(prompts: Sequence[Any], texts: Sequence[str], reward_name: str) -> list[AnswerCheck]:
    """:func:`check_answer` of each (prompt, text); a one-line ValueError when a prompt has no
    ``.answer`` (e.g. a ShapeWorld prompt)."""
    missing = [i for i, prompt in enumerate(prompts) if not hasattr(prompt, "answer")]
    if missing:
        raise ValueError(
            f"{reward_name} needs prompts with an .answer (e.g. Arithmetic prompts); "
            f"prompt {missing[0]} is a {type(prompts[missing[0]]).__name__}"
        )
    return [check_answer(prompt, text) for prompt, text in zip(prompts, texts, strict=True)]


def _tensor(values: list[bool]) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


@REWARDS.register_module()
class ExactAnswer(Reward):
    """Exact-answer reward: ``r = 1`` if the final answer is right, else ``0``.

    The final answer is the content of the last ``Answer:`` line of the text. For a numeric
    problem it must equal ``prompt.answer`` after normalisation (GSM8K-style exact match, as in
    DeepSeekMath's answer-correctness signal and DeepSeek-R1's accuracy reward). For a countdown
    problem (a prompt with a ``target``) it must be an expression of ``+ - * /`` and parentheses
    that uses each of ``prompt.numbers`` at most once and equals the target exactly (TinyZero's
    Countdown check, which requires each number exactly once; here a subset is allowed). No
    partial credit: add :class:`AnswerFormat` with a small weight through ``WeightedSum`` for
    that. Metrics ``answer/correct`` and ``answer/parsed``, each ``[N]``.
    """

    needs = frozenset({"texts"})

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor | None, texts: Sequence[str]
    ) -> RewardOutput:
        checks = check_all(prompts, texts, type(self).__name__)
        correct = _tensor([c.correct for c in checks])
        metrics = {"answer/correct": correct, "answer/parsed": _tensor([c.parsed for c in checks])}
        return RewardOutput(correct.clone(), metrics)


@REWARDS.register_module()
class AnswerFormat(Reward):
    """Format reward: ``r = 1`` if the text ends in an answer that parses, else ``0``.

    Parses means an ``Answer:`` line whose content is a number (numeric problems) or an
    allowed expression (countdown), right or wrong: TinyZero's format score, as a separate
    reward to mix with :class:`ExactAnswer`, e.g. ``WeightedSum`` with weight 0.1. Metric
    ``answer/format`` ``[N]``.
    """

    needs = frozenset({"texts"})

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor | None, texts: Sequence[str]
    ) -> RewardOutput:
        parsed = _tensor([c.parsed for c in check_all(prompts, texts, type(self).__name__)])
        return RewardOutput(parsed.clone(), {"answer/format": parsed})
