from __future__ import annotations

import pytest
import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.judge import ShapeWorldJudge
from unigrpo_kit.rewards.placebo import CoinFlip
from unigrpo_kit.tasks.shapeworld.renderer import render_batch
from unigrpo_kit.tasks.shapeworld.scene import Obj, Scene

GOOD = Scene((Obj("red", "circle", 0),))
WRONG = Scene((Obj("blue", "triangle", 3),))


def test_coin_lands_one_at_rate_p() -> None:
    prompts = [f"prompt {i}" for i in range(4000)]
    scores = CoinFlip(p=0.3, seed=1)(prompts=prompts, texts=["x"] * 4000).scores
    assert set(scores.tolist()) <= {0.0, 1.0}
    # binomial sd sqrt(0.3 * 0.7 / 4000) ~ 0.007: 5 sd either side
    assert abs(float(scores.mean()) - 0.3) < 0.036
    assert float(CoinFlip(p=0.0)(prompts=prompts).scores.sum()) == 0
    assert float(CoinFlip(p=1.0)(prompts=prompts).scores.mean()) == 1


def test_coin_is_a_function_of_the_episode_and_the_seed() -> None:
    prompts = [f"prompt {i}" for i in range(200)]
    texts = [f"text {i}" for i in range(200)]
    first = CoinFlip(seed=7)(prompts=prompts, texts=texts).scores
    again = CoinFlip(seed=7)(prompts=list(reversed(prompts)), texts=list(reversed(texts))).scores
    assert torch.equal(first, again.flip(0))  # no hidden state: order and calls do not matter
    other_seed = CoinFlip(seed=8)(prompts=prompts, texts=texts).scores
    other_text = CoinFlip(seed=7)(prompts=prompts, texts=[t + "!" for t in texts]).scores
    assert not torch.equal(first, other_seed)
    assert not torch.equal(first, other_text)


def test_coin_ignores_quality_but_logs_the_judge() -> None:
    from unigrpo_kit.tasks.shapeworld.prompts import Prompt
    from unigrpo_kit.tasks.shapeworld.scene import describe
    from unigrpo_kit.tasks.shapeworld.spec import Req, Spec

    spec = Spec((Req("red", "circle"),), ())
    prompt = Prompt("a red circle", "single_object", spec, describe(GOOD), GOOD, "train")
    images = render_batch([GOOD, WRONG] * 100)
    images = images + 1e-3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    reward = REWARDS.build(dict(type="CoinFlip", p=0.5, log=dict(type="ShapeWorldJudge")))
    out = reward(prompts=[prompt] * 200, images=images)
    judge = ShapeWorldJudge()(prompts=[prompt] * 200, images=images)
    assert torch.equal(out.metrics["judge/strict"], judge.scores)
    assert judge.scores[0::2].mean() == 1 and judge.scores[1::2].mean() == 0
    # the right and the wrong picture land 1 at the same rate (sd of a difference ~0.07)
    assert abs(float(out.scores[0::2].mean() - out.scores[1::2].mean())) < 0.25
    assert reward.needs == frozenset({"images"})


def test_coin_rejects_a_probability_outside_0_1() -> None:
    with pytest.raises(ValueError, match="CoinFlip p must be a probability"):
        CoinFlip(p=1.5)
