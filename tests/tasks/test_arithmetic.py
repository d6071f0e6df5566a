"""The Arithmetic task: seeded problems, disjoint splits, correct answers, the answer parser."""

from __future__ import annotations

import operator
import random
import re
from collections import Counter
from fractions import Fraction
from types import SimpleNamespace

import pytest

from unigrpo_kit.registry import TASKS
from unigrpo_kit.tasks.arithmetic import (
    CATEGORIES,
    Arithmetic,
    ArithmeticPrompt,
    check_answer,
    check_countdown,
    extract_answer,
    normalize_number,
    parse_expression,
    split_of,
)

QUESTION = re.compile(r"What is (\d+) ([-+*]) (\d+)(?: ([-+*]) (\d+))?\?")
COUNTDOWN = re.compile(r"Using the numbers \[([\d, ]+)\], write an expression that equals (\d+)\.")
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def problem_of(prompt: ArithmeticPrompt) -> tuple:
    """A canonical problem read back from the text alone: operands of + and * unordered,
    countdown numbers as a multiset, so ``3 + 4`` and ``4 + 3`` are one problem."""
    question = prompt.text.split("\n")[0]
    match = QUESTION.fullmatch(question)
    if match:
        a, op, b, op2, c = match.groups()
        if op2 is None and op in "+*":
            return (op, *sorted((int(a), int(b))))
        return tuple(g for g in match.groups() if g is not None)
    match = COUNTDOWN.match(question)
    assert match, question
    return ("countdown", tuple(sorted(map(int, match.group(1).split(", ")))), int(match.group(2)))


def recompute(prompt: ArithmeticPrompt) -> int:
    """The answer of a numeric problem from its text, with Python operators and precedence."""
    a, op, b, op2, c = QUESTION.fullmatch(prompt.text.split("\n")[0]).groups()
    a, b = int(a), int(b)
    if op2 is None:
        return OPS[op](a, b)
    c = int(c)
    if op == "*" or op2 != "*":  # left operator binds first
        return OPS[op2](OPS[op](a, b), c)
    return OPS[op](a, b * c)


def fraction_value(expression: str) -> Fraction:
    """An independent exact evaluation of a (regex-checked) expression of integer literals."""
    assert re.fullmatch(r"[\d\s+\-*/()]+", expression), expression
    as_fractions = re.sub(r"\d+", lambda m: f"Fraction({m.group()})", expression)
    return eval(as_fractions, {"__builtins__": {}, "Fraction": Fraction})


# Generation --------------------------------------------------------------------------------


def test_same_seed_same_prompts_and_different_seeds_differ() -> None:
    first = Arithmetic(seed=3).sample_prompts(40)
    assert first == Arithmetic(seed=3).sample_prompts(40)
    assert first == Arithmetic(seed=99).sample_prompts(40, generator=3)
    assert first == Arithmetic().sample_prompts(40, generator=random.Random(3))
    assert first != Arithmetic(seed=4).sample_prompts(40)
    assert all(isinstance(p, ArithmeticPrompt) for p in first)


def test_prompts_are_frozen_with_the_instruction_appended() -> None:
    task = Arithmetic()
    numeric = task.sample_prompts(1, categories=["add"], generator=0)[0]
    countdown = task.sample_prompts(1, categories=["countdown"], generator=0)[0]
    assert numeric.text.endswith("Answer: <number>")
    assert countdown.text.endswith("Answer: <expression>")
    assert (numeric.numbers, numeric.target) == ((), None)
    with pytest.raises(AttributeError):
        numeric.answer = "0"  # type: ignore[misc]
    plain = Arithmetic(instruction="Reply with Answer: {answer_format} only.")
    assert plain.sample_prompts(1, categories=["mul"])[0].text.endswith("Answer: <number> only.")
    assert "\n" not in Arithmetic(instruction="").sample_prompts(1)[0].text


def test_train_and_eval_never_share_a_problem_whatever_the_seed_or_range() -> None:
    train = {
        problem_of(p)
        for seed in range(3)
        for p in Arithmetic(seed=seed).sample_prompts(1000, split="train")
    }
    eval_draws = Arithmetic(seed=7).sample_prompts(1000, split="eval")
    eval_draws += Arithmetic(max_operand=20, seed=8).sample_prompts(500, split="eval")
    eval_draws += Arithmetic(seed=9).eval_prompts(300)
    held_out = {problem_of(p) for p in eval_draws}
    assert len(train) > 2000 and len(held_out) > 500
    assert not train & held_out


def test_the_split_rule_is_a_stable_hash_holding_out_about_a_tenth() -> None:
    keys = [f"+:{a},{b}" for a in range(1, 100) for b in range(a, 100)]
    share = sum(split_of(k) == "eval" for k in keys) / len(keys)
    assert 0.07 < share < 0.13
    assert [split_of(k) for k in keys[:50]] == [split_of(k) for k in keys[:50]]


