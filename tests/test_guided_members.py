"""Off-policy guidance (``rollout.guided_members``): the last k members of each group write the
prompt's reference reasoning, recorded on-policy (ratio 1), and nothing else changes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unigrpo_kit.recipe import RecipeError
from unigrpo_kit.rewards.base import RewardOutput

GUIDED = {
    "rollout.group_size": 4,
    "rollout.guided_members": 1,
    "rollout.prompts_per_step": 3,
    "rollout.text_sampler.max_new_tokens": 24,  # room for a whole reference (up to 3 clauses)
}


def test_the_last_member_of_each_group_writes_the_reference(make_trainer):
    guided = make_trainer("unified_multiround", **GUIDED).collect()
    plain = make_trainer("unified_multiround", **{**GUIDED, "rollout.guided_members": 0}).collect()
    assert guided.guided.tolist() == [m == 3 for _ in range(3) for m in range(4)]
    assert plain.guided is None
    for row, prompt in enumerate(guided.prompts):
        if guided.guided[row]:
            assert guided.texts[row] == prompt.reasoning
        else:  # the sampled members draw what they draw without guidance
            assert guided.texts[row] == plain.texts[row]
    sampled = ~guided.guided
    assert torch.equal(guided.final_images()[sampled], plain.final_images()[sampled])
    # a tiny random model never writes a whole reference by chance
    assert all(plain.texts[r] != plain.prompts[r].reasoning for r in range(12))


def test_a_prompt_without_reference_is_sampled(make_trainer):
    trainer = make_trainer("unified_single_round", **GUIDED)
    prompts = trainer.task.sample_prompts(2)
    prompts[1] = dataclasses.replace(prompts[1], reasoning="")
    batch = trainer.engine.rollout(
        prompts, 2, generator=torch.Generator().manual_seed(0),
        guided=torch.tensor([False, True, False, True]),
    )  # fmt: skip
    assert batch.guided.tolist() == [False, True, False, False]
    assert batch.texts[1] == prompts[0].reasoning


def test_a_guided_step_is_on_policy_and_logs_both_means(make_trainer, monkeypatch):
    trainer = make_trainer("unified_multiround", **GUIDED)
    scores = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])

    def reward(*, prompts, images=None, texts=None):
        return RewardOutput(scores.clone())

    monkeypatch.setattr(trainer, "reward", reward)
    metrics = trainer.train_step().metrics
    assert metrics["ratio/self_check_max_dev"] < 1e-4
    guided_rows = [3, 7, 11]
    sampled_rows = [r for r in range(12) if r not in guided_rows]
    assert metrics["reward/guided_mean"] == pytest.approx(1.0)
    assert metrics["reward/sampled_mean"] == pytest.approx(
        sum(float(scores[r]) for r in sampled_rows) / 9
    )


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"rollout.group_size": 4, "rollout.guided_members": 4}, "must be below rollout.group"),
        ({"rollout.guided_members": 1, "rollout.reasoning": False}, "needs rollout.reasoning"),
    ],
)
def test_guidance_without_sampled_members_or_reasoning_is_refused(make_trainer, overrides, words):
    with pytest.raises(ValueError, match=words) as error:
        make_trainer("unified_single_round", **overrides)
    assert "\n" not in str(error.value) and "rollout.guided_members" in str(error.value)


def test_a_negative_count_is_a_recipe_error(small_cfg):
    from unigrpo_kit.validation import validate_recipe

    cfg = small_cfg("unified_single_round", **{"rollout.guided_members": -1})
    with pytest.raises(RecipeError, match="rollout.guided_members"):
        validate_recipe(cfg)


def test_tiny_unified_encodes_a_reference_as_it_would_write_it(make_trainer):
    policy = make_trainer("unified_single_round").policy
    tok = policy.tokenizer
    ids, mask = policy.encode_completion(["red circle at top left", "done"], "reasoning")
    first = [tok.stoi[w] for w in "red circle at top left".split()] + [tok.end_think_id]
    assert ids[0].tolist() == first and mask[0].all()
    assert ids[1, :2].tolist() == [tok.stoi["done"], tok.end_think_id]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    assert ids[1, 2:].eq(policy.pad_token_id).all()
    looked, _ = policy.encode_completion(["done"], "reflection")
    assert looked[0].tolist() == [tok.stoi["done"], tok.end_look_id]


def test_a_reference_longer_than_the_budget_is_cut_there(make_trainer):
    trainer = make_trainer(
        "unified_single_round", **{**GUIDED, "rollout.text_sampler.max_new_tokens": 3}
    )
    batch = trainer.collect()
    for row in torch.nonzero(batch.guided).flatten().tolist():
        assert batch.texts[row].split() == batch.prompts[row].reasoning.split()[:3]


def group_norm(values, groups):
    """(v - mean_g) / (population std_g + 1e-6), 0 in constant groups, written out per group;
    None values (left out) get 0 and are not counted."""
    out = []
    for i, v in enumerate(values):
        members = [values[j] for j in range(len(values)) if groups[j] == groups[i]]
        members = [m for m in members if m is not None]
        if v is None:
            out.append(0.0)
            continue
        mean = sum(members) / len(members)
        std = (sum((m - mean) ** 2 for m in members) / len(members)) ** 0.5
        out.append(0.0 if std == 0 else (v - mean) / (std + 1e-6))
    return out


def test_the_sampled_painter_advantage_leaves_the_guided_episodes_out(make_trainer, monkeypatch):
    trainer = make_trainer(
        "unified_multiround", **GUIDED, **{"algorithm.guided_image_advantage": "sampled"}
    )
    # group 0: a sampled success; group 1: every sample fails, the reference succeeds;
    # group 2: mixed, the reference fails
    scores = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    monkeypatch.setattr(trainer, "reward", lambda **_: RewardOutput(torch.tensor(scores)))
    batch = trainer.collect()
    trainer.score(batch)
    groups = batch.group_ids.tolist()
    assert batch.guided.tolist() == [m == 3 for _ in range(3) for m in range(4)]
    shared = group_norm(scores, groups)
    sampled = group_norm(
        [None if row % 4 == 3 else score for row, score in enumerate(scores)], groups
    )
    assert batch.advantages.tolist() == pytest.approx(shared, abs=1e-5)  # the text: unchanged
    assert batch.image_advantages.tolist() == pytest.approx(sampled, abs=1e-5)
    assert batch.image_advantages[4:8].tolist() == [0.0] * 4  # all samples failed: no signal
    assert batch.image_advantages[[3, 7, 11]].tolist() == [0.0] * 3
    # the guided group is still trained (its text advantage is not 0)
    trainer.worth_training(batch)
    assert set(trainer.trained_rows) >= {4, 5, 6, 7}


def test_the_shared_painter_advantage_is_the_episode_s(make_trainer, monkeypatch):
    trainer = make_trainer("unified_multiround", **GUIDED)
    assert trainer.guided_image_advantage == "shared"
    monkeypatch.setattr(trainer, "reward", lambda **_: RewardOutput(torch.rand(12)))
    batch = trainer.collect()
    trainer.score(batch)
    assert batch.image_advantages is None  # the loss then uses the one shared advantage


def test_an_unknown_painter_advantage_is_a_recipe_error(small_cfg):
    from unigrpo_kit.validation import validate_recipe

    cfg = small_cfg("unified_multiround", **{"algorithm.guided_image_advantage": "guided"})
    with pytest.raises(RecipeError, match="algorithm.guided_image_advantage.*shared, sampled"):
        validate_recipe(cfg)
