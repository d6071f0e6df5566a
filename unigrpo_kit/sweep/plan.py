"""Planning an ablation sweep: grid parsing, cells, run folders and their files.

See :mod:`unigrpo_kit.sweep` for the command and the layout of a sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import runpy
import types
from dataclasses import dataclass, field
from pathlib import Path

from ..recipe import RecipeError, check_key, load_recipe, parse_value

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
    base_options: tuple[str, ...] = ()  # the options every run shares (no cell's overrides)


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
    if any(cell.name == "untrained_base" for cell in cells):
        raise GridError("a variant may not be named untrained_base: the base row's folder")
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
    return Sweep(recipe, sweep_root, spec, cells, runs, tuple(base))


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
