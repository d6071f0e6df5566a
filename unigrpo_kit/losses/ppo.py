"""PPO-clip: the elementwise core that the token loss (GRPO) and the step loss (Flow-GRPO) share.

Also the masked reductions both of them use: verl's four aggregation modes, a masked mean, and
the log-ratio that is masked *before* ``exp()`` so padded garbage never reaches the graph.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from unigrpo_kit.registry import LOSSES

# exp(20) ~ 4.9e8: ratios beyond it carry no information a clip range could use, and exp() of a
# larger log-ratio times an advantage can overflow float32 (verl clamps at the same value).
LOG_RATIO_LIMIT = 20.0

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


class LossOutput(NamedTuple):
    """What every loss returns.

    ``loss`` is a scalar to *minimise*; ``metrics`` maps names to detached scalar float tensors.
    """

    loss: Tensor
    metrics: dict[str, Tensor]


def compute_dtype(tensor: Tensor) -> torch.dtype:
    """float32 for half-precision inputs, float64 kept: the maths never runs below float32."""
    return torch.promote_types(tensor.dtype, torch.float32)


def require_shape(tensor: Tensor, shape: tuple[int, ...] | torch.Size, what: str) -> None:
    """Raise a one-line ``ValueError`` unless ``tensor`` has exactly ``shape``."""
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{what} must have shape {list(shape)}, got {list(tensor.shape)}")


def masked_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor | None = None) -> Tensor:
    """``logp - old_logp`` with invalid entries replaced by exactly 0, in float32 or wider.

    Selecting with ``where`` (not multiplying by the mask) keeps inf/NaN in padded positions out
    of both the forward value and the gradient: padded entries get a gradient of exactly 0.
    """
    dtype = compute_dtype(logp)
    log_ratio = logp.to(dtype) - old_logp.to(dtype)
    if mask is None:
        return log_ratio
    return torch.where(mask, log_ratio, 0.0)


def masked_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is True; 0 (not NaN) when no entry is."""
    if mask is None:
        return values.mean()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


def aggregate(values: Tensor, mask: Tensor, agg: str, norm_len: float | None = None) -> Tensor:
    """Reduce per-token values ``[B, T]`` to a scalar, in verl's named modes.

    - ``token-mean``: sum over all valid tokens / number of valid tokens in the batch (DAPO).
    - ``seq-mean-token-mean``: each sequence's mean over its valid tokens, then the mean over
      the B sequences (GRPO, UniGRPO Eq. 2).
    - ``seq-mean-token-sum``: each sequence's sum, then the mean over sequences.
    - ``seq-mean-token-sum-norm``: each sequence's sum / ``norm_len``, then the mean over
      sequences, i.e. the total / (B * norm_len); ``norm_len`` defaults to T (Dr. GRPO).

    A sequence with no valid token contributes 0 to the mean over sequences (it still counts in
    B, as in verl), never NaN.
    """
    if agg not in AGG_MODES:
        raise ValueError(f"unknown agg {agg!r}; valid modes: {', '.join(AGG_MODES)}")
    masked = torch.where(mask, values, 0.0)
    if agg == "token-mean":
        return masked.sum() / mask.sum().clamp_min(1)
    per_sequence = masked.sum(dim=-1)
    if agg == "seq-mean-token-mean":
        per_sequence = per_sequence / mask.sum(dim=-1).clamp_min(1)
    elif agg == "seq-mean-token-sum-norm":
        per_sequence = per_sequence / (values.shape[-1] if norm_len is None else norm_len)
    return per_sequence.sum() / max(per_sequence.shape[0], 1)


