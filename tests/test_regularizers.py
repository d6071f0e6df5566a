"""Regularizers against float64 hand computations; attributes the trainer reads."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.registry import REGULARIZERS
from unigrpo_kit.regularizers import Entropy, HighFreqVelocityMSE, LatentKL, TokenKL, VelocityMSE

B, K, C, H, W = 3, 4, 2, 2, 3


def make_tokens(seed=0):
    generator = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 5, generator=generator, dtype=torch.float64) * 3
    ref_logp = logp + 0.7 * torch.randn(3, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    return logp, ref_logp, mask


def make_steps(seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(B, K, C, H, W, generator=generator, dtype=torch.float64)
    b = a + 0.3 * torch.randn(B, K, C, H, W, generator=generator, dtype=torch.float64)
    std = 0.2 + torch.rand(B, K, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    return a, b, std, mask


def reference_step_mean(per_step, mask):
    """(1/B) sum_i mean over sample i's trained steps of per_step[i][k]."""
    total = 0.0
    for i, row in enumerate(per_step):
        values = [value for k, value in enumerate(row) if mask[i][k]]
        total += sum(values) / len(values) if values else 0.0
    return total / len(per_step)


def mean_squared(a, b):
    flat_a, flat_b = a.flatten().tolist(), b.flatten().tolist()
    return sum((x - y) ** 2 for x, y in zip(flat_a, flat_b, strict=True)) / len(flat_a)


@pytest.mark.parametrize(
    "estimator, formula",
    [
        ("k1", lambda lp, ref: lp - ref),
        ("k2", lambda lp, ref: 0.5 * (lp - ref) ** 2),
        ("k3", lambda lp, ref: math.exp(ref - lp) - (ref - lp) - 1),
    ],
)
def test_token_kl_estimators_match_float64_reference(estimator, formula):
    logp, ref_logp, mask = make_tokens()
    value = TokenKL(estimator=estimator)(logp, ref_logp, mask)
    terms = [
        formula(float(logp[i, t]), float(ref_logp[i, t]))
        for i in range(3)
        for t in range(5)
        if mask[i, t]
    ]
    assert value.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_token_kl_padding_is_ignored_and_gets_zero_gradient():
    logp, ref_logp, mask = make_tokens(seed=1)
    clean = TokenKL()(logp, ref_logp, mask)
    dirty_logp = logp.masked_fill(~mask, float("inf")).requires_grad_()
    dirty = TokenKL()(dirty_logp, ref_logp.masked_fill(~mask, -1e30), mask)
    dirty.backward()
    assert dirty.item() == clean.item()
    assert torch.equal(dirty_logp.grad[~mask], torch.zeros_like(dirty_logp.grad[~mask]))


def test_token_kl_is_zero_for_identical_policies_and_k3_nonnegative():
    logp, ref_logp, _ = make_tokens(seed=2)
    for estimator in ("k1", "k2", "k3"):
        assert TokenKL(estimator=estimator)(logp, logp.clone()).item() == 0.0
    assert TokenKL(estimator="k3")(logp, ref_logp).item() > 0


def test_latent_kl_matches_float64_reference():
    mean, ref_mean, std, mask = make_steps()
    value = LatentKL()(mean, ref_mean, std, mask)
    per_step = [
        [mean_squared(mean[i, k], ref_mean[i, k]) / (2 * float(std[i, k]) ** 2) for k in range(K)]
        for i in range(B)
    ]
    assert value.item() == pytest.approx(reference_step_mean(per_step, mask.tolist()), rel=1e-12)
    # a std kept broadcastable against the latent ([B, K, 1, 1, 1]) gives the same value
    assert LatentKL()(mean, ref_mean, std[..., None, None, None], mask).item() == value.item()


def test_latent_kl_untrained_steps_may_hold_anything():
    mean, ref_mean, std, mask = make_steps(seed=1)
    clean = LatentKL()(mean, ref_mean, std, mask)
    dirty_mean = mean.masked_fill(~mask[..., None, None, None], float("nan")).requires_grad_()
    dirty = LatentKL()(dirty_mean, ref_mean, std.masked_fill(~mask, 0.0), mask)
    dirty.backward()
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-14)
    assert torch.equal(dirty_mean.grad[~mask], torch.zeros_like(dirty_mean.grad[~mask]))


def test_velocity_mse_is_mean_over_elements_then_steps_then_batch():
    velocity, ref_velocity, _, mask = make_steps(seed=2)
    value = VelocityMSE()(velocity, ref_velocity, mask)
    per_step = [
        [mean_squared(velocity[i, k], ref_velocity[i, k]) for k in range(K)] for i in range(B)
    ]
    assert value.item() == pytest.approx(reference_step_mean(per_step, mask.tolist()), rel=1e-12)
    all_steps = VelocityMSE()(velocity, ref_velocity)
    expected_all = sum(sum(row) for row in per_step) / (B * K)
    assert all_steps.item() == pytest.approx(expected_all, rel=1e-12)


