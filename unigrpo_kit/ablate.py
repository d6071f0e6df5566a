"""``unigrpo-kit ablate``: a grid of recipe overrides x seeds, each cell a resumable training run
that is evaluated at its end, then one results table and two plots.

A sweep lives in ``work_dirs/ablate_<name>/``:

    <cell>/seed<k>/      one training run (runner.train's files: metrics.jsonl, checkpoints/, ...)
        run.json         the run's exact ``--cfg-options`` (written before the run starts)
        worker.log       the worker's output, one header per attempt, full tracebacks
        result.json      written atomically when the run is finished: eval scores, final training
                         reward, reward curve and times, or the one-line error of a failed run
    results.csv, results.md, runs.csv, reward_curves.png, eval_strict.png

A run is finished when its ``result.json`` exists. Running the same command again skips finished
runs, resumes the others from their last checkpoint (``runner.train(..., resume=True)``) and
rewrites the tables from the result files alone, so a killed-and-resumed sweep ends with the
same table as an uninterrupted one (up to the time columns). Seeds are not part of the default
name: ``--seeds 0,1,2`` after ``--seeds 0,1`` adds the third seed to the same sweep. A failed
run counts as finished; ``--retry-failed`` runs the failed ones again (resuming from their
checkpoints), e.g. after fixing the bug that made them fail.

Each run is a separate process (``unigrpo_kit.ablate_worker``); ``--jobs N`` runs N at a time
with ``cpus // N`` torch threads each, unless the sweep sets ``threads=K`` itself.

Grid values are Python literals where they parse as one (``unigrpo_kit.recipe.parse_value``).
On the command line ``--grid key=v1,v2`` splits on the commas outside brackets and quotes, so
``--grid 'rollout.window.window_range=(0,5),(2,7)'`` is two tuples (quote it for the shell);
values with nested structure read better in a ``--grid-file`` (see ``recipes/ablations/``):

    grid = {"rollout.max_rounds": [1, 2]}              # cartesian product over the keys
    variants = [dict(name="no_reg", overrides={"algorithm.regularizers": []}), ...]
    seeds = [0, 1]
    base_overrides = {"schedule.steps": 40}            # applied to every run

``variants`` and ``grid`` may be combined (every variant x every grid cell); ``--grid`` keys add
to the file's grid. A dict value is merged into the recipe's dict (mmengine semantics) unless it
holds ``_delete_=True``, which replaces it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import runpy
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .recipe import RecipeError, check_key, load_recipe, parse_value

MAX_CELL_NAME = 100
BRACKETS = {"(": ")", "[": "]", "{": "}"}
GRID_FILE_NAMES = ("grid", "variants", "seeds", "base_overrides")


class GridError(RecipeError):
    """A grid, a grid file, a seed list or a sweep name that cannot be used as written."""


# --------------------------------------------------------------------------- grid parsing
def split_top_level(text: str) -> list[str]:
    """``text`` split on the commas outside brackets and quotes: ``"(0,5),(2,7)"`` -> two items."""
    items, depth_stack, quote, current = [], [], None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in BRACKETS:
            depth_stack.append(BRACKETS[char])
        elif char in BRACKETS.values():
            if not depth_stack or depth_stack.pop() != char:
                raise GridError(f"unbalanced {char!r} in {text!r}")
        elif char == "," and not depth_stack:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote or depth_stack:
        raise GridError(f"unclosed {quote or 'bracket'} in {text!r}")
    items.append("".join(current))
    return items


def parse_grid_option(option: str) -> tuple[str, list]:
    """``"key=v1,v2"`` -> ``(key, [parse_value(v1), parse_value(v2)])``."""
    key, sep, values_text = option.partition("=")
    key = key.strip()
    if not sep or not key:
        raise GridError(f"--grid {option!r} is not key=v1,v2 (e.g. rollout.max_rounds=1,2)")
    items = [item.strip() for item in split_top_level(values_text)]
    if any(not item for item in items):
        raise GridError(f"--grid {option!r} has an empty value; values are key=v1,v2,...")
    return key, [parse_value(item) for item in items]


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        message = f"--seeds {text!r} is not a comma-separated list of ints (e.g. 0,1,2)"
        raise GridError(message) from None
    if len(set(seeds)) != len(seeds):
        raise GridError(f"--seeds {text!r} repeats a seed")
    return seeds


@dataclass
class GridSpec:
    """What a sweep varies: a grid (key -> values), named variants, seeds, shared overrides."""

    grid: dict[str, list] = field(default_factory=dict)
    variants: list[tuple[str, dict]] = field(default_factory=list)
    seeds: list[int] | None = None
    base_overrides: dict = field(default_factory=dict)


def load_grid_file(path: str | Path) -> GridSpec:
    """Read ``grid``, ``variants``, ``seeds`` and ``base_overrides`` from a Python file."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {str(path)!r} does not exist; see recipes/ablations/")
    try:
        names = runpy.run_path(str(path))
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise GridError(f"grid file {path} could not be read: {first}") from error
    public = {
        k: v
        for k, v in names.items()
        if not k.startswith("_") and not callable(v) and not isinstance(v, types.ModuleType)
    }
    unknown = sorted(set(public) - set(GRID_FILE_NAMES))
    if unknown:
        raise GridError(
            f"grid file {path} defines {', '.join(unknown)}; it may define "
            f"{', '.join(GRID_FILE_NAMES)} (prefix helpers with _)"
        )
    if not public.get("grid") and not public.get("variants"):
        raise GridError(f"grid file {path} defines neither a grid dict nor a variants list")
    spec = GridSpec(base_overrides=_overrides(public.get("base_overrides", {}), path, "base"))
    grid = public.get("grid", {})
    if not isinstance(grid, dict):
        raise GridError(f"grid file {path}: grid must be a dict of key -> list of values")
    for key, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            raise GridError(f"grid file {path}: grid[{key!r}] must be a non-empty list of values")
        spec.grid[key] = list(values)
    variants = public.get("variants", [])
    if not isinstance(variants, list | tuple):
        raise GridError(f"grid file {path}: variants must be a list of dict(name=, overrides=)")
    for variant in variants:
        if not isinstance(variant, dict) or set(variant) != {"name", "overrides"}:
            raise GridError(
                f"grid file {path}: each variant is dict(name='...', overrides={{key: value}}), "
                f"got {variant!r}"
            )
        name = variant["name"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
            raise GridError(f"grid file {path}: variant name {name!r} must match [A-Za-z0-9._+-]+")
        spec.variants.append((name, _overrides(variant["overrides"], path, f"variant {name}")))
    names_seen = [name for name, _ in spec.variants]
    if len(set(names_seen)) != len(names_seen):
        raise GridError(f"grid file {path}: two variants share a name")
    if "seeds" in public:
        seeds = public["seeds"]
        if not isinstance(seeds, list | tuple) or not all(type(s) is int for s in seeds):
            raise GridError(f"grid file {path}: seeds must be a list of ints")
        spec.seeds = parse_seeds(",".join(map(str, seeds))) if seeds else None
    return spec


def _overrides(value, path: Path, what: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise GridError(f"grid file {path}: {what} overrides must be a dict of dotted key -> value")
    return dict(value)


def build_spec(grid_options: list[str], grid_file: Path | None, seeds: str | None) -> GridSpec:
    """The grid file (if any) with the ``--grid`` options and ``--seeds`` added."""
    spec = load_grid_file(grid_file) if grid_file is not None else GridSpec()
    for option in grid_options:
        key, values = parse_grid_option(option)
        if key in spec.grid:
            raise GridError(f"--grid key {key!r} is given twice (or also in the grid file)")
        spec.grid[key] = values
    for key, values in spec.grid.items():
        if len({_literal(v) for v in values}) != len(values):
            raise GridError(f"grid key {key!r} repeats a value: {values!r}")
    if not spec.grid and not spec.variants:
        raise GridError("nothing to sweep: give --grid key=v1,v2 or --grid-file FILE.py")
    if seeds is not None:
        spec.seeds = parse_seeds(seeds)
    if spec.seeds is None:
        spec.seeds = [0]
    return spec


def _literal(value) -> str:
    """The ``--cfg-options`` text of a value; an error if it does not parse back to the value."""
    text = repr(value)
    if parse_value(text) != value or type(parse_value(text)) is not type(value):
        raise GridError(f"value {value!r} is not a Python literal (numbers, strings, tuples, ...)")
    return text


# --------------------------------------------------------------------------- cells and runs
def _short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def value_label(value) -> str:
    """A filesystem-safe label of a value: ``2``, ``FlowSDE``, ``0,5`` for ``(0, 5)``."""
    text = value if isinstance(value, str) else repr(value).replace(" ", "")
    return re.sub(r"[^A-Za-z0-9._,+=-]+", "_", text).strip("_") or "_"


def cell_name(overrides: dict, variant: str | None = None) -> str:
    """A readable, filesystem-safe, stable folder name, e.g. ``rollout.max_rounds=2__seed=...``.

    It depends on the cell's own overrides only. Where a label loses information (``(0, 5)``
    and ``[0, 5]`` both read ``0,5``; ``"2"`` and ``2`` both read ``2``) or the name grows past
    ``MAX_CELL_NAME`` characters, a hash of the exact overrides is appended.
    """
    parts = [variant] if variant else []
    lossy = False
    for key, value in overrides.items():
        label = value_label(value)
        lossy |= label != (value if isinstance(value, str) else repr(value))
        lossy |= isinstance(value, str) and parse_value(value) != value
        parts.append(f"{key}={label}")
    name = "__".join(parts)
    if lossy or len(name) > MAX_CELL_NAME:
        exact = json.dumps([variant, [[k, _literal(v)] for k, v in overrides.items()]])
        name = f"{name[: MAX_CELL_NAME - 10].rstrip('_.-')}--{_short_hash(exact)}"
    return name


@dataclass(frozen=True)
class Cell:
    name: str
    variant: str | None
    overrides: dict  # the cell's own overrides: the variant's, then its grid values


@dataclass(frozen=True)
class Run:
    cell: Cell
    seed: int
    directory: Path
    options: tuple[str, ...]  # every --cfg-options of this run, seed last

    @property
    def result_path(self) -> Path:
        return self.directory / "result.json"

    @property
    def label(self) -> str:
        return f"{self.cell.name}/seed{self.seed}"


def build_cells(spec: GridSpec) -> list[Cell]:
    """Variants x the grid's cartesian product (the first grid key varies slowest)."""
    keys = list(spec.grid)
    products = [dict(zip(keys, values)) for values in itertools.product(*spec.grid.values())]
    cells = []
    for variant, variant_overrides in spec.variants or [(None, {})]:
        for grid_values in products:
            name = cell_name(grid_values, variant) if grid_values else variant
            cells.append(Cell(name, variant, {**variant_overrides, **grid_values}))
    return cells


def sweep_name(recipe: Path, spec: GridSpec, cfg_options: list[str]) -> str:
    """``<recipe stem>_<hash of everything but the seeds>``."""
    content = json.dumps(
        {
            "grid": [[k, [_literal(v) for v in vs]] for k, vs in spec.grid.items()],
            "variants": [[n, [[k, _literal(v)] for k, v in o.items()]] for n, o in spec.variants],
            "base": [[k, _literal(v)] for k, v in spec.base_overrides.items()],
            "cfg_options": list(cfg_options),
        }
    )
    return f"{recipe.stem}_{_short_hash(content, 6)}"


@dataclass
class Sweep:
    recipe: Path
    root: Path
    spec: GridSpec
    cells: list[Cell]
    runs: list[Run]


def plan_sweep(
    recipe: Path, spec: GridSpec, cfg_options: list[str], name: str | None, root: Path
) -> Sweep:
    """Check every key and every run's full recipe before anything is written."""
    cfg = load_recipe(recipe, cfg_options)
    for key in spec.base_overrides:
        check_key(cfg, key, source="base_overrides")
    for variant, overrides in spec.variants:
        for key in overrides:
            check_key(cfg, key, source=f"variant {variant!r}")
    for key in spec.grid:
        check_key(cfg, key, source="--grid")
    if name is None:
        name = sweep_name(recipe, spec, cfg_options)
    elif not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        raise GridError(f"--name {name!r} must match [A-Za-z0-9._+-]+ (it names a folder)")
    sweep_root = root / f"ablate_{name}"
    cells = build_cells(spec)
    if len({cell.name for cell in cells}) != len(cells):
        raise GridError("two cells share a folder name; give the variants distinct names")
    base = [*cfg_options, *(f"{k}={_literal(v)}" for k, v in spec.base_overrides.items())]
    runs = []
    for cell in cells:
        cell_options = [*base, *(f"{k}={_literal(v)}" for k, v in cell.overrides.items())]
        load_recipe(recipe, cell_options)  # the merged overrides must form a recipe
        for seed in spec.seeds:
            directory = sweep_root / cell.name / f"seed{seed}"
            run = Run(cell, seed, directory, (*cell_options, f"seed={seed}"))
            _check_same_run(run, recipe)
            runs.append(run)
    return Sweep(recipe, sweep_root, spec, cells, runs)


def _check_same_run(run: Run, recipe: Path) -> None:
    """A run folder left by an earlier sweep must have been run with the same recipe and
    overrides."""
    spec_path = run.directory / "run.json"
    if not spec_path.exists():
        return
    earlier = json.loads(spec_path.read_text())
    if earlier["options"] != list(run.options) or Path(earlier["recipe"]).name != recipe.name:
        raise GridError(
            f"{run.directory} was run with another recipe or other overrides (see its run.json); "
            "pass --name to start a new sweep"
        )


# --------------------------------------------------------------------------- execution
def write_json_atomic(path: Path, data: dict) -> None:
    """``path`` gets the JSON of ``data`` whole or not at all (tmp file, fsync, os.replace)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_result(run: Run) -> dict | None:
    return json.loads(run.result_path.read_text()) if run.result_path.exists() else None


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def start_worker(run: Run, recipe: Path, threads: int) -> subprocess.Popen:
    """``python -m unigrpo_kit.ablate_worker RUN_DIR THREADS``, output appended to worker.log."""
    run.directory.mkdir(parents=True, exist_ok=True)
    spec_path = run.directory / "run.json"
    if not spec_path.exists():
        write_json_atomic(
            spec_path,
            {
                "recipe": str(recipe.resolve()),
                "cell": run.cell.name,
                "seed": run.seed,
                "options": list(run.options),
            },
        )
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    with open(run.directory / "worker.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "unigrpo_kit.ablate_worker", str(run.directory), str(threads)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def _last_log_line(run: Run) -> str:
    log = run.directory / "worker.log"
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def execute(sweep: Sweep, jobs: int, console: Console, quiet: bool) -> dict[str, str]:
    """Run every unfinished run, ``jobs`` at a time; returns why each still-unfinished one stopped.

    A worker that raised inside training or evaluation wrote a failed result.json itself; one
    that died otherwise (a signal, an import error) leaves its run unfinished, to resume later.
    """
    threads = max(1, available_cpus() // jobs)
    todo = [run for run in sweep.runs if not run.result_path.exists()]
    active: dict[subprocess.Popen, Run] = {}
    unfinished: dict[str, str] = {}
    columns = [TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, disable=quiet) as progress:
        bar = progress.add_task("runs", total=len(sweep.runs))
        progress.update(bar, completed=len(sweep.runs) - len(todo))
        try:
            while todo or active:
                while todo and len(active) < jobs:
                    run = todo.pop(0)
                    active[start_worker(run, sweep.recipe, threads)] = run
                time.sleep(0.05)
                for process in [p for p in active if p.poll() is not None]:
                    run = active.pop(process)
                    result = read_result(run)
                    if result is None:
                        code = process.returncode
                        how = f"killed by signal {-code}" if code < 0 else f"exited {code}"
                        unfinished[run.label] = f"worker {how}: {_last_log_line(run)}"
                        message = f"[yellow]unfinished[/] {escape(run.label)}: "
                        message += escape(unfinished[run.label])
                    else:
                        progress.advance(bar)
                        message = _run_line(run, result)
                    if not quiet:
                        progress.console.print(message, highlight=False)
        except KeyboardInterrupt:
            for process in active:
                process.terminate()
            for process in active:
                process.wait()
            raise
    return unfinished


def _run_line(run: Run, result: dict) -> str:
    if result["status"] == "failed":
        return f"[red]failed[/] {escape(run.label)}: {escape(result['error'])}"
    return (
        f"[green]done[/] {escape(run.label)}: strict {result['eval']['judge/strict']:.3f}  "
        f"reward {result['final_reward']:.3f}  {result['wall_s']:.1f}s"
    )


# --------------------------------------------------------------------------- report
# (column, label, key in result.json, decimals)
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
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    failures = [(s.cell.name, seed, e) for s in summaries for seed, e in s.failed]
    if failures:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{cell}/seed{seed}`: {error}" for cell, seed, error in failures]
    pending = [(s.cell.name, seed) for s in summaries for seed in s.unfinished]
    if pending:
        lines += ["", "## Unfinished runs (rerun the command to resume them)", ""]
        lines += [f"- `{cell}/seed{seed}`" for cell, seed in pending]
    return "\n".join(lines) + "\n"


def terminal_table(sweep: Sweep, summaries: list[CellSummary]) -> Table:
    """The results with one short column per swept key instead of the long cell names."""
    table = Table(title=f"{sweep.root}", title_justify="left")
    keys = _swept_columns(sweep)
    short = [key.rsplit(".", 1)[-1] for key in keys]
    for key, label in zip(keys, short):
        table.add_column(label if short.count(label) == 1 else key, style="bold cyan")
    table.add_column("seeds done")
    for _, label, _, _ in METRICS:
        table.add_column(label, justify="right")
    for s, row in zip(summaries, _table_rows(summaries)):
        style = "red" if s.failed and not s.done else None
        table.add_row(*_swept_values(sweep, s.cell), *row, style=style)
    return table


def _label(value) -> str:
    return value if isinstance(value, str) else repr(value)


def plot_reward_curves(summaries: list[CellSummary], path: Path) -> None:
    """Training reward/mean per step: mean over the finished seeds, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for s in summaries:
        curves = [r["reward_curve"] for r in s.done]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = list(range(1, length + 1))
        columns = [[c[i] for c in curves] for i in range(length)]
        line = axes.plot(steps, [sum(c) / len(c) for c in columns], label=s.cell.name)[0]
        if len(curves) > 1:
            low, high = [min(c) for c in columns], [max(c) for c in columns]
            axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("training step")
    axes.set_ylabel("reward/mean (band: min-max over seeds)")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small")
    _save_figure(figure, path)


def plot_eval_strict(summaries: list[CellSummary], path: Path) -> None:
    """Eval strict score per cell: mean over the finished seeds, sample-std error bars."""
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
    plot_eval_strict(summaries, sweep.root / "eval_strict.png")
    return summaries


# --------------------------------------------------------------------------- command
def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def ablate(
    recipe: Annotated[Path, typer.Argument(help="Recipe file, e.g. recipes/unified_multiround.py")],
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            help="key=v1,v2 (repeatable; the cartesian product is swept). Values are Python "
            "literals; commas inside brackets or quotes do not split: 'key=(0,5),(2,7)'.",
        ),
    ] = None,
    grid_file: Annotated[
        Path | None,
        typer.Option(help="A .py file with grid / variants / seeds / base_overrides."),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated seeds, e.g. 0,1,2. Default: the grid file's, else 0."),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, help="Runs at a time, each a process with cpus/jobs threads.")
    ] = 1,
    name: Annotated[
        str | None,
        typer.Option(help="Sweep folder work_dirs/ablate_<name>. Default: recipe + grid hash."),
    ] = None,
    cfg_options: Annotated[
        list[str] | None,
        typer.Option("--cfg-options", help="Override recipe keys in every run: key=value."),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar and no per-run lines.")] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Run the failed runs again, resuming from their checkpoints.")
    ] = False,
) -> None:
    """Sweep a grid of overrides x seeds, resumably; evaluate each run; tabulate and plot."""
    console = Console()
    try:
        spec = build_spec(list(grid or []), grid_file, seeds)
        sweep = plan_sweep(recipe, spec, list(cfg_options or []), name, Path("work_dirs"))
    except RecipeError as error:
        _fail(str(error))
    if retry_failed:
        for run in sweep.runs:
            if (read_result(run) or {}).get("status") == "failed":
                run.result_path.unlink()
    finished = sum(run.result_path.exists() for run in sweep.runs)
    if not quiet:
        console.print(
            f"{sweep.root}: {len(sweep.cells)} cells x seeds {','.join(map(str, spec.seeds))}, "
            f"{finished} of {len(sweep.runs)} runs already finished",
            highlight=False,
        )
    try:
        unfinished = execute(sweep, jobs, console, quiet)
    except KeyboardInterrupt:
        write_report(sweep)
        typer.echo(f"interrupted: rerun the same command to resume {sweep.root}", err=True)
        raise typer.Exit(code=130) from None
    summaries = write_report(sweep)
    console.print(terminal_table(sweep, summaries))
    console.print(f"wrote {sweep.root}/results.csv, results.md and plots", highlight=False)
    failed = sum(len(s.failed) for s in summaries)
    if failed or unfinished:
        typer.echo(
            f"{failed} runs failed, {len(unfinished)} unfinished (see {sweep.root}/results.md); "
            "rerun the command to resume unfinished runs, with --retry-failed to retry failed ones",
            err=True,
        )
        raise typer.Exit(code=1)


def main() -> None:
    """``python -m unigrpo_kit.ablate ...``: the command without the rest of the CLI."""
    app = typer.Typer(add_completion=False)
    app.command()(ablate)
    app()


if __name__ == "__main__":
    main()
