"""PNG plots of runs, drawn from their ``metrics.jsonl`` alone (no TensorBoard, no code).

:func:`plot_run` writes a run's ``plots/overview.png`` (a panel per group of :data:`PANELS`)
and ``plots/reward.png`` (``train`` calls it at every sample step and at the end);
:func:`plot_runs` overlays several runs in one PNG (``unigrpo-kit plot``), with runs that
differ only in their seed drawn as one curve: the mean over the seeds and a min-max band, as
``ablate``'s ``reward_curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

PLOTS_DIR = "plots"
# Keys the trainer logs about itself; every other key of a step is a component of the reward
# (the judge's strict / partial score, quality, a composite's parts).
TRAINER_PREFIXES = (
    "step",
    "reward/",
    "loss/",
    "text/",
    "image/",
    "reg/",
    "grad_norm",
    "time/",
    "ratio/",
    "rounds/",
    "episodes/",
    "guard/",
)


@dataclass(frozen=True)
class Panel:
    """One plot: its file name, title, y label, and which keys of a step it draws."""

    name: str
    title: str
    ylabel: str
    keys: tuple[str, ...] = ()  # exact keys
    suffix: str | None = None  # ... or every key ending in it (text/clip_frac, image/clip_frac)
    prefix: str | None = None  # ... or every key starting with it (reg/VelocityMSE)
    components: bool = False  # ... or every reward component (keys not in TRAINER_PREFIXES)
    log_y: bool = False

    def select(self, keys: list[str]) -> list[str]:
        """The keys of ``keys`` that this panel draws, in their order."""
        if self.components:
            return [k for k in keys if not k.startswith(TRAINER_PREFIXES)]
        return [
            k
            for k in keys
            if k in self.keys
            or (self.suffix is not None and k.endswith(self.suffix))
            or (self.prefix is not None and k.startswith(self.prefix))
        ]


PANELS = (
    Panel("reward", "reward", "reward/mean (band: ± reward/std)", keys=("reward/mean",)),
    Panel("reward_components", "reward components", "score", components=True),
    Panel("losses", "losses", "loss", keys=("loss/text", "loss/image")),
    Panel("regularizers", "regularizers", "penalty", prefix="reg/", log_y=True),
    Panel("kl", "approximate KL to the rollout policy", "approx KL", suffix="/approx_kl"),
    Panel("clip_frac", "clipped fraction", "fraction clipped", suffix="/clip_frac"),
    Panel("grad_norm", "gradient norm (before clipping)", "grad norm", keys=("grad_norm",)),
    Panel("time", "time per step", "seconds", keys=("time/step_s", "time/rollout_s")),
)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (or of the run folder holding one), in file order;
    lines that are not complete JSON records (a torn last line) are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a run (no metrics.jsonl)")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of ``key`` over the records that hold a finite number for it."""
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(record["step"])
            values.append(float(value))
    return steps, values


