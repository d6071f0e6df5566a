"""The UniGRPO trainer on the tiny model: the on-policy self-check (and the off-policy cases it
must catch), and one advantage per episode shared by every generated token and trained step."""

from __future__ import annotations

import random
import re

import pytest
import torch

from unigrpo_kit.rewards.base import RewardOutput
from unigrpo_kit.rollout.recompute import recompute
from unigrpo_kit.trainer import OffPolicyError


def rollout(trainer, seed=0):
    prompts = trainer.task.sample_prompts(2, generator=random.Random(seed))
    return trainer.engine.rollout(prompts, 2, generator=torch.Generator().manual_seed(seed))


def perturb_(module: torch.nn.Module, scale: float, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def pin_reward(monkeypatch, trainer, scores):
    scores = torch.as_tensor(scores, dtype=torch.float32)

    def reward(*, prompts, images=None, texts=None):
        assert len(prompts) == len(scores)
        return RewardOutput(scores.clone())

    monkeypatch.setattr(trainer, "reward", reward)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- self-check
@pytest.mark.parametrize(
    "recipe, kinds",
    [
        ("unified_multiround", {"text", "image"}),
        ("unified_single_round", {"text", "image"}),
        ("image_flowgrpo", {"image"}),
        ("text_grpo", {"text"}),
    ],
)
def test_one_step_is_on_policy(make_trainer, monkeypatch, recipe, kinds):
    trainer = make_trainer(recipe)
    checked = []
    original = trainer.check_on_policy

    def spy(deviation):
        checked.append(dict(deviation))
        return original(deviation)

    monkeypatch.setattr(trainer, "check_on_policy", spy)
    metrics = trainer.train_step().metrics
    assert len(checked) == 1  # the first minibatch of the first inner epoch only
    assert set(checked[0]) == kinds
    assert 0 <= metrics["ratio/self_check_max_dev"] < 1e-4
    assert metrics["ratio/self_check_max_dev"] == max(checked[0].values())


def _perturb_lm_head(trainer):
    perturb_(trainer.model.lm_head, 0.5)


def _hotter_text_sampler(trainer):
    trainer.engine.text_sampler.temperature = 0.5


def _perturb_velocity_head(trainer):
    perturb_(trainer.model.velocity_head, 0.05)


def _noisier_image_sampler(trainer):
    trainer.image_sampler.noise_level = 1.0


@pytest.mark.parametrize(
    "kind, change",
    [
        ("text", _perturb_lm_head),
        ("text", _hotter_text_sampler),
        ("image", _perturb_velocity_head),
        ("image", _noisier_image_sampler),
    ],
    ids=["text-weights", "text-temperature", "image-weights", "image-noise-level"],
)
def test_off_policy_training_is_caught(make_trainer, monkeypatch, kind, change):
    """Roll out with one policy, train with another: the first minibatch must stop the run."""
    trainer = make_trainer("unified_single_round")
    original = trainer.engine.rollout

    def rollout_then_change(*args, **kwargs):
        batch = original(*args, **kwargs)
        change(trainer)
        return batch

    monkeypatch.setattr(trainer.engine, "rollout", rollout_then_change)
    with pytest.raises(OffPolicyError) as caught:
        trainer.train_step()
    message = str(caught.value)
    other = {"text": "image", "image": "text"}[kind]
    assert f"{kind} segment" in message
    assert f"{other} segment" not in message
    found = re.search(r"deviate by ([0-9.eE+-]+)", message)
    assert found, message
    assert float(found.group(1)) > trainer.cfg.algorithm.self_check_tol
    assert "\n" not in message
    # It stopped before any update.
    assert not trainer.optimizer.state
    assert trainer.step == 0


# ----------------------------------------------------------------------------- advantages
def _clip_loss(logp, old, adv, mask, eps):
    """-min(r A, clip(r) A), mean over each row's valid entries, then over rows (float64)."""
    ratio = torch.exp(logp - old)
    adv = adv[:, None].expand_as(logp)
    per = -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
    per = torch.where(mask, per, 0.0)
    return (per.sum(1) / mask.sum(1).clamp_min(1)).mean()


def test_loss_is_j_text_plus_lambda_j_flow_plus_reg_with_one_advantage_per_episode(
    make_trainer,
):
    lam, reg_weight = 0.5, 0.3
    trainer = make_trainer(
        "unified_multiround",
        **{
            "algorithm.image_loss_weight": lam,
            "algorithm.regularizers": [dict(type="VelocityMSE", weight=reg_weight)],
        },
    )
    batch = rollout(trainer)
    batch.image_segments[1].active[1] = False  # row 1 stopped after its first image
    batch.rewards = torch.tensor([1.0, 0.0, 0.25, 0.75])
    batch.advantages = trainer.advantage(batch.rewards, batch.group_ids).float()
    assert (batch.advantages != 0).all()
    perturb_(trainer.model, 0.02)  # ratios away from 1, velocities away from the reference

    total, parts, _ = trainer.loss(batch)

    kwargs = dict(image_sampler=trainer.image_sampler)
    with torch.no_grad():
        current = recompute(trainer.policy, batch, **kwargs)
        reference = recompute(trainer.reference, batch, **kwargs)
    adv = batch.advantages.double()
    algo = trainer.cfg.algorithm
    # Text: every generated token of the episode (reasoning and reflection) shares A_i.
    generated = [s for s in batch.segments if s.kind == "text" and s.generated]
    assert len(generated) == 2
    old_text = torch.cat([s.log_probs for s in generated], 1).double()
    text_mask = torch.cat([s.train_mask for s in generated], 1)
    j_text = _clip_loss(
        current.text.log_probs.double(), old_text, adv, text_mask, algo.text_loss.clip_eps
    )
    # Image: every trained step of every image of the episode shares A_i; inactive images don't
    # count.
    old_steps, step_mask = [], []
    for seg in batch.image_segments:
        steps = torch.nonzero(seg.trajectory.sde_mask).flatten()
        old_steps.append(seg.trajectory.log_probs[:, steps])
        step_mask.append(seg.active[:, None].expand(len(batch), steps.numel()))
    old_image = torch.cat(old_steps, 1).double()
    image_mask = torch.cat(step_mask, 1)
    assert image_mask.sum(1).tolist() == [4, 2, 4, 4]
    j_flow = _clip_loss(
        current.image.log_probs.double(), old_image, adv, image_mask, algo.image_loss.clip_eps
    )
    # Velocity MSE against the frozen reference, over the same trained steps.
    squared = (current.image.velocities.double() - reference.image.velocities.double()).square()
    per_step = squared.flatten(2).mean(-1)
    reg = (torch.where(image_mask, per_step, 0.0).sum(1) / image_mask.sum(1)).mean()
    assert reg > 0

    expected = j_text + lam * j_flow + reg_weight * reg
    torch.testing.assert_close(total.double(), expected, rtol=1e-5, atol=1e-7)
    assert parts["loss/text"] == pytest.approx(float(j_text), rel=1e-5, abs=1e-7)
    assert parts["loss/image"] == pytest.approx(float(j_flow), rel=1e-5, abs=1e-7)
    assert parts["reg/VelocityMSE"] == pytest.approx(float(reg), rel=1e-5, abs=1e-9)


def grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss, _, _ = trainer.loss(batch)
    loss.backward()
    named = dict(trainer.model.named_parameters())
    return loss, {
        k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for k, p in named.items()
        if p.requires_grad
    }


def test_an_episode_with_zero_advantage_contributes_no_gradient(make_trainer):
    trainer = make_trainer("unified_multiround", **{"algorithm.regularizers": []})
    batch = rollout(trainer)
    perturb_(trainer.model, 0.02)
    batch.advantages = torch.tensor([0.7, 0.0, -1.2, 0.4])
    _, full = grads(trainer, batch)
    _, without = grads(trainer, batch.select(torch.tensor([0, 2, 3])))
    assert any(g.abs().sum() > 0 for g in full.values())
    # Both losses are means over episodes: sum over 4 episodes / 4 vs over 3 / 3.
    for name in full:
        torch.testing.assert_close(full[name] * 4, without[name] * 3, rtol=1e-4, atol=1e-7)


def test_equal_rewards_give_exactly_zero_gradient_and_no_update(make_trainer, monkeypatch):
    trainer = make_trainer("unified_multiround", **{"algorithm.regularizers": []})
    pin_reward(monkeypatch, trainer, [0.5, 0.5, 0.5, 0.5])
    batch = rollout(trainer)
    batch.rewards = torch.full((4,), 0.5)
    batch.advantages = trainer.advantage(batch.rewards, batch.group_ids)
    assert (batch.advantages == 0).all()
    loss, g = grads(trainer, batch)
    assert float(loss.detach()) == 0.0
    assert all((v == 0).all() for v in g.values())
    before = state(trainer.model)
    metrics = trainer.train_step().metrics
    assert metrics["grad_norm"] == 0.0
    after = state(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pinned_rewards_give_group_relative_advantages_and_a_gradient(make_trainer, monkeypatch):
    trainer = make_trainer("unified_multiround")
    pin_reward(monkeypatch, trainer, [1.0, 0.0, 0.0, 1.0])
    result = trainer.train_step()
    batch = result.batch
    assert batch.rewards.tolist() == [1.0, 0.0, 0.0, 1.0]
    expected = trainer.advantage(batch.rewards, batch.group_ids)
    assert torch.equal(batch.advantages, expected.float())
    assert batch.advantages[0] > 0 > batch.advantages[1]
    assert batch.advantages[3] > 0 > batch.advantages[2]
    assert result.metrics["reward/mean"] == pytest.approx(0.5)
    assert result.metrics["reward/std"] == pytest.approx(0.5)
    assert result.metrics["grad_norm"] > 0


def test_optimizer_groups_follow_the_mode(make_trainer):
    lrs = {
        recipe: {g["name"]: g["lr"] for g in make_trainer(recipe).optimizer.param_groups}
        for recipe in ("text_grpo", "image_flowgrpo", "unified_single_round")
    }
    opt = make_trainer("unified_single_round").cfg.optimizer
    image_only = make_trainer("image_flowgrpo").cfg.optimizer
    assert lrs["text_grpo"] == {"text": opt.lr_text}
    assert lrs["image_flowgrpo"] == {"image": image_only.lr_image}
    assert lrs["unified_single_round"] == {"text": opt.lr_text, "image": opt.lr_image}
    # The image-only recipe sets its own image rate, above the unified recipes' (see its file).
    assert image_only.lr_image > opt.lr_image


# ----------------------------------------------------------------------------- known bugs
@pytest.mark.parametrize(
    "setting", [{"temperature": 0.5}, {"top_k": 3}], ids=["temperature", "top_k"]
)
def test_reflection_tokens_are_rescored_with_the_reflection_sampler(make_trainer, setting):
    """The reflection sampler has its own settings in the recipe; recomputing the reflection
    tokens' log-probs must apply them, not the reasoning sampler's (else every multi-round
    recipe with a reflection temperature of its own stops with OffPolicyError)."""
    overrides = {f"rollout.reflection_sampler.{k}": v for k, v in setting.items()}
    trainer = make_trainer("unified_multiround", **overrides)
    metrics = trainer.train_step().metrics
    assert metrics["ratio/self_check_max_dev"] < 1e-4


def test_text_only_multiround_stays_on_policy_once_the_policy_moved(make_trainer):
    """Text-only mode paints with a frozen copy of the base model. The reflection is the policy's
    action: it must be sampled over the policy's own view of the episode (as recompute reads it),
    not over the frozen painter's cache of the reasoning. The two only coincide before the
    first update, so perturb the policy's text expert as training would."""
    trainer = make_trainer("text_grpo", **{"rollout.max_rounds": 2})
    assert trainer.reference is not None and trainer.engine.painter is trainer.reference
    with torch.no_grad():
        generator = torch.Generator().manual_seed(3)
        for p in trainer.model.expert_parameters()["text"]:
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    metrics = trainer.train_step().metrics
    assert metrics["ratio/self_check_max_dev"] < 1e-4


@pytest.mark.parametrize("splits", [["train", "eval"], "eval", []])
def test_rl_never_samples_the_held_out_eval_phrasings(make_trainer, splits):
    with pytest.raises(ValueError, match="rollout.prompt_splits=.* without 'eval'") as error:
        make_trainer("unified_single_round", **{"rollout.prompt_splits": splits})
    assert "\n" not in str(error.value)


def test_rl_samples_every_split_it_is_given(make_trainer):
    trainer = make_trainer(
        "unified_single_round",
        **{"rollout.prompt_splits": ["train", "pretrain"], "rollout.prompts_per_step": 40},
    )
    assert {p.split for p in trainer.collect().prompts} == {"train", "pretrain"}
