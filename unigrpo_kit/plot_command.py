"""``unigrpo-kit plot``: runs' metrics in one PNG, overlaid, without writing code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def plot(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Run work dirs (each holds a metrics.jsonl) or ablate sweep folders; runs "
            "that differ only in their seed are drawn as one mean curve with a min-max band.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("runs.png"),
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="A metrics.jsonl key to draw, one panel each (repeatable). Default: reward/mean.",
        ),
    ] = None,
) -> None:
    """Overlay runs' training curves in one PNG (a run's own plots are in its plots/ folder)."""
    from unigrpo_kit.plots import expand_runs, plot_runs

    def fail(message: str) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2)

    if out.suffix.lower() != ".png":
        fail(f"--out {out} must be a .png file, e.g. --out runs.png")
    if not out.parent.is_dir():
        fail(f"--out {out}: the folder {out.parent} does not exist; create it first")
    try:
        plot_runs(expand_runs(runs), out, metric)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(f"wrote {out}")
