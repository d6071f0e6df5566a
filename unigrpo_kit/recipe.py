"""Loading recipes (mmengine ``.py`` configs) and applying ``--cfg-options key=value`` overrides.

Every failure here is a :class:`RecipeError`: one line that says what was wrong, where (the
file or the key) and what would be right.
"""

from __future__ import annotations

import ast
import difflib
import inspect
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
    """Raise a :class:`RecipeError` naming the closest real keys if ``key`` is not in ``cfg``
    and is not an optional key the kit reads (:data:`unigrpo_kit.validation.RULES`, e.g.
    ``algorithm.image_reward``, which the built-in recipes leave out)."""
    from .validation import RULES

    if key in RULES:
        return
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


def check_recipe_path(path: Path) -> None:
    """A one-line :class:`RecipeError` unless ``path`` is a recipe file that exists."""
    if path.is_dir():
        raise RecipeError(
            f"recipe {str(path)!r} is a directory, not a recipe file; pass a .py file such as "
            "recipes/unified_single_round.py"
        )
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist; see recipes/ for examples")


def _parse_options(options: list[str]) -> dict:
    """``key=value`` words to a dict of parsed values, in order."""
    parsed = {}
    for option in options:
        if "=" not in option:
            raise RecipeError(
                f"--cfg-options {option!r} is not key=value (e.g. rollout.group_size=4)"
            )
        key, value = option.split("=", 1)
        parsed[key] = parse_value(value)
    return parsed


def component_class(type_name: str):
    """The class registered as ``type_name`` in any registry, or None."""
    from .registry import ALL_REGISTRIES

    for registry in ALL_REGISTRIES.values():
        if type_name in registry:
            return registry.get(type_name)
    return None


def _arguments(cls) -> tuple[list[str], bool]:
    """The keyword arguments ``cls`` takes, and whether it takes any (``**kwargs``)."""
    if cls.__init__ is object.__init__:
        return [], False
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    names = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind == p.VAR_KEYWORD for p in parameters)


def component_overrides(cfg: Config, parsed: dict) -> dict:
    """The overrides to merge, with components switched by ``BLOCK.type=Name`` rebuilt.

    A key must exist in the recipe, or be an argument of the component class of the block it
    sits in (``reward.url`` when ``reward.type`` is, or becomes, ``RemoteReward``). When a
    block's ``type`` changes, the block keeps only the old keys the new class accepts (the old
    type's other arguments are dropped) plus the overrides given for it; an argument the class
    lacks is refused, naming its closest real arguments."""
    tree = cfg._cfg_dict.to_dict()
    switched = {
        key[: -len(".type")]: value
        for key, value in parsed.items()
        if key.endswith(".type") and isinstance(_lookup(tree, key[: -len(".type")]), dict)
    }
    overrides: dict = {}
    for key, value in parsed.items():
        block, _, argument = key.rpartition(".")
        if block in switched:
            continue  # folded into the rebuilt block below
        if _lookup(tree, key) is _MISSING:
            node = _lookup(tree, block) if block else _MISSING
            kind = node.get("type") if isinstance(node, dict) else None
            cls = component_class(kind) if isinstance(kind, str) else None
            if cls is None:
                check_key(cfg, key)  # raises, naming the closest keys
            _check_argument(cls, argument, key)
        elif isinstance(value, dict) and not isinstance(_lookup(tree, key), dict):
            value = {"_delete_": True, **value}  # a dict where the recipe has None or a scalar
        overrides[key] = value
    for block, kind in switched.items():
        overrides[block] = _rebuilt_block(block, kind, _lookup(tree, block), parsed)
    return overrides


def _rebuilt_block(block: str, kind, old: dict, parsed: dict) -> dict:
    cls = component_class(kind) if isinstance(kind, str) else None
    if cls is None:
        from .registry import ALL_REGISTRIES

        names = [n for registry in ALL_REGISTRIES.values() for n in registry.known_names()]
        close = difflib.get_close_matches(str(kind), names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "`unigrpo-kit list` shows them"
        raise RecipeError(
            f"--cfg-options {block}.type={kind!r} is not a registered component; {hint}"
        )
    names, any_keyword = _arguments(cls)
    rebuilt = {"_delete_": True, "type": kind}
    rebuilt.update({k: v for k, v in old.items() if k != "type" and (any_keyword or k in names)})
    for key, value in parsed.items():
        if key.startswith(block + ".") and key != f"{block}.type":
            argument = key[len(block) + 1 :]
            _check_argument(cls, argument.split(".")[0], key)
            rebuilt[argument] = value
    return rebuilt


def _check_argument(cls, argument: str, key: str) -> None:
    names, any_keyword = _arguments(cls)
    if any_keyword or argument in names:
        return
    close = difflib.get_close_matches(argument, names, n=3, cutoff=0.5) or names[:6]
    raise RecipeError(
        f"--cfg-options key {key!r}: {cls.__name__} takes no argument {argument!r}; "
        f"its arguments: {', '.join(close) or 'none'}"
    )


_MISSING = object()


def _lookup(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


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
    overrides = component_overrides(cfg, _parse_options(options or []))
    if overrides:
        cfg.merge_from_dict(overrides)
    if validate:
        from .validation import validate_recipe

        validate_recipe(cfg, source=str(path))
    cfg.recipe_name = path.stem
    return cfg
