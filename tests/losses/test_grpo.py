"""GRPOLoss: verl's aggregation modes, padded tokens, metrics, errors."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.losses.grpo import GRPOLoss
from unigrpo_kit.registry import LOSSES

AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def reference_loss(logp, old_logp, advantages, mask, agg, eps_low, eps_high, dual_clip, norm_len):
    """Float64 GRPO loss written with Python loops from the per-token definition."""
    batch, length = len(logp), len(logp[0])
    per_token = [[0.0] * length for _ in range(batch)]
    for i in range(batch):
        for t in range(length):
            if mask[i][t]:
                ratio = math.exp(logp[i][t] - old_logp[i][t])
                clipped_ratio = min(max(ratio, 1 - eps_low), 1 + eps_high)
                loss = -min(ratio * advantages[i], clipped_ratio * advantages[i])
                if dual_clip is not None and advantages[i] < 0:
                    loss = min(loss, -dual_clip * advantages[i])
                per_token[i][t] = loss
    counts = [sum(1 for t in range(length) if mask[i][t]) for i in range(batch)]
    sums = [sum(per_token[i]) for i in range(batch)]
    if agg == "token-mean":
        return sum(sums) / max(sum(counts), 1)
    if agg == "seq-mean-token-mean":
        return sum(s / c if c else 0.0 for s, c in zip(sums, counts, strict=True)) / batch
    if agg == "seq-mean-token-sum":
        return sum(sums) / batch
    return sum(sums) / (batch * (length if norm_len is None else norm_len))


def make_batch(seed=0, batch=4, length=6):
    generator = torch.Generator().manual_seed(seed)
    logp = -torch.rand(batch, length, generator=generator, dtype=torch.float64) * 4
    old_logp = logp + 0.5 * torch.randn(batch, length, generator=generator, dtype=torch.float64)
    advantages = torch.randn(batch, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([6, 3, 0, 1])  # an empty sequence included
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return logp, old_logp, advantages, mask


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("clip_eps_high, dual_clip", [(None, None), (0.28, 3.0)])
def test_loss_matches_float64_reference(agg, clip_eps_high, dual_clip):
    logp, old_logp, advantages, mask = make_batch()
    out = GRPOLoss(clip_eps=0.2, clip_eps_high=clip_eps_high, dual_clip=dual_clip, agg=agg)(
        logp, old_logp, advantages, mask
    )
    expected = reference_loss(
        logp.tolist(), old_logp.tolist(), advantages.tolist(), mask.tolist(), agg,
        0.2, 0.2 if clip_eps_high is None else clip_eps_high, dual_clip, None,
    )  # fmt: skip
    assert out.loss.dtype == torch.float64
    assert out.loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_norm_len_is_a_constant_normaliser():
    logp, old_logp, advantages, mask = make_batch()
    out = GRPOLoss(agg="seq-mean-token-sum-norm", norm_len=100)(logp, old_logp, advantages, mask)
    expected = reference_loss(
        logp.tolist(), old_logp.tolist(), advantages.tolist(), mask.tolist(),
        "seq-mean-token-sum-norm", 0.2, 0.2, None, 100,
    )  # fmt: skip
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    default = GRPOLoss(agg="seq-mean-token-sum-norm")(logp, old_logp, advantages, mask)
    assert default.loss.item() == pytest.approx(out.loss.item() * 100 / 6, rel=1e-12)


def test_seq_mean_token_mean_weights_sequences_equally_and_token_mean_weights_tokens():
    # policies agree, so each valid token's loss is -A of its sequence
    logp = torch.zeros(2, 4)
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    advantages = torch.tensor([1.0, -1.0])
    by_sequence = GRPOLoss(agg="seq-mean-token-mean")(logp, logp, advantages, mask).loss
    by_token = GRPOLoss(agg="token-mean")(logp, logp, advantages, mask).loss
    by_sum = GRPOLoss(agg="seq-mean-token-sum")(logp, logp, advantages, mask).loss
    assert by_sequence.item() == pytest.approx(0.0)  # (-1 + 1) / 2
    assert by_token.item() == pytest.approx(-3 / 5)  # (-4 + 1) / 5
    assert by_sum.item() == pytest.approx(-3 / 2)  # (-4 + 1) / 2


@pytest.mark.parametrize("agg", AGG_MODES)
def test_padded_tokens_get_zero_gradient_and_do_not_change_the_loss(agg):
    logp, old_logp, advantages, mask = make_batch(seed=1)
    loss_fn = GRPOLoss(agg=agg, dual_clip=3.0)
    logp = logp.clone().requires_grad_()
    out = loss_fn(logp, old_logp, advantages, mask)
    out.loss.backward()
    assert torch.equal(logp.grad[~mask], torch.zeros_like(logp.grad[~mask]))
    assert (logp.grad[mask] != 0).any()

    for garbage in (1e30, -1e30, float("inf"), float("nan")):
        dirty_logp = logp.detach().masked_fill(~mask, garbage).requires_grad_()
        dirty_old = old_logp.masked_fill(~mask, -garbage)
        dirty = loss_fn(dirty_logp, dirty_old, advantages, mask)
        dirty.loss.backward()
        assert dirty.loss.item() == out.loss.item()
        assert torch.equal(dirty_logp.grad, logp.grad)
        for name, value in out.metrics.items():
            assert dirty.metrics[name].item() == value.item(), name


@pytest.mark.parametrize("agg", AGG_MODES)
def test_all_padded_batch_gives_zero_loss_not_nan(agg):
    logp = torch.randn(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    out = GRPOLoss(agg=agg)(logp, torch.randn(2, 3), torch.tensor([1.0, -1.0]), mask)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.equal(logp.grad, torch.zeros(2, 3))
    assert all(value.item() == 0.0 for value in out.metrics.values())


def test_metrics_are_token_means_whatever_the_agg():
    logp, old_logp, advantages, mask = make_batch(seed=2)
    kls, ratios, clipped = [], [], []
    for i in range(4):
        for t in range(6):
            if mask[i, t]:
                log_ratio = float(logp[i, t] - old_logp[i, t])
                ratio = math.exp(log_ratio)
                kls.append(ratio - 1 - log_ratio)
                ratios.append(ratio)
                a = float(advantages[i])
                clipped.append((a > 0 and ratio > 1.2) or (a < 0 and ratio < 0.8))
    for agg in AGG_MODES:
        metrics = GRPOLoss(agg=agg)(logp, old_logp, advantages, mask).metrics
        assert metrics["approx_kl"].item() == pytest.approx(sum(kls) / len(kls), rel=1e-10)
        assert metrics["ratio_mean"].item() == pytest.approx(sum(ratios) / len(ratios), rel=1e-12)
        assert metrics["clip_frac"].item() == pytest.approx(sum(clipped) / len(clipped))


def test_half_precision_inputs_compute_in_float32():
    logp = torch.zeros(2, 3, dtype=torch.bfloat16)
    out = GRPOLoss()(logp, logp, torch.tensor([1.0, 2.0]), torch.ones(2, 3, dtype=torch.bool))
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(-1.5)


def test_float_mask_is_accepted_and_registry_builds_it():
    loss = LOSSES.build(dict(type="GRPOLoss", agg="token-mean", clip_eps_high=0.28))
    logp = torch.zeros(1, 3)
    out = loss(logp, logp, torch.tensor([2.0]), torch.tensor([[1.0, 1.0, 0.0]]))
    assert out.loss.item() == pytest.approx(-2.0)


def test_unknown_agg_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown agg 'mean'; valid modes: token-mean, "):
        GRPOLoss(agg="mean")


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((2, 3), (2, 3), (2, 1), (2, 3)), "advantages"),
        (((2, 3), (2, 4), (2,), (2, 3)), "old_logp"),
        (((2, 3), (2, 3), (2,), (3, 2)), "mask"),
        (((6,), (6,), (6,), (6,)), r"logp must be \[B, T\]"),
    ],
)
def test_bad_shapes_raise_one_line_errors(shapes, message):
    logp, old_logp, advantages, mask = (torch.zeros(shape) for shape in shapes)
    with pytest.raises(ValueError, match=message) as error:
        GRPOLoss()(logp, old_logp, advantages, mask)
    assert "\n" not in str(error.value)


def test_bad_norm_len_raises():
    with pytest.raises(ValueError, match="norm_len must be > 0"):
        GRPOLoss(agg="seq-mean-token-sum-norm", norm_len=0)
