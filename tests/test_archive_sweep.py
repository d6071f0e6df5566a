"""tools/archive_sweep.py: a sweep's results are kept, its checkpoints are not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("archive_sweep", REPO / "tools" / "archive_sweep.py")
archive_sweep = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(archive_sweep)


def test_archive_copies_tables_plots_and_finished_runs_only(tmp_path: Path) -> None:
    sweep = tmp_path / "work_dirs" / "ablate_demo"
    done, running = sweep / "a" / "seed0", sweep / "b" / "seed0"
    for run in (done, running):
        (run / "checkpoints" / "step_000010").mkdir(parents=True)
        (run / "checkpoints" / "step_000010" / "model.safetensors").write_bytes(b"x" * 100)
        (run / "metrics.jsonl").write_text('{"step": 1}\n')
        (run / "run.json").write_text("{}")
    (done / "result.json").write_text('{"status": "done"}')
    (sweep / "results.md").write_text("| cell |")
    (sweep / "eval_strict.png").write_bytes(b"png")

    target = archive_sweep.archive("demo", root=tmp_path)

    assert target == tmp_path / "results" / "ablations" / "demo"
    assert (target / "results.md").read_text() == "| cell |"
    assert (target / "a" / "seed0" / "result.json").read_text() == '{"status": "done"}'
    assert (target / "a" / "seed0" / "metrics.jsonl").is_file()
    assert not (target / "a" / "seed0" / "checkpoints").exists()
    assert not (target / "b").exists()  # unfinished: it resumes from work_dirs, not from here
    assert (tmp_path / "docs" / "assets" / "ablations" / "demo_eval_strict.png").is_file()


def test_archive_of_a_missing_sweep_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no sweep at .*ablate_nothing"):
        archive_sweep.archive("nothing", root=tmp_path)
