"""GRPO's token-level PPO-clip loss with verl's aggregation modes."""

from __future__ import annotations

from torch import Tensor

from unigrpo_kit.losses.ppo import (
    AGG_MODES,
    LossOutput,
    PPOClipLoss,
    aggregate,
    masked_log_ratio,
    ppo_metrics,
    require_shape,
)
from unigrpo_kit.registry import LOSSES


@LOSSES.register_module()
class GRPOLoss:
    """Group Relative Policy Optimization over text tokens.

    GRPO (DeepSeekMath, arXiv 2402.03300, Eq. 3; UniGRPO, arXiv 2603.23500, Eq. 2 without its
    KL term, which is a separate regularizer here), with r_ik = pi(y_ik) / pi_old(y_ik):

        J = (1/G) sum_i (1/|y_i|) sum_k min(r_ik A_i, clip(r_ik, 1 - eps_low, 1 + eps_high) A_i)

    and loss = -J. One advantage A_i per sequence is shared by all its tokens. ``agg`` picks how
    the per-token losses are reduced (verl's names, see ``aggregate``):
    ``seq-mean-token-mean`` is the equation above; ``token-mean`` is DAPO's
    (arXiv 2503.14476); ``seq-mean-token-sum-norm`` with a constant ``norm_len`` is
    Dr. GRPO's (arXiv 2503.20783), which drops the length bias of 1/|y_i|.
    ``clip_eps_high`` and ``dual_clip`` are passed to :class:`PPOClipLoss`.

    Metrics: ``clip_frac``, ``approx_kl`` (k3 of KL(old || new)), ``ratio_mean``, each a token
    mean over the valid tokens of the batch, whatever ``agg`` is.
    """

    def __init__(
        self,
        clip_eps: float = 0.2,
        clip_eps_high: float | None = None,
        dual_clip: float | None = None,
        agg: str = "seq-mean-token-mean",
        norm_len: float | None = None,
    ) -> None:
        if agg not in AGG_MODES:
            raise ValueError(f"unknown agg {agg!r}; valid modes: {', '.join(AGG_MODES)}")
        if norm_len is not None and norm_len <= 0:
            raise ValueError(
                f"norm_len must be > 0 (a constant, e.g. 1024) or None, got {norm_len}"
            )
        self.ppo = PPOClipLoss(clip_eps, clip_eps_high, dual_clip)
        self.agg = agg
        self.aggregation = agg  # what a term's denominator is (objective.denominator)
        self.norm_len = norm_len

    def __call__(
        self, logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor
    ) -> LossOutput:
        """Loss over a batch of B sequences padded to T tokens.

        Args:
            logp: ``[B, T]`` log-probs of the sampled tokens under the current policy.
            old_logp: ``[B, T]`` the same under the rollout policy.
            advantages: ``[B]``, one per sequence.
            mask: ``[B, T]``, True (or 1) on tokens that count; padded tokens get zero gradient
                whatever values ``logp`` holds there.
        """
        if logp.dim() != 2:
            raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
        require_shape(old_logp, logp.shape, "old_logp (like logp)")
        require_shape(mask, logp.shape, "mask (like logp)")
        require_shape(advantages, logp.shape[:1], "advantages (one per sequence, [B])")
        mask = mask.bool()
        log_ratio = masked_log_ratio(logp, old_logp, mask)
        loss_elems, clipped, ratio = self.ppo.from_log_ratio(log_ratio, advantages[:, None])
        loss = aggregate(loss_elems, mask, self.agg, self.norm_len)
        return LossOutput(loss, ppo_metrics(log_ratio, ratio, clipped, mask))
