"""FlowGRPOLoss: per-step PPO-clip over trained steps, and GRPO-Guard's RatioNorm."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.losses.flow_grpo import FlowGRPOLoss
from unigrpo_kit.registry import LOSSES

B, K, C, H, W = 3, 4, 2, 3, 3


def reference_flow_loss(log_ratios, advantages, mask, eps):
    """Float64 (1/B) sum_i (1/|T_i|) sum_{k in T_i} -min(r A, clip(r) A), from nested lists."""
    total = 0.0
    for i, row in enumerate(log_ratios):
        losses = []
        for k, log_ratio in enumerate(row):
            if mask[i][k]:
                ratio = math.exp(log_ratio)
                clipped = min(max(ratio, 1 - eps), 1 + eps)
                losses.append(-min(ratio * advantages[i], clipped * advantages[i]))
        total += sum(losses) / len(losses) if losses else 0.0
    return total / len(log_ratios)


def reference_ratio_norm(log_ratio, mean, old_mean, std, dt):
    """Float64 UniGRPO Eq. 5 for one step; ||.||^2 is the mean over the latent's elements."""
    flat_mean, flat_old = mean.flatten().tolist(), old_mean.flatten().tolist()
    squared = sum((o - m) ** 2 for o, m in zip(flat_old, flat_mean, strict=True)) / len(flat_mean)
    sigma_t = std / math.sqrt(abs(dt))
    return sigma_t * math.sqrt(abs(dt)) * (log_ratio + squared / (2 * sigma_t**2 * abs(dt)))


def make_steps(seed=0):
    generator = torch.Generator().manual_seed(seed)
    f64 = dict(generator=generator, dtype=torch.float64)
    logp = torch.randn(B, K, **f64)
    old_logp = logp + 0.02 * torch.randn(B, K, **f64)
    advantages = torch.randn(B, **f64)
    old_mean = torch.randn(B, K, C, H, W, **f64)
    mean = old_mean + 0.05 * torch.randn(B, K, C, H, W, **f64)
    std = 0.1 + torch.rand(B, K, **f64)
    dt = -(0.02 + 0.1 * torch.rand(K, **f64))
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    return logp, old_logp, advantages, mask, mean, old_mean, std, dt


