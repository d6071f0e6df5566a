"""Hypothesis: for finite inputs no estimator, loss or regularizer returns NaN or inf.

Inputs are drawn from realistic ranges (log-probs within +-50, advantages within +-10, stds in
[2^-10, 10]), with constant-reward groups, groups of one, and fully padded rows included.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unigrpo_kit.advantages import RLOO, GroupMean, GroupMeanGlobalStd, GroupNorm
from unigrpo_kit.losses.flow_grpo import FlowGRPOLoss
from unigrpo_kit.losses.grpo import GRPOLoss
from unigrpo_kit.losses.ppo import PPOClipLoss
from unigrpo_kit.regularizers import Entropy, LatentKL, TokenKL, VelocityMSE

SETTINGS = settings(max_examples=40, deadline=None)
AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def grouped_rewards(draw):
    """Rewards with group ids: some groups constant, some of size one."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=5))
    rewards, group_ids = [], []
    for group, size in enumerate(sizes):
        if draw(st.booleans()):
            rewards += [draw(finite(-1e3, 1e3))] * size
        else:
            rewards += draw(st.lists(finite(-1e3, 1e3), min_size=size, max_size=size))
        group_ids += [group] * size
    return torch.tensor(rewards), group_ids


@st.composite
def token_batch(draw, max_batch=4, max_len=6):
    """logp, old_logp [B, T], per-sequence advantages [B], mask [B, T] (rows may be empty)."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_len))
    grid = st.lists(finite(-50, 0), min_size=batch * length, max_size=batch * length)
    logp = torch.tensor(draw(grid)).reshape(batch, length)
    old_logp = torch.tensor(draw(grid)).reshape(batch, length)
    advantages = torch.tensor(draw(st.lists(finite(-10, 10), min_size=batch, max_size=batch)))
    bits = st.lists(st.booleans(), min_size=batch * length, max_size=batch * length)
    mask = torch.tensor(draw(bits)).reshape(batch, length)
    return logp, old_logp, advantages, mask


def all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(tensor).all()) for tensor in tensors)


@SETTINGS
@given(data=grouped_rewards(), clip=st.sampled_from([None, 5.0]))
def test_advantage_estimators_are_finite_and_zero_on_constant_groups(data, clip):
    rewards, group_ids = data
    for estimator in (GroupNorm(clip=clip), GroupMean(clip=clip), RLOO(clip=clip),
                      GroupMeanGlobalStd(clip=clip), GroupNorm(unbiased=True)):  # fmt: skip
        advantages = estimator(rewards, group_ids)
        assert all_finite(advantages)
        for group in set(group_ids):
            members = [i for i, g in enumerate(group_ids) if g == group]
            if len(set(rewards[members].tolist())) == 1:
                assert advantages[members].eq(0).all()


@SETTINGS
@given(batch=token_batch(), agg=st.sampled_from(AGG_MODES), dual_clip=st.sampled_from([None, 3.0]))
def test_grpo_loss_and_gradient_are_finite(batch, agg, dual_clip):
    logp, old_logp, advantages, mask = batch
    logp.requires_grad_()
    out = GRPOLoss(clip_eps_high=0.28, dual_clip=dual_clip, agg=agg)(
        logp, old_logp, advantages, mask
    )
    out.loss.backward()
    assert all_finite(out.loss, logp.grad, *out.metrics.values())
    assert logp.grad[~mask].eq(0).all()


@SETTINGS
@given(batch=token_batch())
def test_ppo_clip_loss_is_finite(batch):
    logp, old_logp, advantages, mask = batch
    out = PPOClipLoss(dual_clip=2.0)(logp, old_logp, advantages[:, None], mask)
    assert all_finite(out.loss, *out.metrics.values())


@SETTINGS
@given(batch=token_batch(), ratio_norm=st.booleans(), data=st.data())
def test_flow_grpo_loss_and_gradient_are_finite(batch, ratio_norm, data):
    logp, old_logp, advantages, mask = batch
    logp = logp / 50  # per-dim-averaged step log-densities are small
    batch_size, steps = logp.shape
    size = batch_size * steps * 2
    mean = torch.tensor(data.draw(st.lists(finite(-10, 10), min_size=size, max_size=size)))
    old_mean = torch.tensor(data.draw(st.lists(finite(-10, 10), min_size=size, max_size=size)))
    std = torch.tensor(data.draw(st.lists(finite(2**-10, 10), min_size=steps, max_size=steps)))
    dt = -torch.tensor(data.draw(st.lists(finite(2**-10, 1), min_size=steps, max_size=steps)))
    mean = mean.reshape(batch_size, steps, 2).requires_grad_()
    logp.requires_grad_()
    out = FlowGRPOLoss(clip_eps=1e-3, ratio_norm=ratio_norm)(
        logp, old_logp / 50, advantages, mask,
        mean=mean, old_mean=old_mean.reshape(batch_size, steps, 2), std=std, dt=dt,
    )  # fmt: skip
    out.loss.backward()
    assert all_finite(out.loss, logp.grad, *out.metrics.values())
    if ratio_norm:
        assert all_finite(mean.grad)


@SETTINGS
@given(batch=token_batch(), estimator=st.sampled_from(["k1", "k2", "k3"]))
def test_token_kl_is_finite(batch, estimator):
    logp, ref_logp, _, mask = batch
    assert all_finite(TokenKL(estimator=estimator)(logp, ref_logp, mask))


@SETTINGS
@given(batch=token_batch(), data=st.data())
def test_image_regularizers_and_entropy_are_finite(batch, data):
    _, _, _, mask = batch
    batch_size, steps = mask.shape
    size = batch_size * steps * 3
    a = torch.tensor(data.draw(st.lists(finite(-1e3, 1e3), min_size=size, max_size=size)))
    b = torch.tensor(data.draw(st.lists(finite(-1e3, 1e3), min_size=size, max_size=size)))
    a, b = a.reshape(batch_size, steps, 3), b.reshape(batch_size, steps, 3)
    std = torch.tensor(data.draw(st.lists(finite(2**-10, 10), min_size=steps, max_size=steps)))
    assert all_finite(LatentKL()(a, b, std, mask), VelocityMSE()(a, b, mask))
    logits = a.detach().clone().requires_grad_()  # [B, T, V=3], differences up to 2e3
    value = Entropy()(logits, mask)
    value.backward()
    assert all_finite(value, logits.grad)