def ppo_metrics(
    log_ratio: Tensor, ratio: Tensor, clipped: Tensor, mask: Tensor
) -> dict[str, Tensor]:
    """``clip_frac``, ``approx_kl`` and ``ratio_mean`` as token means over valid entries.

    ``approx_kl`` is Schulman's k3 estimate of KL(old || new) from samples of the old policy:
    with r = pi_new / pi_old, k3 = (r - 1) - log r, which is >= 0 for every sample.
    """
    with torch.no_grad():
        log_ratio = log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        k3 = torch.expm1(log_ratio) - log_ratio  # expm1: flow-step log-ratios ~1e-6 would cancel
        return {
            "clip_frac": masked_mean(clipped.to(ratio.dtype), mask),
            "approx_kl": masked_mean(k3, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }


@LOSSES.register_module()
class PPOClipLoss:
    """Clipped surrogate of PPO, with DAPO's clip-higher and the dual-clip of Ye et al.

    PPO (Schulman et al., arXiv 1707.06347, Eq. 7), per element, with r = exp(logp - old_logp):

        loss = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)

    Clip-higher (DAPO, arXiv 2503.14476): ``eps_high`` separate from ``eps_low``
    (``clip_eps_high=None`` means symmetric). Dual-clip (Ye et al., arXiv 1912.09729):
    for A < 0 the loss is further capped, loss = min(loss, -c A) with c = ``dual_clip`` > 1, so a
    huge ratio on a bad action cannot produce an unbounded update.

    The log-ratio is clamped to +-20 before ``exp()`` (see ``LOG_RATIO_LIMIT``).
    ``__call__`` reduces by token mean over valid entries; ``GRPOLoss`` and ``FlowGRPOLoss`` use
    :meth:`from_log_ratio` with their own reductions.
    """

    aggregation = "token-mean"  # a mean over every valid entry of the batch

    def __init__(
        self,
        clip_eps: float = 0.2,
        clip_eps_high: float | None = None,
        dual_clip: float | None = None,
    ) -> None:
        if not 0 < clip_eps < 1:
            raise ValueError(f"clip_eps must be in (0, 1) (e.g. 0.2), got {clip_eps}")
        if clip_eps_high is not None and clip_eps_high <= 0:
            raise ValueError(f"clip_eps_high must be > 0 (e.g. 0.28) or None, got {clip_eps_high}")
        if dual_clip is not None and dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 (e.g. 3.0) or None, got {dual_clip}")
        self.clip_eps_low = clip_eps
        self.clip_eps_high = clip_eps if clip_eps_high is None else clip_eps_high
        self.dual_clip = dual_clip

    def from_log_ratio(
        self, log_ratio: Tensor, advantages: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Elementwise clipped loss from a log-ratio of any shape.

        Args:
            log_ratio: ``log r``, any shape, finite (mask it first).
            advantages: broadcastable to ``log_ratio`` (e.g. ``[B, 1]`` against ``[B, T]``).

        Returns:
            ``(loss_elems, clipped_mask, ratio)``, each of the broadcast shape. ``clipped_mask``
            is True where a clipped branch (PPO clip or dual clip) is the active one, i.e. where
            the element passes no gradient to the ratio.
        """
        ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
        advantages = advantages.to(ratio.dtype)
        # -min(rA, clip(r)A) written as the max of the two losses
        unclipped = -advantages * ratio
        clipped = -advantages * ratio.clamp(1 - self.clip_eps_low, 1 + self.clip_eps_high)
        loss = torch.maximum(unclipped, clipped)
        clipped_mask = clipped > unclipped
        if self.dual_clip is not None:
            cap = -self.dual_clip * advantages  # -c A, positive where A < 0
            capped = (advantages < 0) & (loss > cap)
            loss = torch.where(capped, cap, loss)
            clipped_mask = clipped_mask | capped
        return loss, clipped_mask, ratio

    def per_element(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss_elems, clipped_mask, ratio)`` for log-probs of any shape (see from_log_ratio).

        Entries where ``mask`` is False get log r = 0 before ``exp()``; reduce with the mask.
        """
        return self.from_log_ratio(masked_log_ratio(logp, old_logp, mask), advantages)

    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor | None = None
    ) -> LossOutput:
        """Token-mean PPO-clip loss.

        Args:
            logp, old_logp: log-probs of the taken actions, same shape (e.g. ``[B, T]``).
            advantages: broadcastable to ``logp`` (``[B, T]``, or ``[B, 1]`` for one per sequence).
            mask: same shape as ``logp``, True (or 1) where the entry counts; None for all.
        """
        require_shape(old_logp, logp.shape, "old_logp (like logp)")
        mask = torch.ones_like(logp, dtype=torch.bool) if mask is None else mask.bool()
        require_shape(mask, logp.shape, "mask (like logp)")
        try:
            torch.broadcast_to(advantages, logp.shape)
        except RuntimeError:
            raise ValueError(
                f"advantages shape {list(advantages.shape)} must broadcast to logp shape "
                f"{list(logp.shape)} (e.g. [B, 1] for one advantage per sequence)"
            ) from None
        log_ratio = masked_log_ratio(logp, old_logp, mask)
        loss_elems, clipped, ratio = self.from_log_ratio(log_ratio, advantages)
        return LossOutput(
            masked_mean(loss_elems, mask), ppo_metrics(log_ratio, ratio, clipped, mask)
        )
