"""tools/trainable_prompts.py: success rates are counted per prompt, and the report is written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from unigrpo_kit.models.checkpoint import load_policy
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.registry import TASKS

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "trainable_prompts.py"
SPEC = importlib.util.spec_from_file_location("trainable_prompts", TOOL)
trainable_prompts = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(trainable_prompts)


def test_rates_are_counted_per_prompt_over_its_own_samples():
    cfg = load_recipe(str(REPO / "recipes" / "unified_single_round.py"))
    task = TASKS.build(cfg.task)
    prompts = trainable_prompts.distinct_prompts(task, "eval", 3, seed=0)["counting"]
    assert len({p.text for p in prompts}) == len(prompts) == 3
    target = prompts[1].text

    def reward(*, prompts, images, texts):  # succeeds exactly on the target prompt's episodes
        return SimpleNamespace(scores=torch.tensor([float(p.text == target) for p in prompts]))

    rates, greedy = trainable_prompts.success_rates(
        cfg, load_policy("tiny-base"), task, reward, prompts, 3, 0, 1.0
    )
    assert rates.tolist() == [0.0, 1.0, 0.0]
    assert [ok for _, ok in greedy] == [False, True, False]


def test_the_command_writes_one_row_per_category(tmp_path):
    out = tmp_path / "report.json"
    recipe = REPO / "recipes" / "unified_single_round.py"
    cmd = [sys.executable, str(TOOL), str(recipe), "--splits", "eval", "--prompts", "1",
           "--samples", "2", "--threads", "1", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    report = json.loads(out.read_text())
    assert report["group_size"] == 8 and set(report["eval"]) == set(
        TASKS.build(load_recipe(str(recipe)).task).categories
    )
    for row in report["eval"].values():
        assert 0.0 <= row["no_success"] + row["all_succeed"] <= 1.0
        assert 0.0 <= row["trainable_group"] <= 1.0
    # the base model draws every single-object prompt of the eval phrasings right (its greedy
    # eval score there is 1.0)
    assert report["eval"]["single_object"]["greedy_success"] == 1.0
