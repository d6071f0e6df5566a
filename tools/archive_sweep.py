"""Keep a sweep's results in the repository, without its checkpoints.

    python tools/archive_sweep.py modes        # work_dirs/ablate_modes -> results/ablations/modes

Copies the tables (``results.csv``, ``results.md``, ``runs.csv``), the plots, and for every run
its ``run.json``, ``result.json``, ``metrics.jsonl`` and ``config.py``; the plots also go to
``docs/assets/ablations/<name>_*.png`` for docs/ablations.md. A finished run is one with a
``result.json``, so copying ``results/ablations/<name>`` back to ``work_dirs/ablate_<name>`` in
a new checkout lets ``unigrpo-kit ablate`` skip the finished runs and run only the rest.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

RUN_FILES = ("run.json", "result.json", "metrics.jsonl", "config.py")
SWEEP_FILES = ("results.csv", "results.md", "runs.csv", "reward_curves.png", "eval_strict.png")


def archive(name: str, root: Path = Path(".")) -> Path:
    source = root / "work_dirs" / f"ablate_{name}"
    if not source.is_dir():
        sys.exit(f"error: no sweep at {source}; run `unigrpo-kit ablate ... --name {name}` first")
    target = root / "results" / "ablations" / name
    figures = root / "docs" / "assets" / "ablations"
    figures.mkdir(parents=True, exist_ok=True)
    for file in SWEEP_FILES:
        if (source / file).is_file():
            (target).mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / file, target / file)
            if file.endswith(".png"):
                shutil.copy2(source / file, figures / f"{name}_{file}")
    for result in sorted(source.glob("*/seed*/result.json")):
        run = result.parent
        destination = target / run.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for file in RUN_FILES:
            if (run / file).is_file():
                shutil.copy2(run / file, destination / file)
    return target


if __name__ == "__main__":
    for sweep in sys.argv[1:]:
        print(f"archived {archive(sweep)}")
