"""The numerical guard: a non-finite loss or gradient skips its update (weights and optimizer
moments untouched), is counted and named; K in a row stop the run; non-finite weights are never
saved or evaluated; a diverged policy stops the rollout with one line."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.guard import NonFiniteError
from unigrpo_kit.objective import Objective


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def poison_terms(monkeypatch, trainer, calls: set[int], part: str = "loss/image"):
    """The objective returns a NaN ``part`` at the given calls (0-based, counted over the run)."""
    original = Objective.terms
    count = {"n": -1}

    def terms(self, current, reference, advantages, image_advantages=None):
        out = original(self, current, reference, advantages, image_advantages)
        count["n"] += 1
        if count["n"] in calls:
            out.parts[part] = out.parts[part] * float("nan")
            out.metrics[part] = float("nan")
        return out

    monkeypatch.setattr(Objective, "terms", terms)


def skip_updates(monkeypatch, trainer, calls: set[int]):
    """The same run with the updates at ``calls`` (counted like poison_terms) left out."""
    original_update = type(trainer).update
    count = {"n": -1}

    def update(self, loss):
        count["n"] += 1
        if count["n"] in calls:
            return 0.0
        return original_update(self, loss)

    monkeypatch.setattr(type(trainer), "update", update)


def test_a_nan_loss_skips_exactly_its_update(make_trainer, monkeypatch, capsys):
    """Injected at the 3rd update of a 2-step run: the weights equal those of the same run
    with that update left out, and the skip is counted and named."""
    overrides = {"algorithm.skip_zero_advantage": False}
    guarded = make_trainer("unified_single_round", **overrides)
    poison_terms(monkeypatch, guarded, {2})
    metrics = [guarded.train_step().metrics for _ in range(2)]
    monkeypatch.undo()
    assert [m["guard/skipped_steps"] for m in metrics] == [0, 1]
    assert "step 2: update skipped, non-finite loss/image (1 in a row)" in capsys.readouterr().err

    plain = make_trainer("unified_single_round", **overrides)
    skip_updates(monkeypatch, plain, {2})
    for _ in range(2):
        plain.train_step()
    after, expected = state(guarded.model), state(plain.model)
    assert after.keys() == expected.keys()
    for key in after:
        assert torch.equal(after[key], expected[key]), key


def test_consecutive_skips_stop_the_run_naming_the_part_and_step(make_trainer, monkeypatch):
    trainer = make_trainer(
        "unified_single_round",
        **{"algorithm.skip_zero_advantage": False, "algorithm.max_skipped_updates": 3},
    )
    before = state(trainer.model)
    poison_terms(monkeypatch, trainer, set(range(100)), part="reg/VelocityMSE")
    with pytest.raises(NonFiniteError) as caught:
        for _ in range(5):
            trainer.train_step()
    message = str(caught.value)
    assert "3 updates in a row had a non-finite reg/VelocityMSE" in message
    assert "\n" not in message and "step" in message
    for key, value in state(trainer.model).items():  # nothing moved
        assert torch.equal(value, before[key]), key


def test_a_non_finite_gradient_takes_no_step(make_trainer, monkeypatch):
    trainer = make_trainer("unified_single_round", **{"algorithm.skip_zero_advantage": False})
    before = state(trainer.model)
    param = next(p for p in trainer.model.parameters() if p.requires_grad)
    handle = param.register_hook(lambda grad: grad * float("inf"))
    metrics = trainer.train_step().metrics
    handle.remove()
    assert metrics["guard/skipped_steps"] >= 1
    assert math.isnan(metrics["grad_norm"]) or math.isinf(metrics["grad_norm"])
    for key, value in state(trainer.model).items():
        assert torch.equal(value, before[key]), key
    assert all(not s for s in trainer.optimizer.state.values())  # no moment was written


def test_non_finite_weights_are_never_saved_or_evaluated(make_tiny_model, tmp_path):
    from unigrpo_kit.evaluation import evaluate
    from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy

    policy = TinyUnifiedPolicy.from_parts(*make_tiny_model())
    with torch.no_grad():
        policy.module.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="lm_head.weight"):
        policy.save(tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NonFiniteError, match="refusing to evaluate"):
        evaluate(policy, num_prompts=2, steps=2)


def test_a_diverged_policy_stops_the_rollout_in_one_line(make_trainer):
    trainer = make_trainer("text_grpo")
    with torch.no_grad():
        trainer.model.lm_head.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="next-token probabilities hold inf or NaN"):
        trainer.train_step()
