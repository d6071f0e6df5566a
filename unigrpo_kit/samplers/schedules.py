"""Sigma schedules and the choice of which denoising steps are SDE (trained) steps.

A rollout of ``num_steps`` denoising steps runs step ``i`` from ``sigmas[i]`` to
``sigmas[i + 1]``. A window selector returns a mask [num_steps] that is True where step ``i``
uses the stochastic sampler and is trained, and False where it is a plain ODE step
(Flow-GRPO-Fast, MixGRPO, UniGRPO's hybrid integrator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from unigrpo_kit.registry import SAMPLERS


def shifted_sigmas(num_steps: int, shift: float = 1.0) -> Tensor:
    """Sigmas [num_steps + 1], float32, from 1.0 (noise) down to 0.0 (data).

    SD3's timestep shift (Esser et al., arXiv 2403.03206) applied to a linear grid:
        sigma' = shift * sigma / (1 + (shift - 1) * sigma)
    ``shift > 1`` spends more steps at high noise (UniGRPO and SD3 use 3); ``shift = 1`` keeps
    the grid linear.
    """
    _check_num_steps(num_steps)
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift}")
    # float64 first so that the float32 result is the correctly rounded value of the formula.
    linear = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    # sigma' = shift sigma / (1 + (shift - 1) sigma)
    shifted = shift * linear / (1 + (shift - 1) * linear)
    return shifted.to(torch.float32)


class SDEWindow:
    """Chooses the SDE steps of one rollout. Subclasses implement ``select``."""

    def select(
        self,
        num_steps: int,
        *,
        generator: torch.Generator | None = None,
        progress: float = 0.0,
    ) -> Tensor:
        """Bool mask [num_steps], True where the step is an SDE (trained) step.

        generator: a CPU ``torch.Generator`` for the random choices (None: the global one).
        progress: the fraction of training done, in [0, 1].
        """
        raise NotImplementedError


@SAMPLERS.register_module()
class FullWindow(SDEWindow):
    """Every step is an SDE step: plain Flow-GRPO (arXiv 2505.05470) and DanceGRPO.

    Flow-GRPO's reference code leaves the last step out of training; for that use
    ``FixedWindow(window_size=num_steps - 1, window_range=(0, num_steps - 1))``.
    """

    def select(
        self,
        num_steps: int,
        *,
        generator: torch.Generator | None = None,
        progress: float = 0.0,
    ) -> Tensor:
        _check_num_steps(num_steps)
        _check_progress(progress)
        return torch.ones(num_steps, dtype=torch.bool)

    def __repr__(self) -> str:
        return "FullWindow()"


@SAMPLERS.register_module()
class FixedWindow(SDEWindow):
    """Flow-GRPO-Fast's window (arXiv 2505.05470): ``window_size`` consecutive SDE steps.

    Per rollout the window's start is drawn uniformly from ``lo .. hi - window_size``, so that
    the window ``[start, start + window_size)`` lies inside ``window_range = (lo, hi)``
    (half-open; default: the whole schedule). UniGRPO (arXiv 2603.23500) uses a window of 3
    inside steps ``[0, 5)``.
    """

    def __init__(self, window_size: int, window_range: Sequence[int] | None = None) -> None:
        self.window_size = _check_window_size(window_size)
        self.window_range = _check_window_range(window_range, self.window_size)

    def select(
        self,
        num_steps: int,
        *,
        generator: torch.Generator | None = None,
        progress: float = 0.0,
    ) -> Tensor:
        _check_progress(progress)
        low, high = _resolve_range(self.window_range, self.window_size, num_steps)
        start = int(torch.randint(low, high - self.window_size + 1, (1,), generator=generator))
        return _window_mask(num_steps, start, self.window_size)

    def __repr__(self) -> str:
        return f"FixedWindow(window_size={self.window_size}, window_range={self.window_range})"


@SAMPLERS.register_module()
class SlidingWindow(SDEWindow):
    """MixGRPO's sliding window (Li et al., arXiv 2507.21802): the window moves with training.

    MixGRPO advances the window's start by ``stride`` steps every ``tau`` iterations, from the
    first step toward the last. Here the clock is ``progress`` in [0, 1]: with
    ``K = ceil((hi - window_size - lo) / stride) + 1`` start positions,
        start = min(lo + stride * floor(progress * K), hi - window_size)
    i.e. every position gets an equal share 1/K of training (``tau = total / K``), progress 0
    gives the first position and progress 1 the last. ``window_range = (lo, hi)`` restricts the
    slide as in :class:`FixedWindow` (default: the whole schedule). No randomness.
    """

    def __init__(
        self,
        window_size: int,
        stride: int = 1,
        window_range: Sequence[int] | None = None,
    ) -> None:
        self.window_size = _check_window_size(window_size)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"SlidingWindow stride must be an int >= 1, got {stride!r}")
        self.stride = stride
        self.window_range = _check_window_range(window_range, self.window_size)

    def select(
        self,
        num_steps: int,
        *,
        generator: torch.Generator | None = None,
        progress: float = 0.0,
    ) -> Tensor:
        _check_progress(progress)
        low, high = _resolve_range(self.window_range, self.window_size, num_steps)
        last_start = high - self.window_size
        num_positions = -(-(last_start - low) // self.stride) + 1
        position = min(math.floor(progress * num_positions), num_positions - 1)
        start = min(low + self.stride * position, last_start)
        return _window_mask(num_steps, start, self.window_size)

    def __repr__(self) -> str:
        return (
            f"SlidingWindow(window_size={self.window_size}, stride={self.stride}, "
            f"window_range={self.window_range})"
        )


def _window_mask(num_steps: int, start: int, window_size: int) -> Tensor:
    mask = torch.zeros(num_steps, dtype=torch.bool)
    mask[start : start + window_size] = True
    return mask


def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")


def _check_progress(progress: float) -> None:
    if not 0 <= progress <= 1:
        raise ValueError(f"progress is the fraction of training done, in [0, 1]; got {progress}")


def _check_window_size(window_size: int) -> int:
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"window_size must be an int >= 1, got {window_size!r}")
    return window_size


def _check_window_range(
    window_range: Sequence[int] | None, window_size: int
) -> tuple[int, int] | None:
    """``window_range`` as a (lo, hi) tuple after the checks that need no schedule length."""
    if window_range is None:
        return None
    if len(window_range) != 2 or not all(
        isinstance(bound, int) and not isinstance(bound, bool) for bound in window_range
    ):
        raise ValueError(f"window_range must be two ints (lo, hi), got {window_range!r}")
    low, high = window_range
    if low < 0 or high - low < window_size:
        raise ValueError(
            f"window_range=({low}, {high}) must have 0 <= lo and hi - lo >= "
            f"window_size={window_size}"
        )
    return (low, high)


def _resolve_range(
    window_range: tuple[int, int] | None, window_size: int, num_steps: int
) -> tuple[int, int]:
    """(lo, hi) for a schedule of ``num_steps`` steps, checked against its length."""
    _check_num_steps(num_steps)
    if window_size > num_steps:
        raise ValueError(
            f"window_size={window_size} is larger than the schedule's num_steps={num_steps}; "
            f"use window_size <= {num_steps}"
        )
    if window_range is None:
        return 0, num_steps
    low, high = window_range
    if high > num_steps:
        raise ValueError(
            f"window_range=({low}, {high}) reaches past the schedule's num_steps={num_steps}; "
            f"use hi <= {num_steps}"
        )
    return low, high