def smooth(values: list[float], weight: float = 0.6) -> list[float]:
    """TensorBoard's debiased exponential moving average (``weight`` 0 = no smoothing)."""
    out, last, norm = [], 0.0, 0.0
    for value in values:
        last = weight * last + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    """Write the figure as a PNG atomically (no timestamp in its metadata) and close it."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    figure.tight_layout()
    figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    os.replace(tmp, path)
    return path


def _draw(axes, records: list[dict], key: str, color=None) -> None:
    """``key`` over the steps: the raw values faint, their moving average bold."""
    steps, values = series(records, key)
    if not steps:
        return
    if len(steps) > 4:
        raw = axes.plot(steps, values, alpha=0.3, linewidth=1, color=color)[0]
        axes.plot(steps, smooth(values), label=key, color=raw.get_color(), linewidth=1.8)
    else:
        axes.plot(steps, values, label=key, marker="o", color=color)


def _draw_panel(axes, panel: Panel, records: list[dict], keys: list[str]) -> bool:
    """Draw ``panel`` on ``axes``; False if the run logged none of its keys."""
    chosen = panel.select(keys)
    if not chosen:
        return False
    for key in chosen:
        _draw(axes, records, key)
    if panel.name == "reward":
        steps, means = series(records, "reward/mean")
        std_steps, stds = series(records, "reward/std")
        if steps == std_steps and steps:
            low = [m - s for m, s in zip(means, stds)]
            high = [m + s for m, s in zip(means, stds)]
            axes.fill_between(steps, low, high, alpha=0.12, linewidth=0)
    if panel.log_y and all(v > 0 for k in chosen for v in series(records, k)[1]):
        axes.set_yscale("log")
    axes.set_title(panel.title, fontsize="medium")
    _integer_steps(axes)
    axes.set_xlabel("training step")
    axes.set_ylabel(panel.ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="x-small")
    return True


def _integer_steps(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _metric_keys(records: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    return list(keys)


def plot_run(work_dir: str | Path) -> list[Path]:
    """Write ``plots/overview.png`` (every panel of :data:`PANELS` that the run's
    ``metrics.jsonl`` has keys for, two per row) and ``plots/reward.png`` (the reward alone, the
    curve people look at first); returns the files written (none when the run has no steps
    yet). About a second on a CPU: one figure per file, drawn from the whole file each time."""
    work_dir = Path(work_dir)
    records = read_metrics(work_dir)
    if not records:
        return []
    plt = _pyplot()
    keys = _metric_keys(records)
    drawn = [panel for panel in PANELS if panel.select(keys)]
    rows = math.ceil(len(drawn) / 2)
    figure, grid = plt.subplots(rows, 2, figsize=(12, 3.4 * rows), squeeze=False)
    for axes, panel in zip(grid.flat, drawn):
        _draw_panel(axes, panel, records, keys)
    for axes in list(grid.flat)[len(drawn) :]:
        axes.axis("off")
    figure.suptitle(f"{work_dir.resolve().name}: {records[-1]['step']} steps")
    written = [_save(figure, work_dir / PLOTS_DIR / "overview.png")]
    figure, axes = plt.subplots(figsize=(6, 3.6))
    _draw_panel(axes, PANELS[0], records, keys)
    written.append(_save(figure, work_dir / PLOTS_DIR / "reward.png"))
    return written


# ----------------------------------------------------------------------------- several runs
@dataclass
class RunGroup:
    """Runs that differ only in their seed (or one run): one curve in :func:`plot_runs`."""

    label: str
    runs: list[Path]
    seeds: list


def _recipe_without_seed(run: Path) -> str | None:
    """The run's resolved recipe (``config.py``) minus its seed, as a comparable string; None
    when it has none that reads."""
    from .runner import read_recipe_dump

    recipe = read_recipe_dump(run / "config.py") if (run / "config.py").is_file() else None
    if recipe is None:
        return None
    recipe = dict(recipe)
    recipe.pop("seed", None)
    return json.dumps(recipe, sort_keys=True, default=str)


def group_runs(runs: list[Path]) -> list[RunGroup]:
    """Runs whose recipes are equal but for ``seed`` form one group (first-seen order); a run
    without a readable ``config.py`` is a group of its own."""
    from .runner import read_recipe_dump

    groups: dict[str, RunGroup] = {}
    for index, run in enumerate(runs):
        identity = _recipe_without_seed(run) or f"#{index}"
        config = read_recipe_dump(run / "config.py") if (run / "config.py").is_file() else None
        seed = (config or {}).get("seed")
        group = groups.setdefault(identity, RunGroup(_name(run), [], []))
        group.runs.append(run)
        group.seeds.append(seed)
    for group in groups.values():
        if len(group.runs) > 1:
            seeds = ", ".join(str(s) for s in group.seeds)
            cells = {run.resolve().parent.name for run in group.runs}
            if all(_is_seed_folder(run) for run in group.runs) and len(cells) == 1:
                group.label = cells.pop()  # the sweep's cell
            group.label = f"{group.label} (seeds {seeds}: mean, min-max band)"
    return list(groups.values())


def _is_seed_folder(run: Path) -> bool:
    return re.fullmatch(r"seed\d+", run.resolve().name) is not None


def _name(run: Path) -> str:
    """A run's label: its folder, with the parent when the folder is a seed of a sweep cell."""
    run = run.resolve()
    if _is_seed_folder(run) and run.parent.name:
        return f"{run.parent.name}/{run.name}"
    return run.name


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """The run folders that ``paths`` name: a run folder (it holds ``metrics.jsonl``) as it is,
    an ``ablate`` sweep folder as its ``<cell>/seed<k>`` runs, in sorted order. A
    FileNotFoundError names a path that is neither."""
    runs = []
    for path in map(Path, paths):
        if (path / "metrics.jsonl").is_file():
            runs.append(path)
            continue
        found = sorted(p.parent for p in path.glob("*/seed*/metrics.jsonl"))
        if not found:
            raise FileNotFoundError(
                f"{path} is not a run (no metrics.jsonl) nor an ablate sweep (no "
                "<cell>/seed<k>/metrics.jsonl); give a train --work-dir"
            )
        runs.extend(found)
    return runs


def draw_mean_band(axes, curves: list[tuple[list[int], list[float]]], label: str) -> None:
    """One line for several ``(steps, values)`` curves: the mean at the steps they all have and
    a min-max band (no band for one curve)."""
    common = set(curves[0][0])
    for steps, _ in curves[1:]:
        common &= set(steps)
    steps = sorted(common)
    if not steps:
        return
    columns = [[dict(zip(*curve))[s] for curve in curves] for s in steps]
    mean = [sum(c) / len(c) for c in columns]
    line = axes.plot(steps, mean, label=label, marker="o" if len(steps) == 1 else None)[0]
    if len(curves) > 1:
        low, high = [min(c) for c in columns], [max(c) for c in columns]
        axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_runs(runs: list[str | Path], out: str | Path, metrics: list[str] | None = None) -> Path:
    """Overlay ``runs`` (run folders) in one PNG ``out``: one panel per metric (default
    ``reward/mean``), one line per :func:`group_runs` group. A FileNotFoundError names a run
    without ``metrics.jsonl``; a ValueError names a metric no run logged."""
    runs = [Path(run) for run in runs]
    metrics = list(metrics or ["reward/mean"])
    records = {run: read_metrics(run) for run in runs}
    groups = group_runs(runs)
    plt = _pyplot()
    figure, grid = plt.subplots(
        len(metrics), 1, figsize=(8, 3.8 * len(metrics)), squeeze=False, sharex=True
    )
    for axes, metric in zip(grid[:, 0], metrics):
        drawn = 0
        for group in groups:
            curves = [series(records[run], metric) for run in group.runs]
            curves = [curve for curve in curves if curve[0]]
            if curves:
                draw_mean_band(axes, curves, group.label)
                drawn += 1
        if not drawn:
            plt.close(figure)
            known = sorted({k for r in records.values() for k in _metric_keys(r)} - {"step"})
            raise ValueError(
                f"no run logged {metric!r}; logged keys include: {', '.join(known[:8])}"
            )
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    _integer_steps(grid[-1, 0])
    grid[-1, 0].set_xlabel("training step")
    return _save(figure, Path(out))
