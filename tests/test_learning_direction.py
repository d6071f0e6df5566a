"""The policy-gradient updates move the policy the way the reward asks, on the tiny model.

The maths tests pin each loss against a formula; these tests pin the sign of the whole chain
(rollout -> reward -> advantage -> recomputed log-probs -> loss -> optimizer) by training on a
reward whose direction anyone can check, and its negative: the images' mean brightness (Flow-GRPO
on the image expert) and how often the reasoning says "left" (GRPO on the text expert). A sign
error anywhere in the path (the SDE mean, a log-prob, the ratio, the advantage) makes one of the
two directions fail; negating the advantage in either loss fails both. The reward is judged on
fresh rollouts (other prompts, other noise), drawn with the same seed before and after. The
test rewards replace the trainer's own and stay out of the registry.
"""

from __future__ import annotations

import pytest
import torch

from unigrpo_kit.rewards.base import Reward, RewardOutput


class _Brightness(Reward):
    """sign * the mean pixel value of each final image (test-only)."""

    needs = frozenset({"images"})

    def __init__(self, sign: float = 1.0) -> None:
        self.sign = sign

    def compute(self, *, prompts, images, texts):
        return RewardOutput(self.sign * images.float().mean(dim=(1, 2, 3)), {})


def _batch(trainer, seed: int):
    """The step's rollout for a fixed seed: the same prompts and the same noise every time."""
    batch = trainer.collect(stream_seed=seed)
    trainer.score(batch)
    return batch


def _reward_before_and_after_updates(trainer, updates: int = 10) -> tuple[float, float]:
    """Mean reward of fresh rollouts (seed 2) before and after ``updates`` optimizer steps of
    the trainer's loss on one batch (seed 1)."""
    train_batch = _batch(trainer, seed=1)
    before = float(_batch(trainer, seed=2).rewards.mean())
    trainer.model.train()
    for _ in range(updates):
        loss, _, _ = trainer.loss(train_batch)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
    return before, float(_batch(trainer, seed=2).rewards.mean())


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_flow_grpo_updates_move_the_images_the_way_the_reward_asks(make_trainer, sign):
    trainer = make_trainer(
        "image_flowgrpo",
        **{
            "rollout.prompts_per_step": 4,
            "rollout.group_size": 8,
            "optimizer.lr_image": 1e-3,
            "algorithm.regularizers": [],
            "algorithm.image_loss.clip_eps": 0.5,
        },
    )
    trainer.reward = _Brightness(sign)
    before, after = _reward_before_and_after_updates(trainer)
    # the reward (sign * brightness) of fresh rollouts rises, by more than float noise
    assert after - before > 0.005, (before, after)


class _WordCount(Reward):
    """sign * how many of its words are one of ``words`` in each reasoning (test-only)."""

    needs = frozenset({"texts"})

    def __init__(self, words: set[str], sign: float = 1.0) -> None:
        self.words, self.sign = words, sign

    def compute(self, *, prompts, images, texts):
        counts = [self.sign * sum(w in self.words for w in text.split()) for text in texts]
        return RewardOutput(torch.tensor(counts, dtype=torch.float32), {})


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_grpo_updates_move_the_reasoning_the_way_the_reward_asks(make_trainer, sign):
    trainer = make_trainer(
        "text_grpo",
        **{
            "rollout.prompts_per_step": 4,
            "rollout.group_size": 8,
            "rollout.text_sampler.max_new_tokens": 16,
            "optimizer.lr_text": 1e-2,
            "algorithm.regularizers": [],
        },
    )
    # colour words: ~1.3 per 16-token reasoning of the tiny random model, a dense enough signal
    # (a single rare word, "left", gave 3 rewarded episodes in 32: too few to move reliably)
    trainer.reward = _WordCount({"red", "yellow", "purple", "green", "blue", "orange"}, sign)
    before, after = _reward_before_and_after_updates(trainer)
    # fresh reasonings name colours more often (sign 1) or less often (sign -1); measured
    # +0.16 and +0.34 (in reward units)
    assert after - before > 0.05, (before, after)
