"""Prompts from a file: the task of a user who brings their own prompts.

``path`` is a text file with one prompt per line (blank lines and lines starting with ``#``
skipped), or a JSON-lines file (``.jsonl``) whose objects have a ``"prompt"`` field; every other
field is metadata that rides along on the prompt for the reward (``prompt.answer``,
``prompt.tags``...). The held-out split is a fixed function of each prompt's text (a SHA-256
bucket below ``eval_fraction``), so it does not move when the file is reordered or grows; or
``eval_path`` names a second file that is the eval split whole. The task has no scorer of its
own: ``unigrpo-kit eval`` scores its eval prompts with the recipe's reward.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from unigrpo_kit.registry import TASKS
from unigrpo_kit.tasks.random_source import as_rng

SPLITS = ("train", "eval")


class FilePrompt(SimpleNamespace):
    """One prompt: ``text``, and the file's other fields as attributes."""


def read_prompts(path: Path) -> list[FilePrompt]:
    """The prompts of a ``.txt`` or ``.jsonl`` file; a one-line error naming the file and line
    for anything that is not a prompt."""
    if not path.is_file():
        raise FileNotFoundError(f"task.path {str(path)!r} is not a file of prompts")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix != ".jsonl":
            prompts.append(FilePrompt(text=line))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not a JSON object ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f'{path}:{number} needs a string "prompt" field')
        text = record.pop("prompt")
        prompts.append(FilePrompt(text=text, **record))
    if not prompts:
        raise ValueError(f"task.path {str(path)!r} holds no prompt")
    return prompts


def held_out(text: str, eval_fraction: float) -> bool:
    """Whether a prompt text falls in the eval split: its SHA-256 as a number in [0, 1)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


@TASKS.register_module()
class PromptFile:
    """Prompts from a text or JSON-lines file, with a train / eval split.

    Args:
        path: the prompt file (``.txt``: one prompt a line; ``.jsonl``: a ``"prompt"`` field).
        eval_fraction: the share of distinct prompts held out for evaluation (by hash).
        eval_path: a second file that is the eval split whole (then ``path`` is all train).
        seed: seeds the generator that ``sample_prompts`` uses when given none.
    """

    def __init__(
        self,
        path: str | None,
        eval_fraction: float = 0.1,
        eval_path: str | None = None,
        seed: int = 0,
    ) -> None:
        if not path:
            raise ValueError(
                "task.path is required: a .txt file (one prompt per line) or a .jsonl file "
                '(a "prompt" field per line), e.g. --cfg-options task.path=prompts.txt'
            )
        if not 0 <= eval_fraction < 1:
            raise ValueError(f"task.eval_fraction={eval_fraction!r} must be in [0, 1)")
        prompts = read_prompts(Path(path))
        if eval_path is not None:
            self.splits = {"train": prompts, "eval": read_prompts(Path(eval_path))}
        else:
            self.splits = {
                "train": [p for p in prompts if not held_out(p.text, eval_fraction)],
                "eval": [p for p in prompts if held_out(p.text, eval_fraction)],
            }
        if not self.splits["train"]:
            raise ValueError(
                f"task.path {path!r}: every prompt fell in the eval split; lower "
                "task.eval_fraction or give more prompts"
            )
        self.rng = random.Random(seed)

    def _split(self, name: str) -> list[FilePrompt]:
        if name not in SPLITS:
            raise ValueError(f"split {name!r} is not one of {', '.join(SPLITS)}")
        prompts = self.splits[name]
        if not prompts:
            raise ValueError(
                f"the {name} split of the prompt file is empty; raise task.eval_fraction or "
                "give task.eval_path"
            )
        return prompts

    def sample_prompts(
        self,
        n: int,
        split: str | Sequence[str] = "train",
        generator: random.Random | int | None = None,
    ) -> list[FilePrompt]:
        """``n`` prompts drawn uniformly, with replacement, from ``split`` (or several)."""
        rng = as_rng(generator, self.rng)
        names = (split,) if isinstance(split, str) else tuple(split)
        pool = [p for name in names for p in self._split(name)]
        return [rng.choice(pool) for _ in range(n)]

    @staticmethod
    def ends_episode(reflection: str) -> bool:
        """Whether a reflection ends a multi-round episode: the model said ``done`` (case and
        surrounding spaces and end punctuation aside)."""
        return reflection.strip().rstrip(".!").strip().lower() == "done"

    def eval_prompts(self, n: int = 300, seed: int = 0, split: str = "eval") -> list[FilePrompt]:
        """The first ``n`` distinct prompts of ``split`` in an order fixed by ``seed`` (all of
        them when the split has fewer)."""
        prompts = list(self._split(split))
        random.Random(seed).shuffle(prompts)
        return prompts[:n]
