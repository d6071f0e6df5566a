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

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .ablate_plan import (  # noqa: F401  (re-exported: the command's public helpers)
    MAX_CELL_NAME,
    GridError,
    Run,
    Sweep,
    build_cells,
    build_spec,
    cell_name,
    load_grid_file,
    parse_grid_option,
    parse_seeds,
    plan_sweep,
    read_result,
    split_top_level,
    write_json_atomic,
)
from .ablate_report import terminal_table, write_report
from .recipe import RecipeError


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
