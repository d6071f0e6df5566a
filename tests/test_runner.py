"""Runs through ``unigrpo_kit.runner.train``: a two-step smoke run of every recipe, what a run
writes, which expert each mode trains, exact resume, and never overwriting a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from PIL import Image
from safetensors.torch import load_file

from unigrpo_kit import runner
from unigrpo_kit.models.checkpoint import load_model

RECIPES = ("text_grpo", "image_flowgrpo", "unified_single_round", "unified_multiround")
REQUIRED_METRICS = (
    "step",
    "reward/mean",
    "reward/std",
    "loss/text",
    "loss/image",
    "ratio/self_check_max_dev",
    "time/step_s",
)


# A reward that varies between the samples of a group even for a random model, so that the
# advantages, and so the updates, are not all zero (the strict judge scores a random model 0).
# (A function: merging pops ``_delete_`` from the dict it is given.)
def varying_reward() -> dict:
    return {"reward": dict(type="JpegCompressibility", _delete_=True)}


def read_metrics(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]


def without_time(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


def final_weights(work_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(runner.latest_checkpoint(work_dir) / "model.safetensors"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- smoke runs
@pytest.mark.parametrize("recipe", RECIPES)
def test_two_step_smoke_run_writes_every_output(recipe, small_cfg, tiny_checkpoint, tmp_path):
    cfg = small_cfg(recipe)
    work_dir = tmp_path / recipe
    trainer = runner.train(cfg, work_dir, quiet=True)
    assert trainer.step == 2

    lines = read_metrics(work_dir)
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        missing = [k for k in REQUIRED_METRICS if k not in line]
        assert not missing, f"metrics.jsonl lacks {missing}"
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in line.values())
        assert line["ratio/self_check_max_dev"] < 1e-4
        assert line["time/step_s"] > 0

    resolved = Config.fromfile(str(work_dir / "config.py"))
    assert resolved.rollout.group_size == 2
    assert resolved.schedule.steps == 2
    assert resolved.model.checkpoint == str(tiny_checkpoint)

    samples = sorted((work_dir / "samples").glob("*.png"))
    assert samples
    for png in samples:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 0 and image.height > 0

    assert any(p.name.startswith("events.out.tfevents") for p in (work_dir / "tb").iterdir())

    checkpoints = work_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step_000002"
    last = runner.latest_checkpoint(work_dir)
    assert last == checkpoints / "step_000002"
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.safetensors",
        "trainer_state.json",
        "checksums.json",
    ):
        assert (last / name).is_file(), name
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # no temp leftovers
    model, _ = load_model(last)
    for key, value in model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key]), key


def _changed_by_expert(trainer, initial: dict[str, torch.Tensor], work_dir: Path):
    """{expert: [names of parameters whose saved weights differ from the initial ones]}."""
    final = final_weights(work_dir)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    return {
        expert: [
            names[id(p)]
            for p in params
            if not torch.equal(final[names[id(p)]], initial[names[id(p)]])
        ]
        for expert, params in trainer.model.expert_parameters().items()
    }


@pytest.mark.parametrize(
    "recipe, trained, frozen",
    [("text_grpo", "text", "image"), ("image_flowgrpo", "image", "text")],
)
def test_single_modality_recipes_train_only_their_expert(
    recipe, trained, frozen, small_cfg, tiny_checkpoint, tmp_path
):
    initial = load_file(str(tiny_checkpoint / "model.safetensors"))
    work_dir = tmp_path / recipe
    trainer = runner.train(small_cfg(recipe, **varying_reward()), work_dir, quiet=True)
    assert any(line["reward/std"] > 0 for line in read_metrics(work_dir))
    changed = _changed_by_expert(trainer, initial, work_dir)
    assert changed[trained], f"{recipe} did not train the {trained} expert"
    assert changed[frozen] == [], f"{recipe} changed {frozen} parameters {changed[frozen][:3]}"


def test_unified_recipe_trains_both_experts(small_cfg, tiny_checkpoint, tmp_path):
    initial = load_file(str(tiny_checkpoint / "model.safetensors"))
    cfg = small_cfg("unified_single_round", **varying_reward())
    trainer = runner.train(cfg, tmp_path / "run", quiet=True)
    changed = _changed_by_expert(trainer, initial, tmp_path / "run")
    assert changed["text"] and changed["image"]


# ----------------------------------------------------------------------------- resume
@pytest.fixture
def resume_cfg(small_cfg):
    def make(steps: int):
        return small_cfg("unified_multiround", **{"schedule.steps": steps, **varying_reward()})

    return make


@pytest.fixture
def straight_run(resume_cfg, tmp_path):
    work_dir = tmp_path / "straight"
    runner.train(resume_cfg(3), work_dir, quiet=True)
    lines = read_metrics(work_dir)
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert lines[0]["reward/std"] > 0  # the updates are not trivially zero
    return without_time(lines), final_weights(work_dir)


def assert_same_run(work_dir: Path, straight) -> None:
    lines, weights = straight
    assert without_time(read_metrics(work_dir)) == lines
    final = final_weights(work_dir)
    assert final.keys() == weights.keys()
    for key in weights:
        assert torch.equal(final[key], weights[key]), key


def test_one_step_then_resume_to_three_is_identical(resume_cfg, straight_run, tmp_path):
    work_dir = tmp_path / "resumed"
    runner.train(resume_cfg(1), work_dir, quiet=True)
    assert len(read_metrics(work_dir)) == 1
    trainer = runner.train(resume_cfg(3), work_dir, resume=True, quiet=True)
    assert trainer.step == 3
    assert_same_run(work_dir, straight_run)


def test_a_killed_run_resumes_to_identical_metrics(resume_cfg, straight_run, tmp_path, monkeypatch):
    work_dir = tmp_path / "killed"
    original = runner.UniGRPOTrainer.train_step

    def killed_after_one_step(self):
        if self.step == 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(runner.UniGRPOTrainer, "train_step", killed_after_one_step)
    with pytest.raises(KeyboardInterrupt):
        runner.train(resume_cfg(3), work_dir, quiet=True)
    monkeypatch.undo()
    assert len(read_metrics(work_dir)) == 1
    runner.train(resume_cfg(3), work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight_run)


def test_a_kill_during_a_save_keeps_the_previous_checkpoint(
    resume_cfg, straight_run, tmp_path, monkeypatch
):
    work_dir = tmp_path / "killed-saving"
    from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy

    original = TinyUnifiedPolicy.save
    saves = []

    def dies_at_step_two(policy, folder, extra=None):
        original(policy, folder, extra)
        saves.append(folder)
        if len(saves) == 2:
            raise KeyboardInterrupt  # half-way through writing step 2's checkpoint

    monkeypatch.setattr(TinyUnifiedPolicy, "save", dies_at_step_two)
    with pytest.raises(KeyboardInterrupt):
        runner.train(resume_cfg(3), work_dir, quiet=True)
    monkeypatch.undo()
    checkpoints = work_dir / "checkpoints"
    assert runner.latest_checkpoint(work_dir) == checkpoints / "step_000001"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_000001"]
    load_model(checkpoints / "step_000001")  # intact
    runner.train(resume_cfg(3), work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight_run)


def test_training_again_without_resume_refuses_and_changes_nothing(small_cfg, tmp_path):
    work_dir = tmp_path / "run"
    runner.train(small_cfg("image_flowgrpo"), work_dir, quiet=True)
    before = snapshot(work_dir)
    with pytest.raises(FileExistsError, match="--resume"):
        runner.train(small_cfg("image_flowgrpo"), work_dir, quiet=True)
    assert snapshot(work_dir) == before


# ----------------------------------------------------------------------------- known bugs
def test_text_only_recipe_with_a_text_reward_runs(small_cfg, tmp_path):
    """Issue 4: text-only mode may score the reasoning itself (no images are painted)."""
    cfg = small_cfg("text_grpo", reward=dict(type="ReasoningReward", _delete_=True))
    runner.train(cfg, tmp_path / "run", quiet=True)
    lines = read_metrics(tmp_path / "run")
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["rounds/mean"] == 0 for line in lines)


def test_model_checkpoint_may_name_a_run_work_dir(small_cfg, tmp_path):
    """recipes/_base_/model.py: model.checkpoint is "the shipped TinyUnified base model (or a
    checkpoint folder / run work dir)"; a work dir means its latest checkpoint."""
    first = tmp_path / "first"
    runner.train(small_cfg("image_flowgrpo", **varying_reward()), first, quiet=True)
    trainer = runner.build_trainer(
        small_cfg("unified_single_round", **{"model.checkpoint": str(first)})
    )
    weights = final_weights(first)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_save_every_zero_saves_only_the_final_checkpoint(small_cfg, tmp_path):
    """schedule.sample_every=0 turns periodic sample grids off; save_every=0 must do the same
    for periodic checkpoints (the final one is still written), not divide by zero."""
    cfg = small_cfg("image_flowgrpo", **{"schedule.save_every": 0, "schedule.sample_every": 0})
    runner.train(cfg, tmp_path / "run", quiet=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_000002"]
