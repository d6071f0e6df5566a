"""Switching a registry-built block from the command line: ``BLOCK.type=Name`` keeps the old
keys the new class accepts, drops the rest, takes the new class's arguments, and a typo still
fails in one line naming the closest argument."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from unigrpo_kit.cli import app
from unigrpo_kit.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "recipes" / "image_flowgrpo.py"


def test_a_type_switch_rebuilds_the_block_from_the_new_class():
    cfg = load_recipe(
        IMAGE,
        ["reward.type=JpegCompressibility", "reward.quality=80", "rollout.window.type=FullWindow"],
    )
    assert cfg.reward == {"type": "JpegCompressibility", "quality": 80}  # mode= dropped
    assert cfg.rollout.window == {"type": "FullWindow"}  # window_size, window_range dropped
    kept = load_recipe(IMAGE, ["rollout.image_sampler.type=CPS"])
    assert kept.rollout.image_sampler == {"type": "CPS", "noise_level": 0.7}  # CPS takes it


def test_an_argument_the_recipe_lacks_is_accepted_when_the_class_takes_it():
    cfg = load_recipe(IMAGE, ["algorithm.advantage.eps=1e-4"])
    assert cfg.algorithm.advantage.eps == 1e-4


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["reward.type=JpegCompressibility", "reward.qualty=80"],
            "JpegCompressibility takes no argument 'qualty'; its arguments: quality",
        ),
        (["reward.modee=partial"], "ShapeWorldJudge takes no argument 'modee'"),
        (["reward.type=NoSuchReward"], "reward.type='NoSuchReward' is not a registered"),
        (["rollout.nope=1"], "key 'rollout.nope' is not in the recipe"),
    ],
)
def test_a_typo_still_fails_in_one_line(options, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(IMAGE, options)


def test_the_cli_takes_a_switch_in_cfg_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        ["train", str(IMAGE), "--dry-run", "--cfg-options", "reward.type=Brightness",
         "reward.sign=-1.0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dry run of" in result.output
