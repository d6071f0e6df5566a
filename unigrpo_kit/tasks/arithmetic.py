"""Arithmetic: verifiable text problems for real language models, generated offline from a seed.

Five categories of problem, each with one checkable answer:

* ``add``, ``sub``, ``mul``: ``a op b`` with operands in ``[1, max_operand]`` (``mul`` from 2;
  ``sub`` may go negative).
* ``multi_step``: ``a op b op c`` with one ``*`` and one ``+`` or ``-``, so the answer depends
  on operator precedence.
* ``countdown``: the Countdown game as in TinyZero (Pan et al., 2025): given 3-4 numbers and a
  target, write an expression with ``+ - * /`` and parentheses that uses each number at most
  once and equals the target. Instances are built from a random expression over the numbers
  (every intermediate result a positive integer), so each one is solvable; that expression is
  the prompt's ``answer``, but any valid expression counts.

The numeric categories are scored GSM8K-style: exact match of the final answer, the
answer-correctness signal of DeepSeekMath's RFT / Online RFT (Shao et al., 2024; its GRPO runs
used a learned reward model) and the rule-based accuracy reward of DeepSeek-R1 (2025). One
parser, :func:`check_answer`, serves the task's :meth:`Arithmetic.eval_metrics` and the rewards
in ``unigrpo_kit.rewards.answer``: it reads the last ``Answer:`` line, normalises numbers, and
checks countdown expressions through ``ast`` with exact ``Fraction`` arithmetic (never
``eval``).

Splits ``train`` and ``eval`` never share a problem: a problem's split is a stable hash
(SHA-256) of its canonical string (the operands of ``add`` and ``mul`` sorted, so ``3 + 4`` and
``4 + 3`` are one problem; countdown numbers sorted), so it is the same whatever the seed, the
order of draws or the operand range. About a tenth of the problems are held out for eval.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from unigrpo_kit.registry import TASKS
from unigrpo_kit.tasks.random_source import as_rng

CATEGORIES = ("add", "sub", "mul", "multi_step", "countdown")
SPLITS = ("train", "eval")
EVAL_PERCENT = 10  # share of problems (by hash bucket) that belong to the eval split
DEFAULT_EVAL_SIZE = 300  # 60 problems per category
DEFAULT_INSTRUCTION = (
    "Think step by step, then give the final answer on the last line as: Answer: {answer_format}"
)
ANSWER_FORMATS = {"number": "<number>", "expression": "<expression>"}
# Draws before giving up on finding a problem of a split, or a new distinct eval problem.
MAX_DRAWS = 10_000
MAX_EXPRESSION_CHARS = 200
_HASH_BUCKETS = 100


@dataclass(frozen=True)
class ArithmeticPrompt:
    """One problem: the full user message, its answer and category.

    ``text`` is the question followed by the format instruction. ``answer`` is the canonical
    integer (``"-63"``) or, for countdown, one expression reaching the target. Countdown prompts
    also carry their ``numbers`` and ``target``.
    """

    text: str
    answer: str
    category: str
    numbers: tuple[int, ...] = ()
    target: int | None = None


# Answer parsing ---------------------------------------------------------------------------

_ANSWER_RE = re.compile(r"\banswer\s*\**\s*:", re.IGNORECASE)
_BOXED_RE = re.compile(r"^\\boxed\{(.*)\}$")
_NUMBER_RE = re.compile(r"-?(\d+)(?:\.(\d+))?")
_EXPRESSION_CHARS_RE = re.compile(r"[\d\s+\-*/()]+")
_WRAPPERS = " \t*`$_"
_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u00f7": "/", "\u2217": "*"}


@dataclass(frozen=True)
class AnswerCheck:
    """The outcome of :func:`check_answer`: ``parsed`` (an answer line of the right form was
    found) and ``correct`` (it is the right answer); ``answer`` is what was read, or None."""

    parsed: bool
    correct: bool
    answer: str | None = None


def extract_answer(text: str) -> str | None:
    """The content of the LAST ``Answer:`` in ``text`` (case-insensitive; ``**Answer:**`` and
    ``Final answer:`` count), up to the end of its line, or the next non-empty line when the
    rest of the line is empty; surrounding markdown (``*``, backticks, ``$``), ``\\boxed{}``
    and a trailing period are stripped. None when there is no such content."""
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n")
    content = next((line for line in rest if line.strip(_WRAPPERS)), "")
    content = content.strip(_WRAPPERS)
    boxed = _BOXED_RE.match(content)
    if boxed:
        content = boxed.group(1).strip(_WRAPPERS)
    content = content.rstrip(".").strip(_WRAPPERS)
    return content or None


def _plain(text: str) -> str:
    for char, replacement in _UNICODE.items():
        text = text.replace(char, replacement)
    return text


def normalize_number(text: str) -> str | None:
    """The canonical form of a number, or None: commas, spaces and a leading ``+`` dropped,
    Unicode minus read as ``-``, leading zeros and a zero fractional part (``"12.0"``) dropped,
    so ``" +1,234.00"`` -> ``"1234"``, ``"-0"`` -> ``"0"``, ``"2.50"`` -> ``"2.5"``."""
    cleaned = _plain(text).strip(_WRAPPERS).rstrip(".")
    cleaned = re.sub(r"[,\s]", "", cleaned).removeprefix("+")
    match = _NUMBER_RE.fullmatch(cleaned)
    if match is None:
        return None
    whole = match.group(1).lstrip("0") or "0"
    fraction = (match.group(2) or "").rstrip("0")
    digits = f"{whole}.{fraction}" if fraction else whole
    return digits if digits == "0" or not cleaned.startswith("-") else f"-{digits}"


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise ValueError("division by zero")
            return left / right
    raise ValueError(f"disallowed syntax: {type(node).__name__}")


def parse_expression(text: str) -> tuple[Fraction, tuple[int, ...]] | None:
    """``(exact value, integer literals in order)`` of an expression made only of non-negative
    integer literals, ``+ - * /`` and parentheses (``×``/``÷`` read as ``*``/``/``); None for
    anything else (``**``, ``//``, unary minus, names, calls, floats, division by zero). Parsed
    with ``ast`` and evaluated with ``Fraction``; never ``eval``."""
    text = _plain(text).strip()
    if not text or len(text) > MAX_EXPRESSION_CHARS or not _EXPRESSION_CHARS_RE.fullmatch(text):
        return None
    used: list[int] = []
    try:
        value = _evaluate(ast.parse(text, mode="eval"), used)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return value, tuple(used)


def check_countdown(expression: str, numbers: Sequence[int], target: int) -> AnswerCheck:
    """Whether ``expression`` (optionally followed by ``= <number>``) is a valid countdown
    answer: it parses (see :func:`parse_expression`), every literal is one of ``numbers`` and
    used at most as often as it is given, its exact value is ``target``, and a stated
    right-hand side, if any, equals ``target`` too."""
    left, *right = expression.split("=")
    parsed = parse_expression(left)
    if parsed is None or len(right) > 1:
        return AnswerCheck(False, False, expression)
    rhs = normalize_number(right[0]) if right else None
    if right and rhs is None:
        return AnswerCheck(False, False, expression)
    value, used = parsed
    within = not Counter(used) - Counter(numbers)
    correct = within and value == target and (rhs is None or rhs == str(target))
    return AnswerCheck(True, correct, expression)


def check_answer(prompt: Any, text: str) -> AnswerCheck:
    """Parse ``text``'s final answer and check it against ``prompt``.

    A prompt with a ``target`` (countdown) needs a valid expression (:func:`check_countdown`);
    any other prompt needs a number equal to ``prompt.answer`` after :func:`normalize_number`.
    """
    content = extract_answer(text)
    if content is None:
        return AnswerCheck(False, False)
    target = getattr(prompt, "target", None)
    if target is not None:
        return check_countdown(content, getattr(prompt, "numbers", ()), target)
    number = normalize_number(content)
    if number is None:
        return AnswerCheck(False, False, content)
    expected = normalize_number(str(prompt.answer))
    return AnswerCheck(True, number == expected, number)


# Problems -----------------------------------------------------------------------------------


def split_of(key: str) -> str:
    """The split of the problem whose canonical string is ``key``: a SHA-256 bucket, so the
    same for every seed, process and draw order."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % _HASH_BUCKETS
    return "eval" if bucket < EVAL_PERCENT else "train"


@dataclass(frozen=True)
class _Problem:
    key: str  # canonical problem string, the split's input
    question: str
    answer: str
    answer_format: str
    numbers: tuple[int, ...] = ()
    target: int | None = None


def _binary(op: str, a: int, b: int) -> _Problem:
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    operands = sorted((a, b)) if op in "+*" else (a, b)  # a + b and b + a: one problem
    key = f"{op}:{operands[0]},{operands[1]}"
    return _Problem(key, f"What is {a} {op} {b}?", str(answer), "number")


def _multi_step(rng: random.Random, max_operand: int) -> _Problem:
    ops = ["*", rng.choice("+-")]
    rng.shuffle(ops)
    a, b, c = (rng.randint(1, max_operand) for _ in range(3))
    expression = f"{a} {ops[0]} {b} {ops[1]} {c}"
    if ops[0] == "*":  # (a * b) op c
        answer = a * b + c if ops[1] == "+" else a * b - c
    else:  # a op (b * c)
        answer = a + b * c if ops[0] == "+" else a - b * c
    return _Problem(f"multi:{expression}", f"What is {expression}?", str(answer), "number")


def _countdown(rng: random.Random, max_operand: int, max_target: int) -> _Problem | None:
    """A random expression tree over 3-4 distinct numbers whose every intermediate result is a
    positive integer; None when its value is not a usable target (outside ``[1, max_target]``
    or one of the numbers)."""
    numbers = rng.sample(range(1, max_operand + 1), rng.choice((3, 4)))
    items = [(value, str(value)) for value in numbers]
    while len(items) > 1:
        (a, ea), (b, eb) = (items.pop(rng.randrange(len(items))) for _ in range(2))
        if a < b:
            (a, ea), (b, eb) = (b, eb), (a, ea)
        ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
        op = rng.choice(ops)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        ea = ea if ea.isdigit() else f"({ea})"
        eb = eb if eb.isdigit() else f"({eb})"
        items.append((value, f"{ea} {op} {eb}"))
    target, expression = items[0]
    if not 1 <= target <= max_target or target in numbers:
        return None
    shown = ", ".join(map(str, numbers))
    question = (
        f"Using the numbers [{shown}], write an expression that equals {target}. You may use "
        "+, -, *, / and parentheses, and each number at most once."
    )
    key = f"countdown:{','.join(map(str, sorted(numbers)))}={target}"
    return _Problem(key, question, expression, "expression", tuple(numbers), target)


@TASKS.register_module()
class Arithmetic:
    """Arithmetic and Countdown problems generated from a seed, with exact-answer checking.

    Args:
        categories: which of ``add``, ``sub``, ``mul``, ``multi_step``, ``countdown`` to draw
            (all by default), each with weight 1.
        max_operand: largest operand (and largest countdown number); at least 10.
        seed: seeds the generator that ``sample_prompts`` uses when given none.
        instruction: the format instruction appended to every question; ``{answer_format}`` in
            it becomes ``<number>`` (``<expression>`` for countdown). The default asks for step
            by step reasoning and a last line ``Answer: ...``.
        countdown_max_target: largest countdown target (TinyZero's targets go up to 100).
    """

    headline_metric = "accuracy"

    def __init__(
        self,
        categories: Sequence[str] | None = None,
        max_operand: int = 99,
        seed: int = 0,
        instruction: str = DEFAULT_INSTRUCTION,
        countdown_max_target: int = 100,
    ) -> None:
        chosen = tuple(categories) if categories is not None else CATEGORIES
        unknown = [c for c in chosen if c not in CATEGORIES]
        if unknown or not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"Arithmetic categories {list(chosen)} invalid; choose from {CATEGORIES}"
            )
        if not isinstance(max_operand, int) or max_operand < 10:
            raise ValueError(f"Arithmetic max_operand must be an int >= 10, got {max_operand!r}")
        if countdown_max_target < 10:
            raise ValueError(f"countdown_max_target must be >= 10, got {countdown_max_target!r}")
        self.categories = chosen
        self.max_operand = max_operand
        self.instruction = instruction
        self.countdown_max_target = countdown_max_target
        self.rng = random.Random(seed)

    # Prompts -------------------------------------------------------------------------------

    def _draw(self, category: str, rng: random.Random) -> _Problem:
        m = self.max_operand
        if category in ("add", "sub"):
            return _binary("+" if category == "add" else "-", rng.randint(1, m), rng.randint(1, m))
        if category == "mul":
            return _binary("*", rng.randint(2, m), rng.randint(2, m))
        if category == "multi_step":
            return _multi_step(rng, m)
        for _ in range(MAX_DRAWS):  # countdown: most random trees land in range within a few
            problem = _countdown(rng, m, self.countdown_max_target)
            if problem is not None:
                return problem
        raise ValueError(f"no countdown target within {self.countdown_max_target} was drawn")

    def _prompt(
        self, category: str, split: str, rng: random.Random
    ) -> tuple[str, ArithmeticPrompt]:
        for _ in range(MAX_DRAWS):
            problem = self._draw(category, rng)
            if split_of(problem.key) == split:
                break
        else:
            raise ValueError(
                f"Arithmetic found no {split} problem of category {category!r} in {MAX_DRAWS} "
                f"draws; raise max_operand ({self.max_operand})"
            )
        answer_format = ANSWER_FORMATS[problem.answer_format]
        instruction = self.instruction.replace("{answer_format}", answer_format)
        prompt = ArithmeticPrompt(
            text=f"{problem.question}\n{instruction}" if instruction else problem.question,
            answer=problem.answer,
            category=category,
            numbers=problem.numbers,
            target=problem.target,
        )
        return problem.key, prompt

    def sample_prompts(
        self,
        n: int,
        split: str | Sequence[str] = "train",
        generator: random.Random | int | None = None,
        categories: Sequence[str] | None = None,
    ) -> list[ArithmeticPrompt]:
        """``n`` random problems of ``split`` (the train split unless asked otherwise), each
        category drawn with weight 1, restricted to ``categories`` when given. ``split`` may
        name several splits: each prompt then draws its split uniformly."""
        rng = as_rng(generator, self.rng)
        chosen = tuple(categories) if categories is not None else self.categories
        unknown = [c for c in chosen if c not in CATEGORIES]
        if unknown or not chosen:
            raise ValueError(f"categories {unknown or chosen} invalid; choose from {CATEGORIES}")
        splits = (split,) if isinstance(split, str) else tuple(split)
        if not splits:
            raise ValueError("sample_prompts: split names no split; e.g. 'train'")
        bad = [s for s in splits if s not in SPLITS]
        if bad:
            raise ValueError(f"split {bad[0]!r} is not an Arithmetic split; choose from {SPLITS}")
        picks = rng.choices(chosen, k=n)
        result = []
        for category in picks:
            chosen_split = splits[0] if len(splits) == 1 else rng.choice(splits)
            result.append(self._prompt(category, chosen_split, rng)[1])
        return result

    def eval_prompts(
        self, n: int = DEFAULT_EVAL_SIZE, seed: int = 0, split: str = "eval"
    ) -> list[ArithmeticPrompt]:
        """A fixed set of ``n`` distinct problems of ``split`` (eval by default), stratified over
        the task's categories in order (the first ``n % k`` categories get one more)."""
        if split not in SPLITS:
            choices = ", ".join(SPLITS)
            raise ValueError(f"evaluation.split {split!r} is not a split; choose from {choices}")
        rng = random.Random(seed)
        result: list[ArithmeticPrompt] = []
        k = len(self.categories)
        for index, category in enumerate(self.categories):
            quota = n // k + (index < n % k)
            seen: set[str] = set()
            for _ in range(quota):
                for _ in range(MAX_DRAWS):
                    key, prompt = self._prompt(category, split, rng)
                    if key not in seen:
                        break
                else:
                    raise ValueError(
                        f"Arithmetic found only {len(seen)} distinct {split} problems of "
                        f"category {category!r}; ask for fewer or raise max_operand"
                    )
                seen.add(key)
                result.append(prompt)
        return result

    # Scoring --------------------------------------------------------------------------------

    @staticmethod
    def check(prompt: ArithmeticPrompt, text: str) -> AnswerCheck:
        """Parse and check one response (see :func:`check_answer`)."""
        return check_answer(prompt, text)

    def eval_metrics(self, batch: Any) -> list[dict[str, float]]:
        """One dict per episode of ``batch`` (its ``prompts`` and ``texts``): ``accuracy``
        (the final answer is right), ``format`` (an answer line parsed) and
        ``accuracy/<category>``; averaged per key over the episodes that have it."""
        if len(batch.texts) != len(batch.prompts):
            raise ValueError(
                f"Arithmetic.eval_metrics needs one text per prompt ({len(batch.prompts)}); "
                f"got {len(batch.texts)} texts"
            )
        metrics = []
        for prompt, text in zip(batch.prompts, batch.texts, strict=True):
            result = check_answer(prompt, text)
            metrics.append(
                {
                    "accuracy": float(result.correct),
                    "format": float(result.parsed),
                    f"accuracy/{prompt.category}": float(result.correct),
                }
            )
        return metrics
