"""tools/pretrain.py: exact resume, and further pretraining from a checkpoint (``--init``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("pretrain_tool", REPO / "tools" / "pretrain.py")
pretrain = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pretrain)

TINY = [
    "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--patch-size", "8",
    "--batch-size", "4", "--eval-every", "1000", "--eval-prompts", "7", "--threads", "1",
    "--warmup", "2", "--edit-every", "2",
]  # fmt: skip


def _state(out: Path) -> dict:
    return torch.load(out / "last" / "state.pt", weights_only=False)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    pretrain.main([*TINY, "--out", str(tmp_path / "straight"), "--steps", "4"])
    pretrain.main([*TINY, "--out", str(tmp_path / "resumed"), "--steps", "2"])
    pretrain.main([*TINY, "--out", str(tmp_path / "resumed"), "--steps", "4"])
    straight, resumed = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    assert straight["step"] == resumed["step"] == 4
    for name, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0)
    curve = [json.loads(line) for line in (tmp_path / "straight" / "curve.jsonl").open()]
    assert [row["step"] for row in curve] == [4]


def test_init_starts_from_the_checkpoint_at_a_constant_rate(tmp_path: Path) -> None:
    pretrain.main([*TINY, "--out", str(tmp_path / "base"), "--steps", "2"])
    base = _state(tmp_path / "base")["ema"]
    out = tmp_path / "further"
    args = ["--init", str(tmp_path / "base" / "ema"), "--constant-lr", "--lr", "1e-4"]
    pretrain.main([*TINY, *args, "--warmup", "0", "--out", str(out), "--steps", "3"])
    state = _state(out)
    assert state["step"] == 3
    assert all(group["lr"] == pytest.approx(1e-4) for group in state["optimizer"]["param_groups"])
    # The weights moved from the checkpoint's, not from a fresh initialisation: an Adam step at
    # 1e-4 moves a weight by about 1e-4 (a little more early on, as the second moment is young),
    # while a fresh initialisation differs by ~0.02.
    moved = max((state["model"][k] - v).abs().max().item() for k, v in base.items())
    assert 0 < moved <= 1e-3


def test_minutes_stops_training_early(tmp_path: Path) -> None:
    out = tmp_path / "short"
    pretrain.main([*TINY, "--out", str(out), "--steps", "50", "--minutes", "1e-6"])
    assert _state(out)["step"] == 1
