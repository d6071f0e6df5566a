"""The ``unigrpo-kit`` command line: one function per command on a typer app."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unigrpo_kit import __version__
from unigrpo_kit.registry import ALL_REGISTRIES, KitRegistry

app = typer.Typer(
    name="unigrpo-kit",
    help="RL post-training (GRPO, Flow-GRPO, UniGRPO) of generators that write and paint.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"unigrpo-kit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """RL post-training (GRPO, Flow-GRPO, UniGRPO) of generators that write and paint."""


def _registry_key(kind: str) -> str:
    """The ``ALL_REGISTRIES`` key for a plural or singular kind (``samplers`` or ``sampler``)."""
    aliases = {key: key for key in ALL_REGISTRIES}
    aliases.update({registry.name: key for key, registry in ALL_REGISTRIES.items()})
    key = aliases.get(kind.lower())
    if key is None:
        # typer.echo, not rich: rich would wrap the line at the terminal width.
        typer.echo(
            f"error: unknown kind {kind!r}; valid kinds: {', '.join(ALL_REGISTRIES)} "
            "(singular works too)",
            err=True,
        )
        raise typer.Exit(code=2)
    return key


def _summary(component: object) -> str:
    """The summary of a component's own docstring (not one inherited from a base class).

    That is the first line, joined with the lines that continue it up to the first blank line,
    because many summaries wrap at the line length and a cut line would end mid-sentence.
    """
    docstring = inspect.cleandoc(getattr(component, "__doc__", None) or "")
    return " ".join(docstring.split("\n\n", 1)[0].split())


def _component_table(key: str, registry: KitRegistry, names: list[str]) -> Table:
    """One table titled ``key``: each registered name and its docstring summary."""
    table = Table(title=key, title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("summary")
    for name in names:
        table.add_row(name, _summary(registry.get(name)))
    if not names:
        table.add_row("-", "nothing registered")
    return table


@app.command("list")
def list_components(
    kind: Annotated[
        str | None,
        typer.Argument(
            help=f"Registry to show, plural or singular: {', '.join(ALL_REGISTRIES)}. "
            "All of them when left out.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List the registered components of every registry, or of one."""
    keys = list(ALL_REGISTRIES) if kind is None else [_registry_key(kind)]
    console = Console()
    listed = 0
    for key in keys:
        registry = ALL_REGISTRIES[key]
        try:
            names = registry.known_names()
        except Exception as error:  # a module of the registry failed to import
            reason = (str(error).strip().splitlines() or [""])[0]
            typer.echo(
                f"warning: could not import the {key} registry: {type(error).__name__}: {reason}",
                err=True,
            )
            continue
        console.print(_component_table(key, registry, names))
        listed += 1
    if not listed:
        raise typer.Exit(code=1)
