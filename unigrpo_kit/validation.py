"""Checking a recipe before anything is built: its sections, its keys' types and ranges, and the
constructors of its cheap components.

:func:`validate_recipe` runs inside :func:`unigrpo_kit.recipe.load_recipe`, so every command
(``train``, ``eval``, ``sample``, ``ablate``, ``bench --recipe``) refuses a recipe that cannot
run before a model loads or a work dir is touched. Every failure is a
:class:`~unigrpo_kit.recipe.RecipeError`, one line that names the key (or the section), the value
and what is allowed, e.g. ``recipe key rollout.group_size=-1: must be an int >= 2``.

Keys are checked where the recipe has them; the keys that the trainer reads without a default
(:data:`REQUIRED_KEYS`) must be there. ``model.path`` and ``task.path`` may stay None (the
Hugging Face and diffusers recipes ship that way): their builders fail with one line of their own
once something needs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .recipe import RecipeError
from .trackers import TRACKERS

# The sections of a runnable recipe, in the order a reader meets them in recipes/.
REQUIRED_SECTIONS = (
    "model",
    "task",
    "reward",
    "algorithm",
    "optimizer",
    "rollout",
    "schedule",
    "evaluation",
    "seed",
)
# The most evaluation prompts one ``eval`` scores: ``evaluation.num_prompts`` may not exceed it and
# ``eval --num-prompts`` is capped at it (10 000 greedy episodes take minutes on the tiny model and
# hours on a real one; the reported ShapeWorld score uses 140).
MAX_EVAL_PROMPTS = 10_000
ROLLOUT_MODES = ("text", "image", "unified")
_MISSING = object()


@dataclass(frozen=True)
class Check:
    """One rule: ``accepts(value)`` says whether a value is allowed; ``allowed`` says which are,
    in words that finish "must be ..."."""

    accepts: Callable[[Any], bool]
    allowed: str


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int in Python


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int | None = None, why: str = "") -> Check:
    """An int (not a bool) in ``[low, high]``."""
    words = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    return Check(
        lambda v: _is_int(v) and v >= low and (high is None or v <= high),
        words + (f" ({why})" if why else ""),
    )


def number(low: float, *, above: bool = False, below: float | None = None) -> Check:
    """A finite int or float (not a bool) >= ``low`` (> ``low`` with ``above``), and <
    ``below`` when given."""
    words = f"a number {'>' if above else '>='} {low:g}"
    if below is not None:
        words += f" and < {below:g}"

    def accepts(value) -> bool:
        if not _is_number(value):
            return False
        if (value <= low) if above else (value < low):
            return False
        return below is None or value < below

    return Check(accepts, words)


def boolean() -> Check:
    """True or False (not 0 or 1, not a string)."""
    return Check(lambda v: isinstance(v, bool), "True or False")


def one_of(*choices: str) -> Check:
    """One of the given strings."""
    return Check(lambda v: isinstance(v, str) and v in choices, f"one of {', '.join(choices)}")


def optional(check: Check, none_means: str = "") -> Check:
    """``check``, or None (which means ``none_means``)."""
    words = f"{check.allowed}, or None" + (f" ({none_means})" if none_means else "")
    return Check(lambda v: v is None or check.accepts(v), words)


def _split_names(value) -> bool:
    if isinstance(value, str):
        return bool(value)
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, str) and v for v in value)
    )


def _betas(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(_is_number(b) and 0 <= b < 1 for b in value)
    )


def _component(value) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("type"), str)


COMPONENT = Check(_component, "a dict with a type, e.g. dict(type='FlowSDE')")
SAMPLER_TOKENS = integer(1)
SAMPLER_TEMPERATURE = number(0)

# key -> rule, checked where the recipe has the key.
RULES: dict[str, Check] = {
    "seed": integer(0),
    "threads": optional(integer(1), "torch's default number of threads"),
    "rollout.mode": one_of(*ROLLOUT_MODES),
    "rollout.reasoning": boolean(),
    "rollout.prompts_per_step": integer(1),
    "rollout.group_size": integer(
        2, why="a group-relative advantage compares at least 2 episodes of one prompt"
    ),
    "rollout.num_steps": integer(1),
    "rollout.shift": number(0, above=True),
    "rollout.max_rounds": integer(1),
    "rollout.guidance_scale": number(0),
    "rollout.shared_noise": boolean(),
    "rollout.guided_members": integer(0),
    "rollout.split_groups": boolean(),
    "rollout.prompt_splits": Check(
        _split_names, "a split name or a list of them, e.g. 'train' or ['train', 'pretrain']"
    ),
    "rollout.text_sampler": COMPONENT,
    "rollout.text_sampler.max_new_tokens": SAMPLER_TOKENS,
    "rollout.text_sampler.temperature": SAMPLER_TEMPERATURE,
    "rollout.reflection_sampler": optional(COMPONENT),
    "rollout.reflection_sampler.max_new_tokens": SAMPLER_TOKENS,
    "rollout.reflection_sampler.temperature": SAMPLER_TEMPERATURE,
    "rollout.image_sampler": COMPONENT,
    "rollout.window": COMPONENT,
    "algorithm.advantage": COMPONENT,
    "algorithm.text_loss": COMPONENT,
    "algorithm.image_loss": COMPONENT,
    "algorithm.regularizers": Check(
        lambda v: isinstance(v, (list, tuple)) and all(_component(r) for r in v),
        "a list of dicts with a type, e.g. [dict(type='TokenKL', weight=0.04)], or []",
    ),
    "algorithm.inner_epochs": integer(1),
    "algorithm.minibatch_size": integer(1),
    "algorithm.grad_clip": number(0, above=True),
    "algorithm.self_check_tol": number(0, above=True),
    "algorithm.image_loss_weight": number(0),
    "algorithm.image_reward": optional(COMPONENT),
    "algorithm.image_reward_weight": number(0),
    "algorithm.guided_image_advantage": one_of("shared", "sampled"),
    "algorithm.skip_zero_advantage": boolean(),
    "algorithm.max_skipped_updates": integer(1),
    "optimizer.lr_text": number(0),
    "optimizer.lr_image": number(0),
    "optimizer.eps_text": number(0, above=True),
    "optimizer.eps_image": number(0, above=True),
    "optimizer.betas": Check(_betas, "a pair of numbers in [0, 1), e.g. (0.9, 0.999)"),
    "optimizer.weight_decay": number(0),
    "optimizer.warmup_steps": integer(0),
    "schedule.steps": integer(1),
    "schedule.save_every": optional(integer(0), "like 0: save at the last step only"),
    "schedule.sample_every": optional(integer(0), "like 0: no sample grids"),
    "schedule.log_every": optional(integer(0), "like 0: log lines at the first and last step only"),
    "evaluation.num_prompts": integer(1, MAX_EVAL_PROMPTS),
    "evaluation.steps": integer(1),
    "evaluation.seed": integer(0),
    "evaluation.split": Check(lambda v: isinstance(v, str) and bool(v), "a split, e.g. 'eval'"),
    "evaluation.guidance_scale": number(0),
    "distributed.strategy": Check(
        lambda v: v in ("ddp", "fsdp2"),
        "'ddp' (replicas, gradients all-reduced) or 'fsdp2' (parameters and optimizer state "
        "sharded with fully_shard; docs/distributed.md)",
    ),
    "distributed.param_dtype": Check(
        lambda v: v is None or v in ("float32", "bfloat16", "float16"),
        "None (the model's own dtype), 'float32', 'bfloat16' or 'float16': the dtype FSDP2 "
        "gathers parameters in",
    ),
    "distributed.backend": Check(
        lambda v: v in ("auto", "gloo", "nccl"), "'auto' (NCCL on CUDA, else gloo), 'gloo', 'nccl'"
    ),
    "distributed.timeout_s": number(0, above=True),
    "trackers": Check(
        lambda v: (
            isinstance(v, (list, tuple))
            and all(isinstance(t, Mapping) and t.get("type") in TRACKERS for t in v)
        ),
        "a list of dict(type='wandb' | 'mlflow', ...) (TensorBoard is always on), or []",
    ),
}

# Keys the trainer and the evaluation read without a default.
REQUIRED_KEYS = (
    "rollout.mode",
    "rollout.reasoning",
    "rollout.prompts_per_step",
    "rollout.group_size",
    "algorithm.advantage",
    "algorithm.inner_epochs",
    "algorithm.minibatch_size",
    "algorithm.grad_clip",
    "algorithm.self_check_tol",
    "optimizer.betas",
    "optimizer.weight_decay",
    "schedule.steps",
    "schedule.save_every",
    "schedule.sample_every",
    "evaluation.num_prompts",
    "evaluation.seed",
)


# ----------------------------------------------------------------------------- lookups
def lookup(tree: Mapping, key: str):
    """The value at a dotted ``key`` of a nested dict, or ``_MISSING`` (also below a value that
    is not a dict, such as a None sampler)."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _show(value) -> str:
    """A value as a recipe would write it, cut to one short line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# ----------------------------------------------------------------------------- the checks
def check_sections(tree: Mapping, source: str) -> None:
    """An empty recipe, or one that lacks sections, named in one line."""
    if not tree:
        raise RecipeError(
            f"recipe {source} is empty: a recipe defines {', '.join(REQUIRED_SECTIONS)} "
            "(start from recipes/unified_single_round.py or inherit it with _base_)"
        )
    missing = [name for name in REQUIRED_SECTIONS if name not in tree]
    if missing:
        raise RecipeError(
            f"recipe {source} lacks the section{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}: a runnable recipe defines {', '.join(REQUIRED_SECTIONS)} "
            "(see recipes/unified_single_round.py)"
        )
    for name in REQUIRED_SECTIONS:
        if name != "seed" and not isinstance(tree[name], Mapping):
            raise RecipeError(
                f"recipe section {name}={_show(tree[name])}: must be a dict, e.g. "
                f"{name} = dict(...) as in recipes/unified_single_round.py"
            )
    for name in ("task", "reward"):
        if not isinstance(tree[name].get("type"), str):
            raise RecipeError(
                f"recipe key {name}.type={_show(tree[name].get('type'))}: must name a "
                f"registered {name} (unigrpo-kit list {name}s)"
            )


def check_rules(tree: Mapping) -> None:
    """Every key of :data:`REQUIRED_KEYS` present, every key of :data:`RULES` that the recipe
    has within its range."""
    for key in REQUIRED_KEYS:
        if lookup(tree, key) is _MISSING:
            raise RecipeError(f"recipe key {key} is missing: set it to {RULES[key].allowed}")
    for key, rule in RULES.items():
        value = lookup(tree, key)
        if value is not _MISSING and not rule.accepts(value):
            raise RecipeError(f"recipe key {key}={_show(value)}: must be {rule.allowed}")


def _reward_needs_images(reward_cfg: Mapping) -> bool:
    from .registry import REWARDS

    try:
        return "images" in getattr(REWARDS.get(reward_cfg["type"]), "needs", ())
    except Exception:  # an unknown type: reported when the reward is built
        return False


def check_mode_keys(tree: Mapping) -> None:
    """The keys that ``rollout.mode`` and ``rollout.reasoning`` make necessary."""
    mode = tree["rollout"]["mode"]
    needed = []
    if mode in ("text", "unified"):
        needed.append(("algorithm.text_loss", f"rollout.mode={mode!r} trains text"))
    if mode in ("image", "unified"):
        needed.append(("algorithm.image_loss", f"rollout.mode={mode!r} trains images"))
        needed.append(("rollout.window", f"rollout.mode={mode!r} trains SDE-window steps"))
        needed.append(("rollout.image_sampler", f"rollout.mode={mode!r} paints"))
    elif _reward_needs_images(tree["reward"]):
        needed.append(("rollout.image_sampler", "the reward looks at images"))
    if tree["rollout"]["reasoning"]:
        needed.append(("rollout.text_sampler", "rollout.reasoning=True writes a reasoning"))
    if mode == "text" and lookup(tree, "algorithm.image_reward") not in (_MISSING, None):
        raise RecipeError(
            "recipe key algorithm.image_reward: a reward for the painter's steps, but "
            "rollout.mode='text' trains no image; remove it or use mode 'unified' or 'image'"
        )
    for key, reason in needed:
        if lookup(tree, key) in (_MISSING, None):
            raise RecipeError(
                f"recipe key {key} is missing: {reason}; set it to {RULES[key].allowed}"
            )


def _builtin_only(spec, registry) -> bool:
    """Whether every ``type`` in ``spec`` (nested dicts and lists too) is a kit component,
    known to be cheap to build (a user's reward may load a model)."""
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        if isinstance(kind, str):
            try:
                module = getattr(registry.get(kind), "__module__", "")
            except Exception:
                return True  # unknown: building it reports the closest names
            if not module.startswith("unigrpo_kit."):
                return False
        return all(_builtin_only(v, registry) for v in spec.values())
    if isinstance(spec, (list, tuple)):
        return all(_builtin_only(v, registry) for v in spec)
    return True


def _unset_path(spec: Mapping) -> bool:
    """A ``path`` the user has yet to set (None): the component is built later, or stood in
    for by ``--dry-run``."""
    return "path" in spec and spec["path"] is None


def _build(registry, spec: Mapping, key: str):
    """``registry.build(spec)``, its constructor's complaint as a :class:`RecipeError` that
    names ``key``."""
    from .registry import UnknownComponentError

    try:
        return registry.build(dict(spec))
    except UnknownComponentError as error:
        raise RecipeError(f"recipe key {key}: {error}") from None
    except (TypeError, ValueError, KeyError, OSError) as error:
        hint = ""
        if isinstance(error, TypeError):  # e.g. '<' between an int and a str: name the strings
            words = [f"{k}={v!r}" for k, v in spec.items() if k != "type" and isinstance(v, str)]
            hint = f" (check {', '.join(words)}: a string where a number belongs?)" if words else ""
        raise RecipeError(
            f"recipe key {key} ({spec.get('type')}): {_first_line(error)}{hint}"
        ) from None


def component_specs(tree: Mapping) -> list[tuple[str, str, Mapping]]:
    """(registry name, key, spec) of every component the recipe names that is cheap to build."""
    roll, algo = tree["rollout"], tree["algorithm"]
    specs = [("ADVANTAGES", "algorithm.advantage", algo["advantage"])]
    for name in ("text_loss", "image_loss"):
        if _component(algo.get(name)):
            specs.append(("LOSSES", f"algorithm.{name}", algo[name]))
    for index, spec in enumerate(algo.get("regularizers", [])):
        specs.append(("REGULARIZERS", f"algorithm.regularizers[{index}]", spec))
    for name in ("text_sampler", "reflection_sampler", "image_sampler", "window"):
        if _component(roll.get(name)):
            specs.append(("SAMPLERS", f"rollout.{name}", roll[name]))
    return specs


def check_components(tree: Mapping) -> None:
    """Build the samplers, losses, advantage and regularizers (and the task and reward where
    they are the kit's own and have their paths), so that their constructors' checks fire now;
    and check that the SDE window fits ``rollout.num_steps``."""
    from . import registry

    built = {}
    for registry_name, key, spec in component_specs(tree):
        built[key] = _build(getattr(registry, registry_name), spec, key)
    extra = tree["algorithm"].get("image_reward")
    image_reward = [("algorithm.image_reward", extra)] if _component(extra) else []
    for key, spec in [("task", tree["task"]), ("reward", tree["reward"]), *image_reward]:
        reg = registry.TASKS if key == "task" else registry.REWARDS
        if not _unset_path(spec) and _builtin_only(spec, reg):
            _build(reg, spec, key)
    window = built.get("rollout.window")
    if window is not None and tree["rollout"]["mode"] in ("image", "unified"):
        _check_window(window, tree["rollout"].get("num_steps", 10))


def _check_window(window, num_steps: int) -> None:
    """The SDE window against the schedule it selects from (a throwaway generator: the global
    random state is left as it was)."""
    import torch

    try:
        window.select(num_steps, generator=torch.Generator().manual_seed(0), progress=0.0)
    except (TypeError, ValueError) as error:
        raise RecipeError(
            f"recipe key rollout.window does not fit rollout.num_steps={num_steps}: "
            f"{_first_line(error)}"
        ) from None


def validate_recipe(cfg, source: str | None = None) -> None:
    """Raise a one-line :class:`RecipeError` unless ``cfg`` (an mmengine ``Config``) is a
    runnable recipe: its sections (:data:`REQUIRED_SECTIONS`), its keys' types and ranges
    (:data:`RULES`, :data:`REQUIRED_KEYS`), the keys its mode needs, and its cheap components'
    own constructor checks. ``source`` names the recipe in the messages."""
    tree = cfg._cfg_dict.to_dict() if hasattr(cfg, "_cfg_dict") else dict(cfg)
    source = source or getattr(cfg, "filename", None) or "(in memory)"
    check_sections(tree, source)
    check_rules(tree)
    check_mode_keys(tree)
    check_components(tree)


# ----------------------------------------------------------------------------- eval size
def eval_split_size(task, split: str) -> int | None:
    """How many prompts the task's ``split`` holds, where it is a finite list (a prompt file's);
    None for a task that generates its prompts (ShapeWorld, Arithmetic)."""
    splits = getattr(task, "splits", None)
    if isinstance(splits, Mapping) and isinstance(splits.get(split), (list, tuple)):
        return len(splits[split])
    return None


def cap_num_prompts(requested: int, split_size: int | None = None) -> tuple[int, str | None]:
    """``requested`` evaluation prompts capped at the split's size and at
    :data:`MAX_EVAL_PROMPTS`: (the number to evaluate, a one-line note when capped, else None)."""
    if split_size is not None and 0 < split_size < requested:
        return split_size, (
            f"--num-prompts {requested} is more than the {split_size} prompts of the task's eval "
            f"split; evaluating {split_size}"
        )
    if requested > MAX_EVAL_PROMPTS:
        return MAX_EVAL_PROMPTS, (
            f"--num-prompts {requested} is more than the maximum {MAX_EVAL_PROMPTS} "
            f"(unigrpo_kit.validation.MAX_EVAL_PROMPTS); evaluating {MAX_EVAL_PROMPTS}"
        )
    return requested, None
