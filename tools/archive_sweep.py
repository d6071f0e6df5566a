"""Keep a finished sweep's tables and plots for docs/ablations.md; its runs stay in work_dirs/.

    python tools/archive_sweep.py modes   # work_dirs/ablate_modes -> docs/assets/ablations/modes_*

Copies ``results.csv`` (mean and std per cell), ``runs.csv`` (the numbers of every run) and the
two plots to ``docs/assets/ablations/<name>_<file>``, where docs/ablations.md cites them. The
runs themselves (checkpoints, metrics, configs, result files) are outputs of
``unigrpo-kit ablate`` under ``work_dirs/ablate_<name>/`` and are not kept in the repository; a
sweep resumes from that folder.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

SWEEP_FILES = ("results.csv", "runs.csv", "reward_curves.png", "eval_strict.png")


def archive(name: str, root: Path = Path(".")) -> Path:
    source = root / "work_dirs" / f"ablate_{name}"
    if not source.is_dir():
        sys.exit(f"error: no sweep at {source}; run `unigrpo-kit ablate ... --name {name}` first")
    target = root / "docs" / "assets" / "ablations"
    target.mkdir(parents=True, exist_ok=True)
    for file in SWEEP_FILES:
        if (source / file).is_file():
            shutil.copy2(source / file, target / f"{name}_{file}")
    return target


if __name__ == "__main__":
    for sweep in sys.argv[1:]:
        print(f"archived {sweep} in {archive(sweep)}")
