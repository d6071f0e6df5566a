"""PPOClipLoss: the elementwise clipped surrogate, clip-higher, dual-clip, token-mean, metrics."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.losses.ppo import LossOutput, PPOClipLoss
from unigrpo_kit.registry import LOSSES


def reference_element(log_ratio, advantage, eps_low, eps_high, dual_clip=None):
    """Float64 PPO-clip loss of one element, written from the definitions."""
    ratio = math.exp(log_ratio)
    objective = min(ratio * advantage, min(max(ratio, 1 - eps_low), 1 + eps_high) * advantage)
    loss = -objective
    if dual_clip is not None and advantage < 0:
        loss = min(loss, -dual_clip * advantage)
    return loss


def test_ratio_is_one_and_loss_is_minus_mean_advantage_when_policies_agree():
    logp = torch.tensor([[-1.3, -0.2, -4.0], [-0.7, -2.2, -0.1]])
    advantages = torch.tensor([[0.5, -1.5, 2.0], [1.0, 0.25, -3.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = PPOClipLoss()(logp, logp.clone(), advantages, mask)
    _, _, ratio = PPOClipLoss().per_element(logp, logp.clone(), advantages)
    assert torch.equal(ratio, torch.ones_like(ratio))
    expected = -(0.5 - 1.5 + 1.0 + 0.25 - 3.0) / 5
    assert out.loss.item() == pytest.approx(expected, abs=1e-7)
    assert out.metrics["ratio_mean"].item() == 1.0
    assert out.metrics["approx_kl"].item() == 0.0
    assert out.metrics["clip_frac"].item() == 0.0


@pytest.mark.parametrize(
    "ratio, advantage, clipped",
    [
        (1.2 * (1 + 1e-4), 1.0, True),  # just above 1 + eps with A > 0
        (1.2 * (1 - 1e-4), 1.0, False),  # just inside
        (0.8 * (1 - 1e-4), -1.0, True),  # just below 1 - eps with A < 0
        (0.8 * (1 + 1e-4), -1.0, False),
        (0.5, 1.0, False),  # below the range with A > 0: the unclipped term is the minimum
        (1.5, -1.0, False),  # above the range with A < 0: likewise
    ],
)
def test_clipping_engages_exactly_beyond_the_range(ratio, advantage, clipped):
    log_ratio = torch.tensor([math.log(ratio)], dtype=torch.float64, requires_grad=True)
    loss, clipped_mask, _ = PPOClipLoss(clip_eps=0.2).from_log_ratio(
        log_ratio, torch.tensor([advantage], dtype=torch.float64)
    )
    loss.sum().backward()
    assert clipped_mask.item() is clipped
    assert loss.item() == pytest.approx(reference_element(math.log(ratio), advantage, 0.2, 0.2))
    # a clipped element passes no gradient; an unclipped one passes d(-rA)/dlog r = -rA
    expected_grad = 0.0 if clipped else -ratio * advantage
    assert log_ratio.grad.item() == pytest.approx(expected_grad)


def test_clip_higher_widens_only_the_upper_bound():
    ratios = torch.tensor([1.25, 1.3, 0.75, 0.75], dtype=torch.float64)
    advantages = torch.tensor([1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    loss, clipped, _ = PPOClipLoss(clip_eps=0.2, clip_eps_high=0.28).from_log_ratio(
        ratios.log(), advantages
    )
    # 1.25 < 1.28: not clipped (symmetric eps=0.2 would clip at 1.2); 1.3 clipped to 1.28;
    # 0.75 with A < 0 clipped at 1 - 0.2 = 0.8; 0.75 with A > 0 unclipped
    torch.testing.assert_close(loss, torch.tensor([-1.25, -1.28, 0.8, -0.75], dtype=torch.float64))
    assert clipped.tolist() == [False, True, True, False]
    symmetric, _, _ = PPOClipLoss(clip_eps=0.2).from_log_ratio(ratios.log(), advantages)
    assert symmetric[0].item() == pytest.approx(-1.2)


def test_dual_clip_caps_negative_advantage_losses_at_c_times_abs_advantage():
    ratios = torch.tensor([5.0, 2.0, 5.0, 0.5], dtype=torch.float64)
    advantages = torch.tensor([-2.0, -2.0, 1.0, -2.0], dtype=torch.float64)
    log_ratio = ratios.log().requires_grad_()
    loss, clipped, _ = PPOClipLoss(clip_eps=0.2, dual_clip=3.0).from_log_ratio(
        log_ratio, advantages
    )
    loss.sum().backward()
    # r=5, A=-2: PPO gives 10, capped at 3 * 2 = 6; r=2: 4 < 6 stays; A > 0: PPO clip 1.2;
    # r=0.5, A=-2: PPO clip at 0.8 gives 1.6
    torch.testing.assert_close(loss, torch.tensor([6.0, 4.0, -1.2, 1.6], dtype=torch.float64))
    assert clipped.tolist() == [True, False, True, True]
    torch.testing.assert_close(
        log_ratio.grad, torch.tensor([0.0, 4.0, 0.0, 0.0], dtype=torch.float64)
    )
    plain, _, _ = PPOClipLoss(clip_eps=0.2).from_log_ratio(ratios.log(), advantages)
    assert plain[0].item() == pytest.approx(10.0)


@pytest.mark.parametrize("clip_eps_high, dual_clip", [(None, None), (0.28, None), (0.28, 3.0)])
def test_token_mean_loss_and_metrics_match_float64_reference(clip_eps_high, dual_clip):
    generator = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 5, generator=generator) * 3
    old_logp = logp + 0.6 * torch.randn(3, 5, generator=generator)
    advantages = torch.randn(3, 5, generator=generator)
    mask = torch.rand(3, 5, generator=generator) > 0.3
    out = PPOClipLoss(0.2, clip_eps_high, dual_clip)(logp, old_logp, advantages, mask)

    eps_high = 0.2 if clip_eps_high is None else clip_eps_high
    losses, clipped, kls, ratios = [], [], [], []
    for i in range(3):
        for t in range(5):
            if not mask[i, t]:
                continue
            log_ratio = float(logp[i, t]) - float(old_logp[i, t])
            advantage = float(advantages[i, t])
            loss = reference_element(log_ratio, advantage, 0.2, eps_high, dual_clip)
            losses.append(loss)
            clipped.append(abs(loss + math.exp(log_ratio) * advantage) > 1e-12)
            kls.append(math.exp(log_ratio) - 1 - log_ratio)
            ratios.append(math.exp(log_ratio))
    count = len(losses)
    assert out.loss.item() == pytest.approx(sum(losses) / count, rel=1e-5)
    assert out.metrics["clip_frac"].item() == pytest.approx(sum(clipped) / count)
    assert out.metrics["approx_kl"].item() == pytest.approx(sum(kls) / count, rel=1e-4)
    assert out.metrics["ratio_mean"].item() == pytest.approx(sum(ratios) / count, rel=1e-5)
    assert all(not value.requires_grad for value in out.metrics.values())


def test_huge_log_ratios_stay_finite():
    logp = torch.tensor([[500.0, -500.0, 0.0]], requires_grad=True)
    out = PPOClipLoss()(logp, torch.zeros(1, 3), torch.tensor([[-1.0, 1.0, 0.0]]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(logp.grad).all()
    assert all(torch.isfinite(value) for value in out.metrics.values())


def test_returns_loss_output_and_builds_from_registry():
    loss = LOSSES.build(dict(type="PPOClipLoss", clip_eps=0.1, dual_clip=2.0))
    assert isinstance(loss, PPOClipLoss)
    assert (loss.clip_eps_low, loss.clip_eps_high, loss.dual_clip) == (0.1, 0.1, 2.0)
    out = loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 1))
    assert isinstance(out, LossOutput)
    assert set(out.metrics) == {"clip_frac", "approx_kl", "ratio_mean"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(clip_eps=0.0), "clip_eps must be in"),
        (dict(clip_eps_high=-0.1), "clip_eps_high must be > 0"),
        (dict(dual_clip=1.0), "dual_clip must be > 1"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PPOClipLoss(**kwargs)


def test_bad_shapes_raise():
    loss = PPOClipLoss()
    with pytest.raises(ValueError, match="old_logp"):
        loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="advantages shape"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="mask"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1), torch.ones(2, 2))
