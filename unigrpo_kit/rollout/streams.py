"""Random streams that belong to episodes, not to processes.

A training step draws its randomness (which prompts, which tokens, which noise, which SDE
window, which minibatch order) from streams derived from the run's seed, the step and what the
draw is for, never from a process-wide generator or the rank:

    stream(seed, step, purpose, group, member) = Generator(blake2b(seed, step, purpose, ...))

so an episode is the same whether it is sampled alone or in a batch, on one process or on
rank 3 of 8 (up to floating-point rounding of the batched model). :class:`RowStreams` holds one
such generator per row of a batch; :func:`~unigrpo_kit.devices.randn` and
:func:`~unigrpo_kit.devices.multinomial` draw each row from its own. Each rollout phase (the
reasoning, each painting and reflection round) takes fresh generators (:meth:`RowStreams.phase`),
so how many tokens one phase drew for a batch never shifts the next phase's draws.
Batch-level draws (the SDE window, shared by the rows of one painting round) come from
:meth:`RowStreams.shared`, the same on every rank.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import torch


def derive_seed(*keys) -> int:
    """A 63-bit seed from any ints and strings (stable across processes and Python runs)."""
    text = "/".join(str(k) for k in keys).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(*keys) -> torch.Generator:
    """A CPU generator seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def python_rng(*keys) -> random.Random:
    """A ``random.Random`` seeded with :func:`derive_seed` of ``keys`` (prompt sampling)."""
    return random.Random(derive_seed(*keys))


class RowStreams:
    """One generator per row of a batch; a row is ``(group, member)`` of the step's episodes.

    ``root``: the keys every stream starts from (``(seed, step)`` in training). ``rows``:
    ``(group, member)`` per row, in batch order (global indices, whatever process holds them).
    """

    device = torch.device("cpu")  # draws are made on the CPU, like the trainer's generator

    def __init__(self, root: Sequence, rows: Sequence[tuple[int, int]], purpose: str = "start"):
        self.root = tuple(root)
        self.rows = [tuple(r) for r in rows]
        self.purpose = purpose
        self.generators = [generator(*self.root, purpose, g, m) for g, m in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def phase(self, purpose: str, *, per_group: bool = False) -> RowStreams:
        """Fresh streams for ``purpose`` (e.g. ``"reason"``, ``"paint1"``); ``per_group``: every
        member of a group draws from the same stream (one noise per group)."""
        rows = [(g, 0) for g, _ in self.rows] if per_group else self.rows
        streams = RowStreams(self.root, rows, purpose)
        if per_group:
            streams.rows = list(self.rows)
        return streams

    def select(self, rows: torch.Tensor | Sequence[int]) -> RowStreams:
        """The streams of some rows (the same generator objects: draws advance them)."""
        index = rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)
        chosen = RowStreams.__new__(RowStreams)
        chosen.root, chosen.purpose = self.root, self.purpose
        chosen.rows = [self.rows[i] for i in index]
        chosen.generators = [self.generators[i] for i in index]
        return chosen

    def shared(self, purpose: str) -> torch.Generator:
        """One generator for a draw shared by the whole batch (the same on every rank)."""
        return generator(*self.root, purpose, "shared")

    def randn(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[len(self), *shape[1:]]`` standard normal noise, row i from generator i."""
        if shape[0] != len(self):
            raise ValueError(f"RowStreams: {len(self)} rows cannot draw noise of shape {shape}")
        rest = tuple(shape[1:])
        if not self.generators:
            return torch.empty((0, *rest), dtype=dtype)
        return torch.stack([torch.randn(rest, generator=g, dtype=dtype) for g in self.generators])

    def multinomial(self, probs: torch.Tensor, num_samples: int) -> torch.Tensor:
        """``[B, num_samples]`` draws from ``probs`` [B, V] (CPU), row i from generator i."""
        if probs.shape[0] != len(self):
            raise ValueError(f"RowStreams: {len(self)} rows cannot sample {probs.shape[0]} rows")
        if not self.generators:
            return torch.empty((0, num_samples), dtype=torch.long)
        return torch.stack(
            [
                torch.multinomial(p, num_samples, generator=g)
                for p, g in zip(probs, self.generators, strict=True)
            ]
        )


def phase(generator, purpose: str, *, per_group: bool = False):
    """:meth:`RowStreams.phase` for row streams; a plain generator is returned as it is."""
    if isinstance(generator, RowStreams):
        return generator.phase(purpose, per_group=per_group)
    return generator


def shared(generator, purpose: str):
    """:meth:`RowStreams.shared` for row streams; a plain generator is returned as it is."""
    if isinstance(generator, RowStreams):
        return generator.shared(purpose)
    return generator
