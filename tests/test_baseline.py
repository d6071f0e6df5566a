"""baseline.py and ``eval``'s comparison with the base model: paired differences over the same
prompts with their standard error; on by default for a checkpoint, off with --no-baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from cli_helpers import TINY_EVAL, options
from typer.testing import CliRunner

from unigrpo_kit.baseline import Scored, compare, comparison_table
from unigrpo_kit.cli import app
from unigrpo_kit.evaluation import evaluate_episodes, recording_episodes

REPO = Path(__file__).resolve().parent.parent
MULTIROUND = str(REPO / "recipes" / "unified_multiround.py")
runner = CliRunner()


def test_paired_difference_and_its_standard_error():
    ours = Scored({"s": 0.75, "q": 0.5}, [{"s": 1, "q": 0.5}, {"s": 1}, {"s": 0}, {"s": 1}])
    base = Scored({"s": 0.25, "q": 0.1}, [{"s": 0, "q": 0.1}, {"s": 1}, {"s": 0}, {"s": 0}])
    diff = compare(ours, base)
    deltas = [1, 0, 0, 1]
    se = math.sqrt(sum((d - 0.5) ** 2 for d in deltas) / 3 / 4)
    assert diff.difference["s"] == 0.5 and diff.stderr["s"] == pytest.approx(se)
    assert diff.pairs == {"s": 4, "q": 1}
    assert diff.stderr["q"] is None and diff.difference["q"] == pytest.approx(0.4)


def test_identical_policies_differ_by_zero_with_zero_error():
    rows = [{"s": float(i % 2)} for i in range(6)]
    diff = compare(Scored({"s": 0.5}, rows), Scored({"s": 0.5}, rows))
    assert diff.difference == {"s": 0.0} and diff.stderr == {"s": 0.0}


def test_recording_keeps_the_rows_the_means_average():
    class Engine:
        def rollout(self, prompts, group_size, generator):
            return prompts

    with recording_episodes() as rows:
        means = evaluate_episodes(Engine(), [1, 2, 3, 4], lambda b: [{"x": p} for p in b])
    assert rows == [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}, {"x": 4.0}]
    assert means == {"x": 2.5}
    evaluate_episodes(Engine(), [5], lambda b: [{"x": p} for p in b])
    assert len(rows) == 4  # nothing is recorded outside the block


def test_table_fits_80_columns():
    from rich.console import Console

    scores = {"strict/attribute_binding": 0.123456, "judge/strict": 1.0}
    ours = Scored(scores, [scores, scores])
    table = comparison_table("eval of x\nagainst tiny-base", ours, ours, compare(ours, ours))
    console = Console(width=200, record=True)
    console.print(table)
    assert max(len(line) for line in console.export_text().splitlines()) <= 80


def run_eval(*args: str) -> dict:
    result = runner.invoke(app, ["eval", MULTIROUND, "--json", *args, *options(*TINY_EVAL)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_eval_of_a_checkpoint_compares_with_the_recipes_model(tiny_checkpoint):
    report = run_eval("--checkpoint", str(tiny_checkpoint))
    base = report["baseline"]
    assert base["checkpoint"] == "tiny-base"
    for key in ("judge/strict", "judge/partial", "quality"):
        assert base["difference"][key] == pytest.approx(report[key] - base["scores"][key], abs=2e-4)
        assert base["stderr"][key] >= 0 and base["pairs"][key] == 7


def test_no_baseline_and_an_explicit_one(tiny_checkpoint):
    alone = run_eval("--checkpoint", str(tiny_checkpoint), "--no-baseline")
    assert "baseline" not in alone
    itself = run_eval("--checkpoint", str(tiny_checkpoint), "--baseline", str(tiny_checkpoint))
    assert set(itself["baseline"]["difference"].values()) == {0.0}
    assert itself["judge/strict"] == alone["judge/strict"]


def test_the_recipes_own_model_has_no_baseline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no work_dirs/: the recipe's model is what is evaluated
    assert "baseline" not in run_eval()


def test_a_missing_baseline_is_a_one_line_error(tiny_checkpoint, tmp_path):
    args = ["eval", MULTIROUND, "--checkpoint", str(tiny_checkpoint)]
    args += ["--baseline", str(tmp_path / "nowhere"), *options(*TINY_EVAL)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "nowhere" in result.output
    assert len(result.output.strip().splitlines()) == 1
