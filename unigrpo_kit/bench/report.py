"""The bench's results: figures with their targets, the table and the JSON object."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from rich.table import Table

# figure: (comparison, bound), for batch 32, 10 steps, 64 tokens on a 2-core CPU (the targets
# docs/performance.md states).
TARGETS = {
    "overhead/image_rollout": ("<=", 1.10),
    "overhead/text_rollout": ("<=", 1.25),
    "speedup/no_cfg": (">=", 1.8),
    "speedup/kv_cache": (">=", 5.0),
    "ratio/window_train": ("<=", 0.45),
}


@dataclass
class Figure:
    """One measured quantity: the median over the rounds, and their min and max."""

    name: str
    value: float
    low: float
    high: float
    unit: str = "x"

    @property
    def target(self) -> tuple[str, float] | None:
        return TARGETS.get(self.name)

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        comparison, bound = self.target
        return self.value <= bound if comparison == "<=" else self.value >= bound


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def summary(name: str, values: list[float], unit: str = "x") -> Figure:
    return Figure(name, statistics.median(values), min(values), max(values), unit)


def ratio(name: str, numerator: list[float], denominator: list[float]) -> Figure:
    """The figure of the per-round ratios numerator[i] / denominator[i]."""
    return summary(name, [n / d for n, d in zip(numerator, denominator)])


def as_json(report: Report) -> dict:
    """Each figure's median under its name; spreads, targets, set-up and notes beside them."""
    data: dict = {f.name: f.value for f in report.figures}
    data["spread"] = {f.name: [f.low, f.high] for f in report.figures}
    data["targets"] = {
        f.name: {"target": f"{f.target[0]} {f.target[1]:g}", "pass": f.passed}
        for f in report.figures
        if f.target is not None
    }
    return {**data, **report.info, "notes": report.notes}


def as_table(report: Report) -> Table:
    info = report.info
    title = (
        f"bench of {info['checkpoint']} on {info['device']}, {info['threads']} threads, "
        f"attention {info['attention_backend']}: batch {info['batch']}, {info['steps']} steps, "
        f"{info['tokens']} tokens, train window {info['window']}, median of "
        f"{info['repeats']} rounds after a warm-up"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("figure", style="bold cyan", no_wrap=True)
    table.add_column("median", justify="right")
    table.add_column("min - max", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", no_wrap=True)
    for f in report.figures:
        unit = "" if f.unit == "x" else f" {f.unit}"
        target = "" if f.target is None else f"{f.target[0]} {f.target[1]:g}"
        mark = {None: "", True: "[green]pass", False: "[red]miss"}[f.passed]
        mark += "" if info["targets_apply"] or f.passed is None else "*"
        table.add_row(f.name, f"{f.value:.3f}{unit}", f"{f.low:.3f} - {f.high:.3f}", target, mark)
    table.caption = "targets (docs/performance.md): batch 32, 10 steps, 64 tokens, 2-core CPU"
    if not info["targets_apply"]:
        table.caption += " (* these sizes differ: the marks are indicative only)"
    return table