def test_eval_needs_asking_and_multiple_splits_mix() -> None:
    task = Arithmetic(seed=0)
    default = {problem_of(p) for p in task.sample_prompts(300)}
    held_out = {problem_of(p) for p in task.eval_prompts(300)}
    assert not default & held_out
    mixed = [problem_of(p) for p in task.sample_prompts(400, split=("train", "eval"))]
    eval_set = {problem_of(p) for p in task.sample_prompts(3000, split="eval", generator=1)}
    eval_set |= held_out
    in_eval = sum(p in eval_set for p in mixed)
    assert 50 < in_eval < 350  # each prompt draws its split uniformly
    with pytest.raises(ValueError, match="not an Arithmetic split"):
        task.sample_prompts(1, split="test")
    with pytest.raises(ValueError, match="no split"):
        task.sample_prompts(1, split=())


def test_eval_prompts_are_fixed_stratified_and_distinct() -> None:
    task = Arithmetic()
    prompts = task.eval_prompts()
    assert prompts == Arithmetic(seed=5).eval_prompts()  # the task's seed plays no part
    assert prompts != task.eval_prompts(seed=1)
    assert len(prompts) == 300
    assert Counter(p.category for p in prompts) == {c: 60 for c in CATEGORIES}
    assert len({problem_of(p) for p in prompts}) == 300
    odd = task.eval_prompts(12)
    assert [p.category for p in odd] == ["add"] * 3 + ["sub"] * 3 + ["mul"] * 2 + [
        "multi_step"
    ] * 2 + ["countdown"] * 2
    on_train = task.eval_prompts(50, split="train")
    assert not {problem_of(p) for p in on_train} & {problem_of(p) for p in prompts}
    with pytest.raises(ValueError, match="is not a split"):
        task.eval_prompts(split="test")


def test_categories_restrict_the_draws() -> None:
    task = Arithmetic(categories=["mul", "countdown"])
    assert {p.category for p in task.sample_prompts(100)} == {"mul", "countdown"}
    assert Counter(p.category for p in task.eval_prompts(10)) == {"mul": 5, "countdown": 5}
    only_add = task.sample_prompts(20, categories=["add"])
    assert {p.category for p in only_add} == {"add"}
    for bad in (dict(categories=["div"]), dict(categories=[]), dict(max_operand=5)):
        with pytest.raises(ValueError):
            Arithmetic(**bad)


@pytest.mark.parametrize("category", ["add", "sub", "mul", "multi_step"])
def test_each_numeric_answer_matches_an_independent_computation(category: str) -> None:
    prompts = Arithmetic(seed=1).sample_prompts(300, categories=[category])
    prompts += Arithmetic(seed=1).eval_prompts(50, split="eval")
    for prompt in prompts:
        if prompt.category != category:
            continue
        assert prompt.answer == str(recompute(prompt)), prompt.text
        operands = [int(x) for x in re.findall(r"\d+", prompt.text.split("\n")[0])]
        assert all(1 <= x <= 99 for x in operands)
    if category == "sub":
        assert any(p.answer.startswith("-") for p in prompts)
    if category == "multi_step":  # one * and one + or -: precedence changes the answer
        assert all(p.text.count("*") == 1 for p in prompts if p.category == category)


def test_every_countdown_instance_is_solvable_by_its_own_expression() -> None:
    task = Arithmetic(seed=2)
    prompts = task.sample_prompts(300, categories=["countdown"]) + task.eval_prompts(50)
    for prompt in prompts:
        if prompt.category != "countdown":
            continue
        numbers, target = problem_of(prompt)[1:]
        assert sorted(prompt.numbers) == list(numbers) and prompt.target == target
        assert len(numbers) in (3, 4) and len(set(numbers)) == len(numbers)
        assert 1 <= target <= 100 and target not in numbers
        assert fraction_value(prompt.answer) == target, prompt.answer
        assert sorted(map(int, re.findall(r"\d+", prompt.answer))) == list(numbers)
        assert check_countdown(prompt.answer, prompt.numbers, target).correct


# The answer parser ---------------------------------------------------------------------------


def test_extract_answer_takes_the_last_answer_line() -> None:
    assert extract_answer("Answer: 3\nno wait\nAnswer: 5\nthanks") == "5"
    assert extract_answer("answer: 3 and then ANSWER: 7") == "7"
    assert extract_answer("**Answer:** 42.") == "42"
    assert extract_answer("Final answer: $\\boxed{12}$") == "12"
    assert extract_answer("So...\nAnswer:\n\n  1,024\n") == "1,024"
    assert extract_answer("The answer is 42") is None
    assert extract_answer("Answer:") is None
    assert extract_answer("") is None


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", "42"),
        (" +1,234 ", "1234"),
        ("1 234", "1234"),
        ("12.0", "12"),
        ("12.50", "12.5"),
        ("\u22125", "-5"),
        ("-0", "0"),
        ("007", "7"),
        ("`-63`", "-63"),
        ("42.", "42"),
        ("forty-two", None),
        ("12 apples", None),
        ("1.2.3", None),
        ("", None),
        ("3 + 4", None),
    ],
)
def test_normalize_number(text: str, number: str | None) -> None:
    assert normalize_number(text) == number


