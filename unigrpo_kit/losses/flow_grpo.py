"""Flow-GRPO's per-denoising-step PPO-clip loss, with GRPO-Guard's RatioNorm as an option."""

from __future__ import annotations

import torch
from torch import Tensor

from unigrpo_kit.losses.ppo import (
    LossOutput,
    PPOClipLoss,
    aggregate,
    masked_log_ratio,
    ppo_metrics,
    require_shape,
)
from unigrpo_kit.registry import LOSSES


def per_step(value: Tensor | float, name: str, batch: int, steps: int, like: Tensor) -> Tensor:
    """One value per (sample, step): ``value`` of shape ``[B, K]``, ``[K]``, a scalar, or
    ``[B, K, 1, ..., 1]`` (a std kept broadcastable against latents), returned as ``[B, K]``
    in ``like``'s dtype and device."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() > 2:
        if any(size != 1 for size in value.shape[2:]):
            raise ValueError(
                f"{name} must hold one value per step, [B, K] or [K]; got {list(value.shape)}"
            )
        value = value.reshape(value.shape[:2])
    try:
        return torch.broadcast_to(value, (batch, steps))
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {list(value.shape)} does not broadcast to [B, K] = "
            f"[{batch}, {steps}]; pass [B, K] or [K]"
        ) from None


def fill_invalid_steps(value: Tensor, mask: Tensor, fill: float) -> Tensor:
    """``value`` (``[B, K, ...]``) with steps where ``mask`` (``[B, K]``) is False set to ``fill``.

    Done before any arithmetic, so that garbage or zeros in untrained steps (a zero std, an inf
    mean) cannot make 0/0 in the forward pass or 0 * inf in the backward pass.
    """
    return torch.where(mask.reshape(*mask.shape, *[1] * (value.dim() - 2)), value, fill)


@LOSSES.register_module()
class FlowGRPOLoss:
    """PPO-clip over the trained (SDE) denoising steps of a flow-matching sampler.

    Flow-GRPO (arXiv 2505.05470) and UniGRPO (arXiv 2603.23500, Eq. 6), with one
    advantage A_i per image shared by its trained steps T_sde:

        J = (1/G) sum_i (1/|T_sde|) sum_{k in T_sde} min(r_ik A_i, clip(r_ik, 1-eps, 1+eps) A_i)

    loss = -J; a ``mask`` ``[B, K]`` gives each sample its own trained steps (the per-sample
    mean runs over them). r_ik = exp(logp - old_logp) is the ratio of the Gaussian step
    densities, or with ``ratio_norm=True`` the RatioNorm ratio of GRPO-Guard
    (arXiv 2510.22319; UniGRPO Eq. 5):

        log r~ = sigma_t sqrt(|dt|) (log r + ||mu_old - mu||^2 / (2 sigma_t^2 |dt|))

    where sigma_t is the SDE std coefficient, so that the step std is sigma_t sqrt(|dt|); it is
    derived here as sigma_t = std / sqrt(|dt|) from the step ``std`` and ``dt`` given. The
    correction cancels the -||mu_old - mu||^2 / (2 std^2) that the Gaussian log-ratio carries
    under the old policy's samples (the left shift of the ratio), and the factor std makes the
    ratio's spread the same at every noise level: log r~ = <eps, mu - mu_old> for the sampled
    noise eps.

    ||.||^2 is the MEAN over the latent dimensions, because ``log_prob`` is the Gaussian density
    averaged over dimensions (Flow-GRPO's convention, the samplers' default): the cancellation
    is exact only when both are reduced the same way. Scoring steps with ``reduce="sum"`` would
    break it. The GRPO-Guard paper's 1/|dt| gradient reweighting is not applied.

    Metrics: ``clip_frac``, ``ratio_mean`` (of the ratio that is clipped: r~ with RatioNorm) and
    ``approx_kl`` (k3 of KL(old || new) from the raw log r), means over valid steps.
    """

    aggregation = "seq-mean-token-mean"  # per trained step, then per episode

    def __init__(
        self, clip_eps: float = 1e-4, clip_eps_high: float | None = None, ratio_norm: bool = False
    ) -> None:
        self.ppo = PPOClipLoss(clip_eps, clip_eps_high)
        self.ratio_norm = ratio_norm

    def normalized_log_ratio(
        self,
        log_ratio: Tensor,
        mask: Tensor,
        mean: Tensor,
        old_mean: Tensor,
        std: Tensor,
        dt: Tensor,
    ) -> Tensor:
        """RatioNorm ``log r~`` ``[B, K]`` from the masked raw ``log r`` ``[B, K]``.

        ``mean``/``old_mean`` ``[B, K, ...]``, ``std`` and ``dt`` one value per step. Valid steps
        need std > 0 and dt != 0 (SDE steps); masked steps may hold anything.
        """
        batch, steps = log_ratio.shape
        if mean.shape != old_mean.shape or tuple(mean.shape[:2]) != (batch, steps):
            raise ValueError(
                f"mean {list(mean.shape)} and old_mean {list(old_mean.shape)} must both be "
                f"[B, K, ...] with [B, K] = [{batch}, {steps}] like logp"
            )
        dtype = log_ratio.dtype
        mean = fill_invalid_steps(mean.to(dtype), mask, 0.0)
        old_mean = fill_invalid_steps(old_mean.to(dtype), mask, 0.0)
        std = fill_invalid_steps(per_step(std, "std", batch, steps, log_ratio), mask, 1.0)
        abs_dt = fill_invalid_steps(per_step(dt, "dt", batch, steps, log_ratio).abs(), mask, 1.0)
        # ||mu_old - mu||^2 as a mean over dims, matching log_prob's reduction
        squared_distance = (old_mean - mean).square().reshape(batch, steps, -1).mean(dim=-1)
        sigma_t = std / abs_dt.sqrt()
        # log r~ = sigma_t sqrt(|dt|) (log r + ||mu_old - mu||^2 / (2 sigma_t^2 |dt|))
        normalized = (
            sigma_t
            * abs_dt.sqrt()
            * (log_ratio + squared_distance / (2 * sigma_t.square() * abs_dt))
        )
        return torch.where(mask, normalized, 0.0)

    def __call__(
        self,
        logp: Tensor,
        old_logp: Tensor,
        advantages: Tensor,
        mask: Tensor | None = None,
        *,
        mean: Tensor | None = None,
        old_mean: Tensor | None = None,
        std: Tensor | float | None = None,
        dt: Tensor | float | None = None,
    ) -> LossOutput:
        """Loss over B images and K trained steps.

        Args:
            logp, old_logp: ``[B, K]`` step log-densities under the current / rollout policy.
            advantages: ``[B]``, one per image.
            mask: ``[B, K]``, True on steps that are trained; None for all.
            mean, old_mean: ``[B, K, ...]`` per-step Gaussian means (RatioNorm only).
            std: step std, ``[B, K]`` or ``[K]`` (RatioNorm only).
            dt: ``sigma_next - sigma`` (negative), ``[B, K]`` or ``[K]`` (RatioNorm only).
        """
        if logp.dim() != 2:
            raise ValueError(f"logp must be [B, K] (K trained steps), got {list(logp.shape)}")
        require_shape(old_logp, logp.shape, "old_logp (like logp)")
        require_shape(advantages, logp.shape[:1], "advantages (one per image, [B])")
        mask = torch.ones_like(logp, dtype=torch.bool) if mask is None else mask.bool()
        require_shape(mask, logp.shape, "mask (like logp)")
        log_ratio = masked_log_ratio(logp, old_logp, mask)
        objective_log_ratio = log_ratio
        if self.ratio_norm:
            given = {"mean": mean, "old_mean": old_mean, "std": std, "dt": dt}
            missing = [name for name, value in given.items() if value is None]
            if missing:
                raise ValueError(
                    f"FlowGRPOLoss(ratio_norm=True) needs mean, old_mean, std and dt; missing: "
                    f"{', '.join(missing)} (pass them as keywords, or set ratio_norm=False)"
                )
            objective_log_ratio = self.normalized_log_ratio(
                log_ratio, mask, mean, old_mean, std, dt
            )
        loss_elems, clipped, ratio = self.ppo.from_log_ratio(
            objective_log_ratio, advantages[:, None]
        )
        loss = aggregate(loss_elems, mask, "seq-mean-token-mean")
        return LossOutput(loss, ppo_metrics(log_ratio, ratio, clipped, mask))
