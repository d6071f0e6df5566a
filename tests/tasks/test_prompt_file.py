"""PromptFile: prompts from a user's file, a split fixed by each prompt's text, metadata for the
reward, one-line errors; a recipe on it is scored by its own reward."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from unigrpo_kit.registry import TASKS
from unigrpo_kit.tasks.prompt_file import PromptFile

TEXTS = [f"a photo of {n} cats on a {c} sofa" for n in range(40) for c in ("red", "blue")]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def expected_eval(texts, fraction):
    """The held-out texts by an independent computation of the documented rule."""
    bucket = lambda t: int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big") / 2**64  # noqa: E731
    return {t for t in texts if bucket(t) < fraction}


def test_lines_split_by_hash_and_the_split_ignores_file_order(tmp_path):
    task = TASKS.build(dict(type="PromptFile", path=str(write(tmp_path / "p.txt", TEXTS))))
    held = expected_eval(TEXTS, 0.1)
    assert 0 < len(held) < len(TEXTS)
    assert {p.text for p in task.splits["eval"]} == held
    assert {p.text for p in task.splits["train"]} == set(TEXTS) - held
    shuffled = TEXTS[::-1] + ["# a comment", ""]
    other = PromptFile(str(write(tmp_path / "q.txt", shuffled)))
    assert {p.text for p in other.splits["eval"]} == held
    drawn = task.sample_prompts(200, generator=random.Random(0))
    assert len(drawn) == 200 and not {p.text for p in drawn} & held
    again = task.sample_prompts(200, generator=random.Random(0))
    assert [p.text for p in drawn] == [p.text for p in again]
    evals = task.eval_prompts(5, seed=1)
    assert len({p.text for p in evals}) == len(evals) == min(5, len(held))
    assert [p.text for p in task.eval_prompts(5, seed=1)] == [p.text for p in evals]


def test_jsonl_metadata_rides_along_and_an_eval_file_is_the_eval_split(tmp_path):
    rows = [json.dumps({"prompt": f"what is {i} + 1?", "answer": str(i + 1)}) for i in range(8)]
    train = write(tmp_path / "train.jsonl", rows)
    evals = write(
        tmp_path / "eval.jsonl", [json.dumps({"prompt": "what is 9 + 1?", "answer": "10"})]
    )
    task = PromptFile(str(train), eval_path=str(evals))
    assert len(task.splits["train"]) == 8
    (prompt,) = task.eval_prompts(10)
    assert (prompt.text, prompt.answer) == ("what is 9 + 1?", "10")
    # the metadata is what a reward reads: ExactAnswer scores these prompts
    from unigrpo_kit.rewards.answer import ExactAnswer

    scores = ExactAnswer()(prompts=[prompt, prompt], texts=["Answer: 10", "Answer: 11"]).scores
    assert scores.tolist() == [1.0, 0.0]


def test_bad_files_fail_in_one_line_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.path"):
        PromptFile(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="holds no prompt"):
        PromptFile(str(write(tmp_path / "empty.txt", ["", "# only a comment"])))
    bad = write(tmp_path / "bad.jsonl", ['{"prompt": "ok"}', '{"text": "no prompt field"}'])
    with pytest.raises(ValueError, match=r"bad.jsonl:2 needs a string \"prompt\" field"):
        PromptFile(str(bad))
    with pytest.raises(ValueError, match="eval split of the prompt file is empty"):
        PromptFile(
            str(write(tmp_path / "few.txt", ["one prompt"])), eval_fraction=0.0
        ).eval_prompts()


def test_a_recipe_on_a_prompt_file_is_scored_by_its_reward(tmp_path, tiny_checkpoint):
    """The image-only recipe on the user's prompts: eval reports the reward (Brightness) of
    the held-out prompts' greedy episodes, with the reward's own metrics."""
    from unigrpo_kit.evaluation import evaluate_recipe
    from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy
    from unigrpo_kit.recipe import load_recipe

    words = ["a red circle", "a blue square", "a green triangle", "two red circles"]
    prompts = write(tmp_path / "prompts.txt", [f"{w} {i}" for w in words for i in range(10)])
    cfg = load_recipe(
        "recipes/image_flowgrpo.py",
        [f"model.checkpoint={tiny_checkpoint}", "evaluation.num_prompts=3", "evaluation.steps=2"],
    )
    cfg.task = dict(type="PromptFile", path=str(prompts), eval_fraction=0.3)
    cfg.reward = dict(type="Brightness")
    scores = evaluate_recipe(cfg, TinyUnifiedPolicy(checkpoint=str(tiny_checkpoint)))
    assert set(scores) >= {"reward/mean"}
    assert 0.0 <= scores["reward/mean"] <= 1.0