def test_high_freq_velocity_mse_is_the_velocity_mse_of_what_varies_inside_each_block():
    gen = torch.Generator().manual_seed(5)
    velocity = torch.randn(2, 3, 3, 8, 8, generator=gen, dtype=torch.float64)
    ref_velocity = torch.randn(2, 3, 3, 8, 8, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [True, True, True]])

    def fine_detail(v):  # independent: loops over the 4 x 4 blocks of each 8 x 8 plane
        out = v.clone()
        for by in range(0, 8, 4):
            for bx in range(0, 8, 4):
                block = v[..., by : by + 4, bx : bx + 4]
                out[..., by : by + 4, bx : bx + 4] = block - block.mean(dim=(-2, -1), keepdim=True)
        return out

    expected = VelocityMSE()(fine_detail(velocity), fine_detail(ref_velocity), mask)
    value = HighFreqVelocityMSE(patch=4)(velocity, ref_velocity, mask)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    # a change of the coarse picture (one value per block) costs nothing; fine detail does
    coarse = torch.randn(2, 3, 3, 2, 2, generator=gen, dtype=torch.float64)
    shifted = velocity + coarse.repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert HighFreqVelocityMSE(patch=4)(shifted, velocity).item() < 1e-24
    assert VelocityMSE()(shifted, velocity).item() > 0.1
    assert (HighFreqVelocityMSE.needs_reference, HighFreqVelocityMSE.domain) == (True, "image")
    with pytest.raises(ValueError, match="patch 3 must divide"):
        HighFreqVelocityMSE(patch=3)(velocity, ref_velocity)
    with pytest.raises(ValueError, match="int >= 2"):
        HighFreqVelocityMSE(patch=1)


def reference_entropy(logits_row):
    top = max(logits_row)
    normaliser = sum(math.exp(x - top) for x in logits_row)
    probs = [math.exp(x - top) / normaliser for x in logits_row]
    return -sum(p * math.log(p) for p in probs if p > 0)


def test_entropy_value_is_minus_mean_token_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 3, 7, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    value = Entropy()(logits, mask)
    entropies = [reference_entropy(logits[i, t].tolist()) for i, t in [(0, 0), (0, 1), (1, 0)]]
    assert value.item() == pytest.approx(-sum(entropies) / 3, rel=1e-12)


def test_adding_weighted_entropy_to_the_loss_increases_entropy():
    logits = torch.tensor([[[4.0, 0.0, -1.0, 0.5]]], requires_grad=True)
    regularizer = Entropy(weight=1.0)
    (regularizer.weight * regularizer(logits)).backward()
    with torch.no_grad():
        stepped = logits - 0.1 * logits.grad  # one gradient-descent step on the loss
    assert -Entropy()(stepped).item() > -Entropy()(logits.detach()).item()


def test_entropy_handles_banned_tokens_with_minus_inf_logits():
    logits = torch.tensor([[[2.0, float("-inf"), 0.0, float("-inf")]]], requires_grad=True)
    value = Entropy()(logits)
    value.backward()
    assert value.item() == pytest.approx(-reference_entropy([2.0, 0.0]), rel=1e-6)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0, 1].item() == 0.0


def test_attributes_the_trainer_reads():
    assert (TokenKL.needs_reference, TokenKL.domain) == (True, "text")
    assert (LatentKL.needs_reference, LatentKL.domain) == (True, "image")
    assert (VelocityMSE.needs_reference, VelocityMSE.domain) == (True, "image")
    assert (Entropy.needs_reference, Entropy.domain) == (False, "text")
    assert VelocityMSE().weight == 1.5e-5
    assert REGULARIZERS.build(dict(type="TokenKL", estimator="k2", weight=0.1)).weight == 0.1
    assert isinstance(REGULARIZERS.build(dict(type="Entropy")), Entropy)


def test_value_is_unweighted():
    logp, ref_logp, mask = make_tokens()
    assert (
        TokenKL(weight=0.0)(logp, ref_logp, mask).item()
        == TokenKL(weight=5.0)(logp, ref_logp, mask).item()
    )


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: TokenKL(estimator="k4"), "unknown estimator 'k4'; valid: k1, k2, k3"),
        (lambda: VelocityMSE(weight=-1.0), "weight must be >= 0"),
        (lambda: Entropy()(torch.zeros(2, 3)), r"logits must be \[B, T, V\]"),
        (
            lambda: VelocityMSE()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(3, 2)),
            "mask",
        ),
        (lambda: LatentKL()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), 1.0), "reference tensor"),
        (lambda: TokenKL()(torch.zeros(2, 3), torch.zeros(2, 4)), "ref_logp"),
    ],
)
def test_bad_input_raises_one_line_errors(build, message):
    with pytest.raises(ValueError, match=message) as error:
        build()
    assert "\n" not in str(error.value)
