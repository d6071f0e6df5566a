"""One mmengine ``Registry`` per component kind, and nothing else.

Each registry imports its ``locations`` lazily the first time a name is looked up, so
``SAMPLERS.build(dict(type="FlowSDE"))`` works without importing ``unigrpo_kit.samplers``
by hand. An unknown ``type`` raises :class:`UnknownComponentError`, a one-line message that
names the registry and the closest registered names.
"""

from __future__ import annotations

import difflib
from typing import Any

from mmengine.registry import Registry


class UnknownComponentError(KeyError):
    """A ``type`` that no registry entry matches. ``str()`` is the one-line message."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class KitRegistry(Registry):
    """An mmengine ``Registry`` whose unknown names fail with a short, helpful line."""

    def known_names(self) -> list[str]:
        """Sorted names of every registered component, after the lazy import."""
        self.import_from_location()
        return sorted(self._module_dict)

    def get(self, key: str) -> Any:
        if isinstance(key, str) and "." not in key:
            self.import_from_location()
            if key not in self._module_dict:
                raise UnknownComponentError(self.unknown_message(key))
            return self._module_dict[key]
        return super().get(key)

    def __contains__(self, key: object) -> bool:
        try:
            return super().get(key) is not None  # type: ignore[arg-type]
        except Exception:
            return False

    def unknown_message(self, key: str) -> str:
        names = self.known_names()
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(names)}"
        return f"unknown {self.name} type {key!r}; {hint}"


# Each package's __init__ imports the modules that register its components.
MODELS = KitRegistry("model", locations=["unigrpo_kit.models"])
SAMPLERS = KitRegistry("sampler", locations=["unigrpo_kit.samplers"])
LOSSES = KitRegistry("loss", locations=["unigrpo_kit.losses"])
ADVANTAGES = KitRegistry("advantage", locations=["unigrpo_kit.advantages"])
REGULARIZERS = KitRegistry("regularizer", locations=["unigrpo_kit.regularizers"])
REWARDS = KitRegistry("reward", locations=["unigrpo_kit.rewards"])
TASKS = KitRegistry("task", locations=["unigrpo_kit.tasks"])

ALL_REGISTRIES: dict[str, KitRegistry] = {
    "models": MODELS,
    "samplers": SAMPLERS,
    "losses": LOSSES,
    "advantages": ADVANTAGES,
    "regularizers": REGULARIZERS,
    "rewards": REWARDS,
    "tasks": TASKS,
}
