"""The ``unigrpo-kit ablate`` command: plan the sweep, run its unfinished runs ``--jobs`` at a
time (each a :mod:`unigrpo_kit.sweep.worker` process), then write its report.

See :mod:`unigrpo_kit.sweep` for the layout of a sweep and the grid-file format.
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

from ..recipe import RecipeError
from .base import evaluate_base
from .plan import Run, Sweep, build_spec, plan_sweep, read_result, write_json_atomic
from .report import terminal_table, write_report


def available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def start_worker(run: Run, recipe: Path, threads: int) -> subprocess.Popen:
    """``python -m unigrpo_kit.sweep.worker RUN_DIR THREADS``, output appended to worker.log."""
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
    package_parent = str(Path(__file__).resolve().parents[2])  # the folder above unigrpo_kit/
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    with open(run.directory / "worker.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "unigrpo_kit.sweep.worker", str(run.directory), str(threads)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def remove_locks(sweep: Sweep) -> None:
    """Remove the ``.lock`` of every finished run: its ``result.json`` exists, so a sweep
    that waited on the lock sees it and stops, and none would take the lock again."""
    for run in sweep.runs:
        if run.result_path.exists():
            (run.directory / ".lock").unlink(missing_ok=True)


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
    baseline: Annotated[
        bool,
        typer.Option(help="Add a row for the recipe's untrained model (evaluated once)."),
    ] = True,
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
    remove_locks(sweep)
    if baseline:
        evaluate_base(sweep)
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
    """``python -m unigrpo_kit.sweep ...``: the command without the rest of the CLI."""
    app = typer.Typer(add_completion=False)
    app.command()(ablate)
    app()


if __name__ == "__main__":
    main()
