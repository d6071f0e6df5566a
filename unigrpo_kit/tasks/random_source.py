"""The random source a task draws prompts from: the caller's, a seed's, or the task's own."""

from __future__ import annotations

import random


def as_rng(generator: random.Random | int | None, fallback: random.Random) -> random.Random:
    """``generator`` itself (a ``random.Random``), a new one seeded with it (an int), or
    ``fallback`` (None); a one-line error for anything else."""
    if generator is None:
        return fallback
    if isinstance(generator, random.Random):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return random.Random(generator)
    raise ValueError(f"generator must be a random.Random, an int seed or None, got {generator!r}")
