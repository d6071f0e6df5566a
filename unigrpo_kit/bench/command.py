"""``unigrpo-kit bench``: the command; see :mod:`unigrpo_kit.bench` for the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .config import bench_recipe
from .report import as_json, as_table
from .world import QUICK, Sizes, run


def bench(
    checkpoint: Annotated[
        str,
        typer.Option(
            help="Checkpoint folder or shipped name; a random default TinyUnified if absent."
        ),
    ] = "tiny-base",
    batch: Annotated[
        int | None,
        typer.Option(
            min=1, help="Rows per rollout (default 32; 4 with --quick).", show_default=False
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, help="Denoising steps (default 10; 3 with --quick).", show_default=False
        ),
    ] = None,
    tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Text tokens (default 64; 8 with --quick).", show_default=False),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(min=1, help="Timed rounds (default 7; 2 with --quick).", show_default=False),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, help="torch intra-op threads (default: torch's choice).", show_default=False
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny sizes, to check that every figure runs.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object last; the table goes to stderr.")
    ] = False,
    recipe: Annotated[
        Path | None,
        typer.Option(
            help="Recipe whose trainer times ratio/window_train (default: the single-round "
            "recipe, built into the bench).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Time rollouts and training steps against the bare model (see docs/performance.md)."""
    import torch

    from unigrpo_kit.recipe import RecipeError

    try:
        cfg = bench_recipe(recipe)
    except RecipeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None

    base = QUICK if quick else Sizes()
    sizes = Sizes(
        batch=batch or base.batch,
        steps=steps or base.steps,
        tokens=tokens or base.tokens,
        repeats=repeats or base.repeats,
    )
    if threads is not None:
        torch.set_num_threads(threads)
    progress = Console(stderr=True)
    report = run(
        checkpoint, sizes, log=lambda name: progress.print(f"measuring {name} ..."), recipe=cfg
    )
    console = Console(stderr=json_output)
    console.print(as_table(report))
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    bad = [f.name for f in report.figures if not (math.isfinite(f.value) and f.value > 0)]
    if bad:
        typer.echo(f"error: not a positive finite number: {', '.join(bad)}", err=True)
        raise typer.Exit(code=1)
    if json_output:
        typer.echo(json.dumps(as_json(report)))
