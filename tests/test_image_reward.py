"""``algorithm.image_reward``: the painter's own reward term. The text keeps UniGRPO's shared
advantage A; the trained denoising steps get A + w * A(q), q the image reward, normalised within
each group like the terminal reward."""

from __future__ import annotations

import pytest
import torch

from unigrpo_kit.recipe import RecipeError, load_recipe
from unigrpo_kit.rewards.base import RewardOutput


def pin_reward(monkeypatch, trainer, scores):
    scores = torch.as_tensor(scores, dtype=torch.float32)
    monkeypatch.setattr(trainer, "reward", lambda **_: RewardOutput(scores.clone()))


def pin_image_reward(monkeypatch, trainer, scores):
    scores = torch.as_tensor(scores, dtype=torch.float32)

    def reward(*, prompts, images=None, texts=None):
        assert images is not None and images.shape[0] == len(scores)
        return RewardOutput(scores.clone())

    monkeypatch.setattr(trainer, "image_reward", reward)


def group_norm(values, groups):
    """(v - mean_g) / (population std_g + 1e-6), 0 in constant groups: written out per group."""
    out = []
    for i, v in enumerate(values):
        members = [values[j] for j in range(len(values)) if groups[j] == groups[i]]
        mean = sum(members) / len(members)
        std = (sum((m - mean) ** 2 for m in members) / len(members)) ** 0.5
        out.append(0.0 if std == 0 else (v - mean) / (std + 1e-6))
    return out


def test_the_painter_gets_its_term_and_the_text_does_not(make_trainer, monkeypatch):
    weight = 0.5
    trainer = make_trainer(
        "unified_multiround",
        **{
            "algorithm.image_reward": dict(type="QualityReward"),
            "algorithm.image_reward_weight": weight,
        },
    )
    pin_reward(monkeypatch, trainer, [1.0, 0.0, 0.0, 0.0])
    pin_image_reward(monkeypatch, trainer, [0.2, 0.9, 0.4, 0.8])
    batch = trainer.collect()
    scored = trainer.score(batch)
    groups = batch.group_ids.tolist()
    assert groups == [0, 0, 1, 1]
    shared = group_norm([1.0, 0.0, 0.0, 0.0], groups)
    painter = group_norm([0.2, 0.9, 0.4, 0.8], groups)
    expected_image = [a + weight * q for a, q in zip(shared, painter, strict=True)]
    assert batch.advantages.tolist() == pytest.approx(shared, abs=1e-5)
    assert batch.image_advantages.tolist() == pytest.approx(expected_image, abs=1e-5)
    assert scored.metrics["reward/image_term"].tolist() == pytest.approx([0.2, 0.9, 0.4, 0.8])
    # group 1's terminal rewards are equal (A = 0) but its images differ: it is still trained
    kept = trainer.worth_training(batch)
    assert len(kept) == 4


def test_the_image_loss_uses_the_image_advantages(make_trainer):
    trainer = make_trainer("unified_single_round", **{"algorithm.regularizers": []})
    batch = trainer.collect()
    batch.rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    batch.advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    base = trainer.terms(batch).metrics
    batch.image_advantages = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    flipped = trainer.terms(batch).metrics
    # at ratio 1 the clipped loss is -mean(A): the image term flips sign, the text term does not
    assert flipped["loss/text"] == pytest.approx(base["loss/text"], abs=1e-7)
    assert base["loss/image"] == pytest.approx(0.0, abs=1e-6)  # mean of +-1 over 2 groups
    batch.image_advantages = torch.tensor([2.0, 2.0, 2.0, 2.0])
    assert trainer.terms(batch).metrics["loss/image"] == pytest.approx(-2.0, abs=1e-5)


def test_a_step_with_an_image_reward_trains_and_logs_it(make_trainer):
    trainer = make_trainer(
        "unified_single_round", **{"algorithm.image_reward": dict(type="QualityReward")}
    )
    metrics = trainer.train_step().metrics
    assert 0.0 <= metrics["reward/image_term"] <= 1.0
    assert metrics["ratio/self_check_max_dev"] < 1e-4


def test_without_an_image_reward_both_halves_share_one_advantage(make_trainer, monkeypatch):
    trainer = make_trainer("unified_single_round")
    pin_reward(monkeypatch, trainer, [1.0, 0.0, 0.0, 1.0])
    batch = trainer.collect()
    trainer.score(batch)
    assert batch.image_advantages is None


@pytest.mark.parametrize(
    "base, image_reward, message",
    [
        ("text_grpo", "QualityReward", r"algorithm\.image_reward.*mode='text'"),
        ("unified_single_round", "QualityRewardd", r"algorithm\.image_reward"),
    ],
    ids=["text-only recipe", "unknown reward"],
)
def test_a_wrong_image_reward_is_refused_in_one_line(tmp_path, base, image_reward, message):
    recipe = tmp_path / "r.py"
    recipe.write_text(
        f"_base_ = ['{_recipes() / (base + '.py')}']\n"
        f"algorithm = dict(image_reward=dict(type='{image_reward}'))\n"
    )
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe)


def _recipes():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "recipes"


def test_cfg_options_may_set_the_optional_key_the_recipe_leaves_out():
    cfg = load_recipe(
        _recipes() / "unified_single_round.py",
        ["algorithm.image_reward={'type': 'PainterFidelity'}", "algorithm.image_reward_weight=0.5"],
    )
    assert cfg.algorithm.image_reward == {"type": "PainterFidelity"}
    assert cfg.algorithm.image_reward_weight == 0.5
    with pytest.raises(RecipeError, match="closest keys"):
        load_recipe(_recipes() / "unified_single_round.py", ["algorithm.image_rewards=1"])