def test_check_answer_on_numeric_prompts() -> None:
    prompt = ArithmeticPrompt("What is 600 + 634?", "1234", "add")
    assert check_answer(prompt, "600+634 = 1234\nAnswer: 1,234").correct
    assert check_answer(prompt, "Answer: 1000\nAnswer: 1234.0").correct
    wrong = check_answer(prompt, "Answer: 1234\nAnswer: 1235")
    assert wrong.parsed and not wrong.correct
    assert not check_answer(prompt, "it is 1234").parsed
    malformed = check_answer(prompt, "Answer: twelve")
    assert (malformed.parsed, malformed.correct, malformed.answer) == (False, False, "twelve")


def test_parse_expression_is_exact_and_rejects_anything_but_integer_arithmetic() -> None:
    assert parse_expression("6 / (1 - 3 / 4)") == (Fraction(24), (6, 1, 3, 4))
    assert parse_expression("7 \u00d7 2 \u00f7 7") == (Fraction(2), (7, 2, 7))
    for bad in (
        "__import__('os').system('echo hi')",
        "2 ** 3",
        "8 // 2",
        "-3 + 13",
        "3.0 + 7",
        "0x10",
        "1_0",
        "5 / (2 - 2)",
        "(1 + 2",
        "",
        "1 + " * 100 + "1",
        "(" * 300 + "1" + ")" * 300,
    ):
        assert parse_expression(bad) is None, bad


def test_countdown_checker() -> None:
    numbers = (1, 3, 4, 6)
    assert check_countdown("6 / (1 - 3 / 4)", numbers, 24).correct  # a fraction on the way
    assert check_countdown("6 / (1 - 3 / 4) = 24", numbers, 24).correct
    assert check_countdown("6 * 4", numbers, 24).correct  # a subset is allowed
    reused = check_countdown("6 * 4 * 1 * 1", numbers, 24)
    assert reused.parsed and not reused.correct
    assert not check_countdown("6 * 4", numbers, 25).correct  # wrong target
    assert not check_countdown("6 / (1 - 3 / 4) = 25", numbers, 24).correct
    assert not check_countdown("8 * 3", numbers, 24).correct  # 8 is not given
    assert not check_countdown("2 ** 3 * 3", (2, 3, 3), 24).parsed
    assert not check_countdown("__import__('os')", numbers, 24).parsed
    assert not check_countdown("6 * 4 = 24 = 24", numbers, 24).parsed
    assert check_countdown("5 + 5", (5, 5, 3), 10).correct  # a repeated number, twice
    assert not check_countdown("5 + 5", (5, 2, 3), 10).correct
    prompt = ArithmeticPrompt("...", "6 * 4", "countdown", numbers, 24)
    assert check_answer(prompt, "Try 6*4.\nAnswer: (6 - 1 - 3 + 4) * 3").parsed
    assert check_answer(prompt, "Answer: 4 * 6").correct


def test_eval_metrics_one_dict_per_episode() -> None:
    prompts = [
        ArithmeticPrompt("What is 2 + 3?", "5", "add"),
        ArithmeticPrompt("What is 2 * 3?", "6", "mul"),
        ArithmeticPrompt("...", "6 * 4", "countdown", (1, 3, 4, 6), 24),
        ArithmeticPrompt("What is 2 - 3?", "-1", "sub"),
    ]
    texts = ["Answer: 5", "Answer: 7", "Answer: 3 * (6 + 1 + 1)", "I don't know"]
    metrics = Arithmetic().eval_metrics(SimpleNamespace(prompts=prompts, texts=texts))
    assert metrics == [
        {"accuracy": 1.0, "format": 1.0, "accuracy/add": 1.0},
        {"accuracy": 0.0, "format": 1.0, "accuracy/mul": 0.0},
        {"accuracy": 0.0, "format": 1.0, "accuracy/countdown": 0.0},  # 1 used twice
        {"accuracy": 0.0, "format": 0.0, "accuracy/sub": 0.0},
    ]
    with pytest.raises(ValueError, match="one text per prompt"):
        Arithmetic().eval_metrics(SimpleNamespace(prompts=prompts, texts=[]))


def test_the_registry_builds_the_task() -> None:
    task = TASKS.build(dict(type="Arithmetic", categories=["add"], max_operand=20))
    assert isinstance(task, Arithmetic) and task.headline_metric == "accuracy"
    assert type(TASKS.build(dict(type="Arithmetic"))) is Arithmetic
    assert TASKS.build(dict(type="Arithmetic")).categories == CATEGORIES
