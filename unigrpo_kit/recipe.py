"""Loading recipes (mmengine ``.py`` configs) and applying ``--cfg-options key=value`` overrides.

Every failure here is a :class:`RecipeError`: one line that says what was wrong, where (the
file or the key) and what would be right.
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

from mmengine.config import Config


class RecipeError(ValueError):
    """A recipe that cannot be used as written."""


def flat_keys(tree, prefix: str = "") -> list[str]:
    """Every dotted key of a nested dict, e.g. ``rollout.text_sampler.temperature``."""
    keys = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict):
            keys.extend(flat_keys(value, dotted + "."))
    return keys


def parse_value(text: str):
    """A Python literal where the text is one (``3``, ``1e-4``, ``(0, 5)``, ``None``), else the
    string itself (``FlowSDE``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_key(cfg: Config, key: str, source: str = "--cfg-options") -> None:
    """Raise a :class:`RecipeError` naming the closest real keys if ``key`` is not in ``cfg``."""
    node = cfg._cfg_dict.to_dict()
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            known = flat_keys(cfg._cfg_dict.to_dict())
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            if not close:
                parent = ".".join(parts[:depth])
                close = [k for k in known if k.rsplit(".", 1)[0] == parent][:5] if parent else []
            hint = f"closest keys: {', '.join(close)}" if close else "no similar key"
            raise RecipeError(f"{source} key {key!r} is not in the recipe; {hint}")
        node = node[part]


def _get(cfg: Config, key: str):
    node = cfg._cfg_dict.to_dict()
    for part in key.split("."):
        node = node[part]
    return node


def check_recipe_path(path: Path) -> None:
    """A one-line :class:`RecipeError` unless ``path`` is a recipe file that exists."""
    if path.is_dir():
        raise RecipeError(
            f"recipe {str(path)!r} is a directory, not a recipe file; pass a .py file such as "
            "recipes/unified_single_round.py"
        )
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist; see recipes/ for examples")


def load_recipe(
    path: str | Path, options: list[str] | None = None, *, validate: bool = True
) -> Config:
    """The recipe at ``path`` with ``key=value`` overrides applied (each key must exist), checked
    by :func:`unigrpo_kit.validation.validate_recipe` (sections, key types and ranges, the cheap
    components' constructors) unless ``validate`` is False (a partial recipe, e.g. a
    ``_base_`` file)."""
    path = Path(path)
    check_recipe_path(path)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RecipeError(f"recipe {path} could not be read: {first}") from error
    overrides = {}
    for option in options or []:
        if "=" not in option:
            raise RecipeError(
                f"--cfg-options {option!r} is not key=value (e.g. rollout.group_size=4)"
            )
        key, value = option.split("=", 1)
        check_key(cfg, key)
        value = parse_value(value)
        if isinstance(value, dict) and not isinstance(_get(cfg, key), dict):
            value = {"_delete_": True, **value}  # a dict where the recipe has None or a scalar
        overrides[key] = value
    if overrides:
        cfg.merge_from_dict(overrides)
    if validate:
        from .validation import validate_recipe

        validate_recipe(cfg, source=str(path))
    cfg.recipe_name = path.stem
    return cfg
