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
    text_model: Annotated[
        Path | None,
        typer.Option(
            "--text-model",
            help="Instead, time one text-GRPO step (8 prompts x 8 completions x 32 tokens, no "
            "KL, one optimizer step) on the Hugging Face causal LM in this folder; 2 threads "
            "unless --threads; --repeats steps (default 5) after a warm-up.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Time rollouts and training steps against the bare model (see docs/performance.md)."""
    import torch

    from unigrpo_kit.recipe import RecipeError

    if text_model is not None:
        _bench_text_model(text_model, repeats or 5, threads or 2, json_output)
        return

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


def _bench_text_model(folder: Path, repeats: int, threads: int, json_output: bool) -> None:
    """``--text-model``: :func:`unigrpo_kit.bench.text.time_text_grpo`, as a table and JSON."""
    import torch
    from rich.table import Table

    from .text import time_text_grpo

    torch.set_num_threads(threads)
    try:
        result = time_text_grpo(folder, repeats=repeats)
    except (ValueError, FileNotFoundError) as error:
        typer.echo(f"error: --text-model {folder}: {error}", err=True)
        raise typer.Exit(code=2) from None
    table = Table(title=f"text GRPO step on {folder}", title_justify="left")
    table.add_column("figure", style="bold cyan")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console(stderr=json_output).print(table)
    if json_output:
        typer.echo(json.dumps(result))
