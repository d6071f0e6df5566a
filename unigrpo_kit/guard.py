"""The numerical guard: non-finite numbers stop at the update, the sampler or the checkpoint.

A loss or gradient that is not finite skips its update (the trainer counts it,
``guard/skipped_steps``, and stops after ``algorithm.max_skipped_updates`` in a row); a policy
whose next-token probabilities are not finite stops the rollout with one line; a policy with
non-finite weights is never saved and never evaluated.
"""

from __future__ import annotations

import math

import torch


class RunStopped(RuntimeError):
    """The trainer stopped a run on purpose; ``str()`` is the one-line reason."""


class NonFiniteError(RunStopped):
    """A non-finite loss, gradient, probability or weight stopped the run."""


class InvalidRewardError(RunStopped):
    """Too many steps in a row had no valid reward."""


def non_finite_part(loss: torch.Tensor, parts: dict[str, float]) -> str | None:
    """The first logged loss part (``loss/text``, ``loss/image``, ``reg/<name>``) that is not
    finite, "total loss" when only their sum is not, or None when the loss is finite."""
    if bool(torch.isfinite(loss.detach())):
        return None
    for key, value in parts.items():
        if key.startswith(("loss/", "reg/")) and not math.isfinite(value):
            return key
    return "total loss"


def require_finite_weights(module: torch.nn.Module, action: str) -> None:
    """Raise :class:`NonFiniteError` naming the first parameter that holds inf or NaN."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(
                f"refusing to {action}: weight {name!r} holds inf or NaN (a diverged run); "
                "use an earlier checkpoint"
            )
