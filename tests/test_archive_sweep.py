"""tools/archive_sweep.py: a sweep's tables and plots are kept for the docs, its runs are not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("archive_sweep", REPO / "tools" / "archive_sweep.py")
archive_sweep = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(archive_sweep)


def test_archive_copies_tables_and_plots_to_the_docs_and_no_run(tmp_path: Path) -> None:
    sweep = tmp_path / "work_dirs" / "ablate_demo"
    done = sweep / "a" / "seed0"
    (done / "checkpoints" / "step_000010").mkdir(parents=True)
    (done / "checkpoints" / "step_000010" / "model.safetensors").write_bytes(b"x" * 100)
    (done / "metrics.jsonl").write_text('{"step": 1}\n')
    (done / "result.json").write_text('{"status": "done"}')
    (sweep / "results.csv").write_text("cell,strict_mean\n")
    (sweep / "runs.csv").write_text("cell,seed\n")
    (sweep / "results.md").write_text("| cell |")
    (sweep / "eval_strict.png").write_bytes(b"png")

    target = archive_sweep.archive("demo", root=tmp_path)

    assert target == tmp_path / "docs" / "assets" / "ablations"
    assert sorted(p.name for p in target.iterdir()) == [
        "demo_eval_strict.png",
        "demo_results.csv",
        "demo_runs.csv",
    ]
    assert (target / "demo_results.csv").read_text() == "cell,strict_mean\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "work_dirs"]  # no results/


def test_archive_of_a_missing_sweep_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no sweep at .*ablate_nothing"):
        archive_sweep.archive("nothing", root=tmp_path)
