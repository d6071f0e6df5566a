"""The report of an ablation sweep: per-cell means and stds, tables and plots.

Everything here reads only the runs' ``result.json`` files, so rewriting the report is
deterministic: a killed-and-resumed sweep ends with the same tables as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from ..plots import draw_mean_band
from .base import BASE_DIR, read_base
from .plan import Cell, Sweep, read_result, write_text_atomic

METRICS = (
    ("strict", "strict", ("eval", "judge/strict"), 4),
    ("partial", "partial", ("eval", "judge/partial"), 4),
    ("quality", "quality", ("eval", "quality"), 4),
    ("final_reward", "reward", ("final_reward",), 4),
    ("step_s", "s/step", ("step_s",), 2),
    ("wall_s", "wall s", ("wall_s",), 1),
)


def _get(result: dict, path: tuple[str, ...]) -> float:
    for key in path:
        result = result[key]
    return float(result)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None below 2 values)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


@dataclass
class CellSummary:
    cell: Cell
    done: list[dict]
    failed: list[tuple[int, str]]
    unfinished: list[int]
    stats: dict[str, tuple[float | None, float | None]]


def summarize(sweep: Sweep) -> list[CellSummary]:
    """Per cell, in sweep order: finished results, failures and mean/std of every metric."""
    summaries = []
    for cell in sweep.cells:
        done, failed, unfinished = [], [], []
        for run in (r for r in sweep.runs if r.cell == cell):
            result = read_result(run)
            if result is None:
                unfinished.append(run.seed)
            elif result["status"] == "failed":
                failed.append((run.seed, result["error"]))
            else:
                done.append(result)
        stats = {col: mean_std([_get(r, path) for r in done]) for col, _, path, _ in METRICS}
        summaries.append(CellSummary(cell, done, failed, unfinished, stats))
    return summaries


def _swept_columns(sweep: Sweep) -> list[str]:
    return (["variant"] if sweep.spec.variants else []) + list(sweep.spec.grid)


def _swept_values(sweep: Sweep, cell: Cell) -> list[str]:
    """The cell's variant and grid values, strings as they are, other values as literals."""
    values = [cell.variant] if sweep.spec.variants else []
    values += [_label(cell.overrides[key]) for key in sweep.spec.grid]
    return values


def results_csv(sweep: Sweep, summaries: list[CellSummary]) -> str:
    header = ["cell", *_swept_columns(sweep), "runs_done", "runs_failed", "runs_unfinished"]
    for column, *_ in METRICS:
        header += [f"{column}_mean", f"{column}_std"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*header, "errors"])
    base = read_base(sweep)
    if base is not None:
        row = [BASE_DIR, *[""] * len(_swept_columns(sweep)), "", "", ""]
        for _, _, path, decimals in METRICS:
            row += [_fmt(_base_value(base, path), decimals), ""]
        writer.writerow([*row, base.get("error", "")])
    for s in summaries:
        row = [s.cell.name, *_swept_values(sweep, s.cell), len(s.done), len(s.failed)]
        row.append(len(s.unfinished))
        for column, _, _, decimals in METRICS:
            row += [_fmt(value, decimals) for value in s.stats[column]]
        writer.writerow([*row, " | ".join(f"seed{seed}: {e}" for seed, e in s.failed)])
    return buffer.getvalue()


def runs_csv(sweep: Sweep) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["cell", "seed", "status", *(col for col, *_ in METRICS), "error"])
    for run in sweep.runs:
        result = read_result(run)
        status = "unfinished" if result is None else result["status"]
        values = [""] * len(METRICS)
        if status == "done":
            values = [_fmt(_get(result, path), d) for _, _, path, d in METRICS]
        error = result.get("error", "") if result else ""
        writer.writerow([run.cell.name, run.seed, status, *values, error])
    return buffer.getvalue()


