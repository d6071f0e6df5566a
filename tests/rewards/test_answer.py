"""ExactAnswer and AnswerFormat: rule-based rewards of final answers on hand-written texts."""

from __future__ import annotations

import pytest
import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.answer import AnswerFormat, ExactAnswer
from unigrpo_kit.tasks.arithmetic import CATEGORIES, Arithmetic, ArithmeticPrompt
from unigrpo_kit.tasks.shapeworld import ShapeWorld

SUM = ArithmeticPrompt("What is 600 + 634?\nAnswer: <number>", "1234", "add")
GAME = ArithmeticPrompt(
    "Using the numbers [1, 3, 4, 6] ...", "6 * 4", "countdown", (1, 3, 4, 6), 24
)

CASES = [  # (prompt, text, correct, parsed)
    (SUM, "600 + 634 = 1234.\nAnswer: 1234", 1.0, 1.0),
    (SUM, "Answer: 1,234.0", 1.0, 1.0),
    (SUM, "Answer: 1234\nActually, Answer: 1243", 0.0, 1.0),  # the last line counts
    (SUM, "I think it is 1234.", 0.0, 0.0),  # missing
    (SUM, "Answer: about twelve hundred", 0.0, 0.0),  # malformed
    (GAME, "Answer: 6 / (1 - 3 / 4)", 1.0, 1.0),
    (GAME, "Answer: 4 * 6 = 24", 1.0, 1.0),
    (GAME, "Answer: 6 * 4 * 1 * 1", 0.0, 1.0),  # 1 used twice
    (GAME, "Answer: 6 + 4", 0.0, 1.0),  # wrong target
    (GAME, "Answer: 6 ** 1 * 4", 0.0, 0.0),  # disallowed syntax
    (GAME, "Answer: __import__('os').getcwd()", 0.0, 0.0),
    (GAME, "no answer line", 0.0, 0.0),
]


def test_exact_answer_on_hand_written_texts() -> None:
    prompts, texts, correct, parsed = zip(*CASES, strict=True)
    output = ExactAnswer()(prompts=list(prompts), texts=list(texts))
    assert output.scores.dtype == torch.float32
    assert output.scores.tolist() == list(correct)
    assert output.metrics["answer/correct"].tolist() == list(correct)
    assert output.metrics["answer/parsed"].tolist() == list(parsed)


def test_answer_format_rewards_a_parsed_answer_right_or_wrong() -> None:
    prompts, texts, _, parsed = zip(*CASES, strict=True)
    output = AnswerFormat()(prompts=list(prompts), texts=list(texts))
    assert output.scores.tolist() == list(parsed)
    assert list(output.metrics) == ["answer/format"]
    assert output.metrics["answer/format"].tolist() == list(parsed)


def test_the_generated_answer_of_every_category_scores_one() -> None:
    prompts = Arithmetic().eval_prompts(25)
    assert {p.category for p in prompts} == set(CATEGORIES)
    texts = [f"Let me think.\nAnswer: {p.answer}" for p in prompts]
    assert ExactAnswer()(prompts=prompts, texts=texts).scores.tolist() == [1.0] * len(prompts)


def test_a_format_bonus_mixes_in_through_weighted_sum() -> None:
    reward = REWARDS.build(
        dict(
            type="WeightedSum",
            rewards=[dict(type="ExactAnswer"), dict(type="AnswerFormat")],
            weights=[1.0, 0.1],
        )
    )
    output = reward(prompts=[SUM, SUM, SUM], texts=["Answer: 1234", "Answer: 1", "?"])
    assert output.scores.tolist() == pytest.approx([1.1, 0.1, 0.0])


@pytest.mark.parametrize("reward", [ExactAnswer(), AnswerFormat()], ids=lambda r: type(r).__name__)
def test_prompts_without_an_answer_fail_with_one_line(reward) -> None:
    prompts = ShapeWorld().sample_prompts(2, generator=0)
    with pytest.raises(ValueError) as error:
        reward(prompts=prompts, texts=["Answer: 1", "Answer: 2"])
    message = str(error.value)
    assert "\n" not in message
    assert type(reward).__name__ in message and ".answer" in message and "Prompt" in message


def test_texts_are_needed() -> None:
    assert ExactAnswer.needs == AnswerFormat.needs == frozenset({"texts"})
    with pytest.raises(ValueError, match="needs texts"):
        ExactAnswer()(prompts=[SUM])


def test_the_registry_builds_both() -> None:
    assert type(REWARDS.build(dict(type="ExactAnswer"))) is ExactAnswer
    assert type(REWARDS.build(dict(type="AnswerFormat"))) is AnswerFormat
