"""``unigrpo-kit train / eval / sample`` through typer's CliRunner on the tiny model: bad input
exits 2 with one ``error:`` line and no traceback; eval --json and sample produce their files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import TINY_EVAL, TINY_RUN, assert_user_error, options
from PIL import Image
from typer.testing import CliRunner

from unigrpo_kit.cli import app
from unigrpo_kit.tasks.shapeworld import CATEGORIES

REPO = Path(__file__).resolve().parent.parent
MULTIROUND = str(REPO / "recipes" / "unified_multiround.py")
runner = CliRunner()

TINY = [*TINY_RUN, "schedule.steps=2", *TINY_EVAL]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run every command from a scratch folder so default work_dirs/ land there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def mismatched_checkpoint(tmp_path_factory, make_tiny_model) -> Path:
    """A checkpoint whose config.json says d_model 32 while its weights have d_model 16."""
    from unigrpo_kit.models.checkpoint import save_model

    model, tokenizer = make_tiny_model(d_model=16)
    folder = tmp_path_factory.mktemp("bad") / "mismatched"
    save_model(model, tokenizer, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["d_model"] = 32
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("command", ["train", "eval"])
def test_missing_recipe_file(command, tmp_path):
    missing = str(tmp_path / "no_such_recipe.py")
    result = runner.invoke(app, [command, missing])
    assert_user_error(result, "no_such_recipe.py")


def test_unknown_component_names_the_closest_one(tiny_checkpoint, tmp_path):
    args = ["train", MULTIROUND, "--work-dir", str(tmp_path / "run"), "--quiet"]
    args += options(*TINY, f"model.checkpoint={tiny_checkpoint}")
    args += options("rollout.image_sampler.type=FlowSDEE")
    line = assert_user_error(runner.invoke(app, args), "FlowSDEE", "FlowSDE")
    assert "sampler" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_key_that_does_not_exist_names_the_closest_key(command, tiny_checkpoint):
    args = [command, MULTIROUND, *options(f"model.checkpoint={tiny_checkpoint}")]
    args += options("rollout.grop_size=3")
    assert_user_error(runner.invoke(app, args), "rollout.grop_size", "rollout.group_size")


def test_eval_with_a_checkpoint_that_does_not_match_the_model(mismatched_checkpoint):
    args = ["eval", MULTIROUND, "--checkpoint", str(mismatched_checkpoint), "--json"]
    args += options(*TINY)
    assert_user_error(runner.invoke(app, args), "does not match")


def test_train_with_a_checkpoint_that_does_not_match_the_model(mismatched_checkpoint, tmp_path):
    args = ["train", MULTIROUND, "--work-dir", str(tmp_path / "run"), "--quiet"]
    args += options(*TINY, f"model.checkpoint={mismatched_checkpoint}")
    assert_user_error(runner.invoke(app, args), "does not match")


def test_eval_with_a_checkpoint_whose_config_the_model_does_not_know(tiny_checkpoint, tmp_path):
    """A config.json with a field TinyUnifiedConfig lacks (another model, another version) is a
    checkpoint that does not match the model: one error line, exit 2, not a TypeError."""
    folder = tmp_path / "other-model"
    shutil.copytree(tiny_checkpoint, folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["n_experts"] = 2
    (folder / "config.json").write_text(json.dumps(meta))
    args = ["eval", MULTIROUND, "--checkpoint", str(folder), *options(*TINY)]
    assert_user_error(runner.invoke(app, args), "n_experts")


def test_eval_with_a_checkpoint_that_does_not_exist(tmp_path):
    args = ["eval", MULTIROUND, "--checkpoint", str(tmp_path / "nowhere"), *options(*TINY)]
    assert_user_error(runner.invoke(app, args), "nowhere")


def test_train_twice_in_one_work_dir_refuses_the_second(tiny_checkpoint, tmp_path):
    args = ["train", MULTIROUND, "--work-dir", str(tmp_path / "run"), "--quiet"]
    args += options(*TINY, "schedule.steps=1", f"model.checkpoint={tiny_checkpoint}")
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert_user_error(runner.invoke(app, args), "--resume")


# ----------------------------------------------------------------------------- eval, sample
def test_eval_json_prints_scores_as_the_last_line(tiny_checkpoint):
    args = ["eval", MULTIROUND, "--checkpoint", str(tiny_checkpoint), "--json"]
    args += ["--num-prompts", "7", *options(*TINY)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("judge/strict", "judge/partial", "quality"):
        assert 0 <= scores[key] <= 1, key
    # 7 prompts stratified over the 7 categories: one each.
    assert len(CATEGORIES) == 7
    for category in CATEGORIES:
        assert 0 <= scores[f"strict/{category}"] <= 1, category


def test_sample_writes_a_png(tiny_checkpoint, tmp_path):
    out = tmp_path / "x.png"
    # mmengine style: several key=value words after one --cfg-options.
    args = ["sample", MULTIROUND, "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    args += ["--prompt", "a red circle", "--cfg-options", "threads=1", "evaluation.steps=4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 0 and image.height > 0