def _table_rows(summaries: list[CellSummary]) -> list[list[str]]:
    """Per cell: seeds done (and failed / unfinished), then ``mean ± std`` of every metric."""
    rows = []
    for s in summaries:
        seeds = f"{len(s.done)}"
        seeds += f" ({len(s.failed)} failed)" if s.failed else ""
        seeds += f" ({len(s.unfinished)} unfinished)" if s.unfinished else ""
        cells = []
        for column, _, _, decimals in METRICS:
            mean, std = s.stats[column]
            cells.append("-" if mean is None else _fmt(mean, decimals) + _pm(std, decimals))
        rows.append([seeds, *cells])
    return rows


def _pm(std: float | None, decimals: int) -> str:
    return "" if std is None else f" ± {std:.{decimals}f}"


def results_md(sweep: Sweep, summaries: list[CellSummary]) -> str:
    header = ["cell", "seeds done", *(label for _, label, _, _ in METRICS)]
    lines = [
        f"# Ablation `{sweep.root.name}` of `{sweep.recipe.name}`",
        "",
        f"Seeds: {', '.join(map(str, sweep.spec.seeds))}. Mean ± sample std over the finished "
        "seeds of each cell. strict, partial: the judge's eval scores of the final checkpoint on "
        "the recipe's evaluation prompts; quality: the eval quality metric; reward: the final "
        "training reward (mean reward/mean of the last 5 steps); s/step: training seconds per "
        "step; wall s: training plus evaluation seconds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    rows = [[f"`{s.cell.name}`", *row] for s, row in zip(summaries, _table_rows(summaries))]
    base = read_base(sweep)
    if base is not None:
        rows.insert(0, [f"untrained base (`{base.get('model', '?')}`)", *_base_cells(base)])
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if base is not None:
        lines += [
            "",
            "untrained base: the recipe's model before any training, evaluated once under the "
            "options every run shares"
            + (f" ({', '.join(f'`{o}`' for o in base['options'])})" if base.get("options") else "")
            + (f"; it failed: {base['error']}" if base.get("error") else "")
            + ".",
        ]
    failures = [(s.cell.name, seed, e) for s in summaries for seed, e in s.failed]
    if failures:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{cell}/seed{seed}`: {error}" for cell, seed, error in failures]
    pending = [(s.cell.name, seed) for s in summaries for seed in s.unfinished]
    if pending:
        lines += ["", "## Unfinished runs (rerun the command to resume them)", ""]
        lines += [f"- `{cell}/seed{seed}`" for cell, seed in pending]
    return "\n".join(lines) + "\n"


# The terminal table's metrics (results.md has them all): the judge's strict score with its
# spread over seeds, the other means alone, so that a sweep of one or two keys fits 80 columns.
TERMINAL_METRICS = (("strict", 3, True), ("partial", 3, False), ("quality", 3, False))
TERMINAL_METRICS += (("final_reward", 3, False), ("step_s", 2, False))


def terminal_table(sweep: Sweep, summaries: list[CellSummary]) -> Table:
    """The results with one short column per swept key instead of the long cell names, and
    compact numbers (``0.429±0.101``): one line per cell in 80 columns. The full table, with
    every metric's std and the wall time, is results.md."""
    labels = {column: label for column, label, _, _ in METRICS}
    base = read_base(sweep)
    caption = "untrained: the recipe's model before training" if base is not None else None
    table = Table(title=f"{sweep.root}", title_justify="left", caption=caption)
    keys = _swept_columns(sweep)
    short = [key.rsplit(".", 1)[-1] for key in keys]
    for key, label in zip(keys, short):
        table.add_column(label if short.count(label) == 1 else key, style="bold cyan")
    table.add_column("seeds")
    for column, _, _ in TERMINAL_METRICS:
        table.add_column(labels[column], justify="right")
    if base is not None:
        paths = {column: path for column, _, path, _ in METRICS}
        cells = []
        for column, decimals, _ in TERMINAL_METRICS:
            value = _base_value(base, paths[column])
            cells.append("-" if value is None else f"{value:.{decimals}f}")
        seeds = "-" if base.get("status") == "done" else "failed"
        table.add_row("untrained", *[""] * (len(keys) - 1), seeds, *cells, style="dim")
    for s, row in zip(summaries, _table_rows(summaries)):
        style = "red" if s.failed and not s.done else None
        cells = []
        for column, decimals, spread in TERMINAL_METRICS:
            mean, std = s.stats[column]
            text = "-" if mean is None else f"{mean:.{decimals}f}"
            cells.append(text + (f"±{std:.{decimals}f}" if spread and std is not None else ""))
        table.add_row(*_swept_values(sweep, s.cell), row[0], *cells, style=style)
    return table


def _base_value(base: dict, path: tuple[str, ...]) -> float | None:
    """The base row's value of a metric: its eval scores only (it has no training)."""
    if path[0] != "eval" or base.get("status") != "done":
        return None
    return base["eval"].get(path[1])


def _base_cells(base: dict) -> list[str]:
    """The base row after its name: seeds "-", then the eval scores, "-" for the rest."""
    cells = ["-" if base.get("status") == "done" else "failed"]
    for _, _, path, decimals in METRICS:
        value = _base_value(base, path)
        cells.append("-" if value is None else _fmt(value, decimals))
    return cells


def _label(value) -> str:
    return value if isinstance(value, str) else repr(value)


def plot_reward_curves(summaries: list[CellSummary], path: Path) -> None:
    """Training reward/mean per step: mean over the finished seeds, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for s in summaries:
        curves = [(list(range(1, len(c) + 1)), c) for c in (r["reward_curve"] for r in s.done)]
        if curves:
            draw_mean_band(axes, curves, s.cell.name)
    axes.set_xlabel("training step")
    axes.set_ylabel("reward/mean (band: min-max over seeds)")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small")
    _save_figure(figure, path)


def plot_eval_strict(summaries: list[CellSummary], path: Path, base: float | None = None) -> None:
    """Eval strict score per cell: mean over the finished seeds, sample-std error bars; a
    dashed line at the untrained base model's score when ``base`` is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(4.0, 1.2 * len(summaries) + 2), 4.5))
    positions = range(len(summaries))
    means = [s.stats["strict"][0] for s in summaries]
    errors = [s.stats["strict"][1] or 0.0 for s in summaries]
    heights = [m if m is not None else 0.0 for m in means]
    axes.bar(positions, heights, yerr=errors, capsize=4, color="tab:blue")
    for x, mean in zip(positions, means):
        if mean is None:
            axes.text(x, 0, "no run done", ha="center", va="bottom", fontsize="small")
    if base is not None:
        axes.axhline(base, color="grey", linestyle="--", label=f"untrained base {base:.3f}")
        axes.legend(fontsize="small")
    axes.set_xticks(list(positions), [s.cell.name for s in summaries], rotation=30, ha="right")
    axes.set_ylabel("eval judge/strict (error bar: std over seeds)")
    axes.grid(axis="y", alpha=0.3)
    _save_figure(figure, path)


def _save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    figure.tight_layout()
    figure.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    plt.close(figure)
    os.replace(tmp, path)


def write_report(sweep: Sweep) -> list[CellSummary]:
    """results.csv, results.md, runs.csv and the two plots, from the result files alone."""
    summaries = summarize(sweep)
    sweep.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep.root / "results.csv", results_csv(sweep, summaries))
    write_text_atomic(sweep.root / "results.md", results_md(sweep, summaries))
    write_text_atomic(sweep.root / "runs.csv", runs_csv(sweep))
    plot_reward_curves(summaries, sweep.root / "reward_curves.png")
    base = read_base(sweep)
    strict = _base_value(base, ("eval", "judge/strict")) if base is not None else None
    plot_eval_strict(summaries, sweep.root / "eval_strict.png", strict)
    return summaries
