"""Group-relative advantage estimators against float64 hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.advantages import RLOO, GroupMean, GroupMeanGlobalStd, GroupNorm
from unigrpo_kit.registry import ADVANTAGES

REWARDS = [0.3, 1.0, 0.2, 0.9, 0.5, 0.5, 0.5, 2.0, -1.0, 0.25, 4.0]
GROUPS = ["a", "b", "a", "b", "c", "c", "c", "d", "a", "b", "e"]  # c constant, e a singleton


def groups_of(rewards, groups):
    members = {}
    for position, group in enumerate(groups):
        members.setdefault(group, []).append(rewards[position])
    return members


def population_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def sample_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def reference(rewards, groups, kind, eps=1e-6, unbiased=False):
    members = groups_of(rewards, groups)
    std_of = sample_std if unbiased else population_std
    batch_std = std_of(rewards)
    out = []
    for reward, group in zip(rewards, groups, strict=True):
        values = members[group]
        if len(set(values)) == 1:
            out.append(0.0)
            continue
        mean = sum(values) / len(values)
        if kind == "norm":
            out.append((reward - mean) / (std_of(values) + eps))
        elif kind == "mean":
            out.append(reward - mean)
        elif kind == "rloo":
            out.append(reward - (sum(values) - reward) / (len(values) - 1))
        else:
            out.append((reward - mean) / (batch_std + eps))
    return out


ESTIMATORS = [
    (GroupNorm, dict(), "norm", {}),
    (GroupNorm, dict(unbiased=True, eps=1e-4), "norm", dict(unbiased=True, eps=1e-4)),
    (GroupMean, dict(), "mean", {}),
    (RLOO, dict(), "rloo", {}),
    (GroupMeanGlobalStd, dict(), "global", {}),
    (GroupMeanGlobalStd, dict(unbiased=True), "global", dict(unbiased=True)),
]


@pytest.mark.parametrize("cls, kwargs, kind, ref_kwargs", ESTIMATORS)
def test_matches_float64_reference(cls, kwargs, kind, ref_kwargs):
    advantages = cls(**kwargs)(torch.tensor(REWARDS, dtype=torch.float64), GROUPS)
    expected = reference(REWARDS, GROUPS, kind, **ref_kwargs)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", [GroupNorm, GroupMean, RLOO, GroupMeanGlobalStd])
def test_constant_groups_and_singletons_get_exactly_zero(cls, dtype):
    # in float64, 0.7 * 3 / 3 != 0.7: a plain r - mean would leave a 1e-16 residue
    rewards = torch.tensor([0.7, 0.7, 0.7, 7.0, 0.3, 0.9], dtype=dtype)
    group_ids = torch.tensor([4, 4, 4, 9, 2, 2])
    advantages = cls()(rewards, group_ids)
    assert advantages[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert (advantages[4:] != 0).all()
    assert torch.isfinite(advantages).all()


def test_rloo_matches_hand_computation():
    advantages = RLOO()(torch.tensor([1.0, 2.0, 4.0, 10.0, 20.0]), [0, 0, 0, 1, 1])
    # group 0: 1 - (2+4)/2, 2 - (1+4)/2, 4 - (1+2)/2; group 1: 10 - 20, 20 - 10
    torch.testing.assert_close(advantages, torch.tensor([-2.0, -0.5, 2.5, -10.0, 10.0]))


def test_group_norm_hand_numbers_and_population_std():
    # rewards 0 and 1: mean 0.5, population std 0.5, so A = +-1 (unbiased std would give +-0.707)
    advantages = GroupNorm(eps=0.0)(torch.tensor([0.0, 1.0]), [0, 0])
    torch.testing.assert_close(advantages, torch.tensor([-1.0, 1.0]))
    unbiased = GroupNorm(eps=0.0, unbiased=True)(torch.tensor([0.0, 1.0]), [0, 0])
    torch.testing.assert_close(unbiased, torch.tensor([-1.0, 1.0]) / math.sqrt(2))


@pytest.mark.parametrize("cls", [GroupNorm, GroupMean, RLOO, GroupMeanGlobalStd])
def test_clip_bounds_advantages_and_leaves_the_rest(cls):
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 100.0, 3.0, 1.0])
    group_ids = [0] * 8 + [1, 1]
    unclipped = cls()(rewards, group_ids)
    clipped = cls(clip=2.0)(rewards, group_ids)
    assert unclipped.abs().max() > 2.0
    torch.testing.assert_close(clipped, unclipped.clamp(-2.0, 2.0))


def test_group_ids_any_hashables_or_tensor_in_any_order():
    rewards = torch.tensor([1.0, 5.0, 3.0, 7.0])
    by_tensor = GroupNorm()(rewards, torch.tensor([30, 10, 30, 10]))
    by_tuples = GroupNorm()(rewards, [("p", 3), ("p", 1), ("p", 3), ("p", 1)])
    by_floats = GroupNorm()(rewards, torch.tensor([0.5, 1.5, 0.5, 1.5]))
    by_scalar_tensors = GroupNorm()(rewards, list(torch.tensor([30, 10, 30, 10])))
    expected = torch.tensor([-1.0, -1.0, 1.0, 1.0]) / (1 + 1e-6)
    torch.testing.assert_close(by_tensor, expected)
    torch.testing.assert_close(by_tuples, expected)
    torch.testing.assert_close(by_floats, expected)
    torch.testing.assert_close(by_scalar_tensors, expected)


def test_output_dtype_follows_rewards():
    assert GroupMean()(torch.tensor([1, 0, 1]), [0, 0, 0]).dtype == torch.float32
    assert GroupMean()(torch.tensor([1.0, 0.0], dtype=torch.float64), [0, 0]).dtype == torch.float64
    assert (
        GroupMean()(torch.tensor([1.0, 0.0], dtype=torch.bfloat16), [0, 0]).dtype == torch.bfloat16
    )


def test_registry_builds_each_estimator():
    for name in ("GroupNorm", "GroupMean", "RLOO", "GroupMeanGlobalStd"):
        estimator = ADVANTAGES.build(dict(type=name, clip=5.0))
        assert type(estimator).__name__ == name and estimator.clip == 5.0


@pytest.mark.parametrize(
    "rewards, group_ids, message",
    [
        (torch.tensor([1.0, 2.0]), [0, 0, 1], "group_ids has 3 entries but rewards has 2"),
        (torch.tensor([1.0, float("nan")]), [0, 0], "rewards must be finite"),
        (torch.ones(2, 2), [0, 1], r"rewards must be 1-D"),
        (torch.ones(2), torch.zeros(2, 1), r"group_ids must be 1-D"),
        (torch.ones(2), [[0], [1]], "group_ids must be hashable"),
    ],
)
def test_bad_input_raises_one_line_errors(rewards, group_ids, message):
    with pytest.raises(ValueError, match=message) as error:
        GroupNorm()(rewards, group_ids)
    assert "\n" not in str(error.value)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="clip must be > 0"):
        GroupNorm(clip=0.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        GroupMeanGlobalStd(eps=-1.0)
