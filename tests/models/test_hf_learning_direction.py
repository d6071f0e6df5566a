"""GRPO moves a real causal LM the way the reward asks, through the whole kit.

A tiny random Qwen2 (built from its config class, saved with ``save_pretrained`` and loaded
back through ``model.path``) is trained by ``recipes/hf/text_grpo.py`` for 30 steps on a reward
that counts the letter "e" in each completion, and on its negative. The count is judged on fresh
rollouts (other prompts, other sampling draws, the same seed before and after): it must rise
for the reward and fall for its negative. A sign error anywhere in the chain (a log-prob, the
ratio, the advantage, the loss) fails one direction.
"""

from __future__ import annotations

import pytest
import torch

from unigrpo_kit.models.tiny_random import save_tiny_causal_lm
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.rewards.base import Reward, RewardOutput
from unigrpo_kit.runner import build_trainer

RECIPE = "recipes/hf/text_grpo.py"


class _LetterCount(Reward):
    """sign * how many times ``letter`` occurs in each completion (test-only)."""

    needs = frozenset({"texts"})

    def __init__(self, letter: str, sign: float) -> None:
        self.letter, self.sign = letter, sign

    def compute(self, *, prompts, images, texts):
        counts = [self.sign * text.count(self.letter) for text in texts]
        return RewardOutput(torch.tensor(counts, dtype=torch.float32))


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("qwen") / "model", "qwen2")


def _fresh_count(trainer, sign: float) -> float:
    """The mean count of fresh rollouts drawn with a fixed seed (the trainer's streams kept)."""
    batch = trainer.collect(stream_seed=99)
    trainer.score(batch)
    return sign * float(batch.rewards.mean())


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_grpo_moves_a_letter_count_of_a_causal_lm_the_way_the_reward_asks(tiny_qwen, sign):
    cfg = load_recipe(
        RECIPE,
        [
            f"model.path={tiny_qwen}",
            "rollout.prompts_per_step=4",
            "rollout.group_size=8",
            "rollout.text_sampler.max_new_tokens=12",
            "optimizer.lr_text=3e-3",  # a tiny random model; real models take the recipe's 1e-6
            "algorithm.minibatch_size=32",
            "algorithm.inner_epochs=1",
        ],
    )
    cfg.threads = 1
    trainer = build_trainer(cfg)
    trainer.reward = _LetterCount("e", sign)
    before = _fresh_count(trainer, sign)
    first = trainer.train_step().metrics
    # the first minibatch is on-policy: recomputed log-probs are the recorded ones (ratio 1)
    assert first["ratio/self_check_max_dev"] < 1e-5
    for _ in range(29):
        trainer.train_step()
    after = _fresh_count(trainer, sign)
    if sign > 0:
        assert after > before + 1.0, (before, after)
    else:
        assert after < before - 0.3, (before, after)
