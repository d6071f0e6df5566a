"""``unigrpo-kit eval`` without ``--checkpoint`` scores the run's newest intact checkpoint: a
damaged newer one is named and skipped, never silently replaced by the base model."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from unigrpo_kit import runner
from unigrpo_kit.cli import app

OPTIONS = ["evaluation.num_prompts=3", "evaluation.steps=2"]


def test_eval_skips_a_damaged_newest_checkpoint_and_says_so(small_cfg, tiny_checkpoint, tmp_path):
    cfg = small_cfg("unified_single_round", **{"schedule.steps": 2, "schedule.save_every": 1})
    work_dir = tmp_path / "run"
    runner.train(cfg, work_dir, quiet=True)
    newest = work_dir / "checkpoints" / "step_000002" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    args = ["eval", "recipes/unified_single_round.py", "--work-dir", str(work_dir), "--json"]
    args += ["--cfg-options", f"model.checkpoint={tiny_checkpoint}", *OPTIONS]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning: checkpoint step_000002 is damaged" in result.stderr
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["checkpoint"].endswith("step_000001")
