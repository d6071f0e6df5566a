"""``--dry-run`` of every recipe: tiny random models of the recipe's own classes, 2 steps, a
checkpoint loaded back by registry type, an eval; nothing written where the user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from unigrpo_kit.cli import app

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted(
    path
    for folder in ("", "hf", "diffusers", "composed")
    for path in (REPO / "recipes" / folder).glob("*.py")
)
runner = CliRunner()


def test_every_runnable_recipe_is_covered():
    names = {p.relative_to(REPO / "recipes").as_posix() for p in RECIPES}
    assert {
        "unified_multiround.py",
        "hf/text_grpo.py",
        "hf/shapeworld_text.py",
        "diffusers/sd3_flowgrpo.py",
        "diffusers/flux_flowgrpo.py",
        "composed/think_then_paint.py",
        "composed/multiround_edit.py",
    } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_train_dry_run_runs_two_steps_a_checkpoint_and_an_eval(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"dry run of {recipe}: 2 steps"), line
    assert "step_000002" in line and "loaded back" in line and "eval " in line
    assert list(tmp_path.iterdir()) == []  # nothing outside a temporary folder


def test_the_hf_recipe_without_a_model_path_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", str(REPO / "recipes" / "hf" / "text_grpo.py")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.path=None"), result.output


@pytest.mark.parametrize("recipe", ["unified_multiround.py", "hf/text_grpo.py"])
def test_eval_and_sample_dry_runs(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(REPO / "recipes" / recipe)
    result = runner.invoke(app, ["eval", path, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores["checkpoint"] == "a tiny random model (dry run)"
    key = "judge/strict" if recipe.startswith("unified") else "accuracy"
    assert 0.0 <= scores[key] <= 1.0
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", path, "--dry-run", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_a_dict_override_replaces_a_none_in_the_recipe():
    """``--cfg-options model.lora={...}`` where the recipe says None (mmengine alone refuses to
    merge a dict into None); a dict over a dict still merges key by key."""
    from unigrpo_kit.recipe import load_recipe

    cfg = load_recipe(
        REPO / "recipes" / "hf" / "text_grpo.py",
        ["model.lora={'r': 8, 'lora_alpha': 16}", "rollout.text_sampler={'max_new_tokens': 7}"],
    )
    assert cfg.model.lora == {"r": 8, "lora_alpha": 16}
    assert cfg.rollout.text_sampler == {
        "type": "TextSampler",
        "temperature": 1.0,
        "max_new_tokens": 7,
    }