def test_loss_is_mean_over_trained_steps_then_batch():
    logp, old_logp, advantages, mask, *_ = make_steps()
    out = FlowGRPOLoss(clip_eps=0.01)(logp, old_logp, advantages, mask)
    expected = reference_flow_loss(
        (logp - old_logp).tolist(), advantages.tolist(), mask.tolist(), 0.01
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert 0 < out.metrics["clip_frac"].item() < 1  # both branches were exercised


def test_without_mask_every_step_is_trained():
    logp, old_logp, advantages, *_ = make_steps(seed=1)
    out = FlowGRPOLoss(clip_eps=0.01)(logp, old_logp, advantages)
    expected = reference_flow_loss(
        (logp - old_logp).tolist(), advantages.tolist(), [[True] * K] * B, 0.01
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)


def test_ratio_norm_matches_float64_hand_computation():
    logp, old_logp, advantages, mask, mean, old_mean, std, dt = make_steps(seed=2)
    loss_fn = FlowGRPOLoss(clip_eps=0.005, ratio_norm=True)
    out = loss_fn(logp, old_logp, advantages, mask, mean=mean, old_mean=old_mean, std=std, dt=dt)
    normalized = [
        [
            reference_ratio_norm(
                float(logp[i, k] - old_logp[i, k]),
                mean[i, k],
                old_mean[i, k],
                float(std[i, k]),
                float(dt[k]),
            )  # fmt: skip
            for k in range(K)
        ]
        for i in range(B)
    ]
    expected = reference_flow_loss(normalized, advantages.tolist(), mask.tolist(), 0.005)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    ratios = [math.exp(normalized[i][k]) for i in range(B) for k in range(K) if mask[i, k]]
    assert out.metrics["ratio_mean"].item() == pytest.approx(sum(ratios) / len(ratios), rel=1e-12)
    raw = [float(logp[i, k] - old_logp[i, k]) for i in range(B) for k in range(K) if mask[i, k]]
    raw_kl = sum(math.exp(x) - 1 - x for x in raw) / len(raw)  # approx_kl uses the raw ratio
    assert out.metrics["approx_kl"].item() == pytest.approx(raw_kl, rel=1e-8)


def test_ratio_norm_with_equal_means_is_sigma_t_sqrt_dt_times_log_ratio():
    logp, old_logp, _, mask, mean, _, std, dt = make_steps(seed=3)
    log_ratio = logp - old_logp
    normalized = FlowGRPOLoss(ratio_norm=True).normalized_log_ratio(
        log_ratio, torch.ones_like(mask), mean, mean.clone(), std, dt
    )
    sigma_t = std / dt.abs().sqrt()
    torch.testing.assert_close(normalized, sigma_t * dt.abs().sqrt() * log_ratio)


def test_ratio_norm_of_gaussian_step_densities_is_noise_dot_mean_shift():
    """With log-densities averaged over dims (Flow-GRPO's convention), log r~ must reduce to
    mean_d(eps_d * (mu - mu_old)_d) for x = mu_old + std * eps: the shift cancels exactly."""
    _, _, _, mask, mean, old_mean, std, dt = make_steps(seed=4)
    noise = torch.randn(
        B, K, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(9)
    )
    step_std = std[..., None, None, None]
    sample = old_mean + step_std * noise

    def mean_log_density(mu):
        log_density = (
            -((sample - mu) ** 2) / (2 * step_std**2)
            - torch.log(step_std)
            - 0.5 * math.log(2 * math.pi)
        )
        return log_density.flatten(2).mean(-1)

    log_ratio = mean_log_density(mean) - mean_log_density(old_mean)
    normalized = FlowGRPOLoss(ratio_norm=True).normalized_log_ratio(
        log_ratio, torch.ones_like(mask), mean, old_mean, std, dt
    )
    expected = (noise * (mean - old_mean)).flatten(2).mean(-1)
    torch.testing.assert_close(normalized, expected, rtol=1e-9, atol=1e-12)


def test_ratio_norm_accepts_broadcastable_std_and_dt():
    logp, old_logp, advantages, mask, mean, old_mean, std, dt = make_steps(seed=5)
    loss_fn = FlowGRPOLoss(ratio_norm=True)
    base = loss_fn(logp, old_logp, advantages, mask, mean=mean, old_mean=old_mean, std=std, dt=dt)
    broadcast = loss_fn(
        logp, old_logp, advantages, mask, mean=mean, old_mean=old_mean,
        std=std[..., None, None, None], dt=dt.expand(B, K),
    )  # fmt: skip
    assert broadcast.loss.item() == base.loss.item()


def test_untrained_steps_get_zero_gradient_whatever_they_hold():
    logp, old_logp, advantages, mask, mean, old_mean, std, dt = make_steps(seed=6)
    logp = logp.masked_fill(~mask, float("inf")).requires_grad_()
    mean = mean.masked_fill(~mask[..., None, None, None], float("nan")).requires_grad_()
    std = std.masked_fill(~mask, 0.0)
    dt = dt.expand(B, K).masked_fill(~mask, 0.0)
    out = FlowGRPOLoss(clip_eps=0.1, ratio_norm=True)(
        logp, old_logp, advantages, mask, mean=mean, old_mean=old_mean, std=std, dt=dt
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.equal(logp.grad[~mask], torch.zeros_like(logp.grad[~mask]))
    assert torch.equal(mean.grad[~mask], torch.zeros_like(mean.grad[~mask]))
    assert torch.isfinite(mean.grad).all() and (mean.grad[mask] != 0).any()


def test_ratio_norm_without_its_inputs_names_what_is_missing():
    logp, old_logp, advantages, mask, mean, old_mean, *_ = make_steps()
    with pytest.raises(ValueError, match="missing: std, dt"):
        FlowGRPOLoss(ratio_norm=True)(
            logp, old_logp, advantages, mask, mean=mean, old_mean=old_mean
        )


def test_bad_std_shape_raises():
    logp, old_logp, advantages, mask, mean, old_mean, std, dt = make_steps()
    with pytest.raises(ValueError, match=r"std of shape \[3\] does not broadcast"):
        FlowGRPOLoss(ratio_norm=True)(
            logp, old_logp, advantages, mask, mean=mean, old_mean=old_mean, std=std[:, 0], dt=dt
        )
    with pytest.raises(ValueError, match="mean"):
        FlowGRPOLoss(ratio_norm=True)(
            logp, old_logp, advantages, mask, mean=mean[:, :2], old_mean=old_mean, std=std, dt=dt
        )
    with pytest.raises(ValueError, match="advantages"):
        FlowGRPOLoss()(logp, old_logp, advantages[:2], mask)


def test_registry_builds_it_with_flow_grpo_defaults():
    loss = LOSSES.build(dict(type="FlowGRPOLoss"))
    assert isinstance(loss, FlowGRPOLoss)
    assert loss.ppo.clip_eps_low == loss.ppo.clip_eps_high == 1e-4
    assert loss.ratio_norm is False
