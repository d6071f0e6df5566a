"""Failure is data: episodes a reward cannot score get no advantage and no loss and are counted;
a reward that raises invalidates its step, not the run; per-reward group normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.advantages import GroupNorm, group_advantages
from unigrpo_kit.guard import InvalidRewardError
from unigrpo_kit.rewards.base import Reward, RewardOutput


def by_hand_group_norm(rewards: list[float], groups: list[int]) -> list[float]:
    """GRPO's (r - mean) / (std + 1e-6) per group (population std), an independent loop."""
    out = []
    for r, g in zip(rewards, groups):
        members = [x for x, h in zip(rewards, groups) if h == g]
        mean = sum(members) / len(members)
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / len(members))
        out.append((r - mean) / (std + 1e-6))
    return out


def test_invalid_episodes_get_zero_and_leave_their_group_statistics():
    rewards = torch.tensor([1.0, float("nan"), 0.0, 3.0, 2.0, float("nan")])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    advantages = group_advantages(GroupNorm(), rewards, groups)
    valid = [0, 2, 3, 4]
    expected = by_hand_group_norm([1.0, 0.0, 3.0, 2.0], [0, 0, 1, 1])
    assert advantages[[1, 5]].tolist() == [0.0, 0.0]
    torch.testing.assert_close(advantages[valid], torch.tensor(expected), atol=1e-5, rtol=0)
    assert group_advantages(GroupNorm(), torch.full((3,), float("nan")), groups[:3]).eq(0).all()


def test_per_reward_group_normalisation_weights_each_rewards_own_advantage():
    big = torch.tensor([100.0, 300.0, 200.0, 0.0])
    small = torch.tensor([0.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1])
    components = {"big": (0.5, big), "small": (2.0, small)}
    advantages = group_advantages(GroupNorm(), 0.5 * big + 2.0 * small, groups, components)
    a_big = by_hand_group_norm(big.tolist(), groups.tolist())
    a_small = by_hand_group_norm(small.tolist(), groups.tolist())
    expected = [0.5 * b + 2.0 * s for b, s in zip(a_big, a_small)]
    torch.testing.assert_close(advantages, torch.tensor(expected), atol=1e-5, rtol=0)


def test_weighted_sum_asks_for_group_normalisation_and_the_trainer_applies_it(make_trainer):
    trainer = make_trainer(
        "unified_single_round",
        reward=dict(
            _delete_=True,
            type="WeightedSum",
            rewards=[dict(type="Brightness"), dict(type="QualityReward")],
            weights=[1.0, 0.5],
            normalize="group",
        ),
    )
    batch = trainer.collect()
    scored = trainer.score(batch)
    assert set(scored.components) == {"Brightness", "QualityReward"}
    groups = batch.group_ids.tolist()
    expected = [0.0] * len(batch)
    for name, weight in (("Brightness", 1.0), ("QualityReward", 0.5)):
        part = by_hand_group_norm(scored.metrics[f"{name}/score"].tolist(), groups)
        expected = [e + weight * p for e, p in zip(expected, part)]
    torch.testing.assert_close(batch.advantages, torch.tensor(expected), atol=1e-4, rtol=0)


class _Flaky(Reward):
    """NaN for the rows in ``nan_rows``; raises on the calls in ``raise_on`` (test-only)."""

    needs = frozenset({"images"})

    def __init__(self, nan_rows=(), raise_on=()):
        self.nan_rows, self.raise_on, self.calls = set(nan_rows), set(raise_on), 0

    def compute(self, *, prompts, images, texts):
        self.calls += 1
        if self.calls in self.raise_on:
            raise ConnectionError("the reward server went away\nsecond line")
        scores = images.float().mean(dim=(1, 2, 3))
        for row in self.nan_rows:
            scores[row] = float("nan")
        return RewardOutput(scores)


def test_nan_rewards_train_nothing_and_are_counted(make_trainer):
    trainer = make_trainer("unified_single_round", **{"algorithm.skip_zero_advantage": False})
    trainer.reward = _Flaky(nan_rows=[0, 3])
    batch = trainer.collect()
    trainer.score(batch)
    kept = trainer.worth_training(batch)
    assert len(kept) == len(batch) - 2
    assert torch.isfinite(kept.rewards).all()
    metrics = trainer.train_step().metrics
    assert metrics["reward/invalid_frac"] == pytest.approx(2 / len(batch))
    assert math.isfinite(metrics["reward/mean"]) and math.isfinite(metrics["loss/image"])


def test_a_reward_that_raises_invalidates_its_step_and_k_in_a_row_stop_the_run(
    make_trainer, capsys
):
    trainer = make_trainer(
        "unified_single_round", **{"algorithm.max_invalid_reward_steps": 2, "schedule.steps": 10}
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.reward = _Flaky(raise_on={1})
    metrics = trainer.train_step().metrics  # step 1: the reward raised
    assert metrics["reward/invalid_frac"] == 1.0 and math.isnan(metrics["reward/mean"])
    assert metrics["episodes/trained"] == 0
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    err = capsys.readouterr().err
    assert "step 1: the reward failed (ConnectionError: the reward server went away)" in err
    trainer.train_step()  # step 2: the reward works again, the count resets
    trainer.reward = _Flaky(raise_on={1, 2})
    trainer.train_step()
    with pytest.raises(InvalidRewardError, match="2 steps in a row without one valid reward"):
        trainer.train_step()
