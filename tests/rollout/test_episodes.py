"""Episode records from a tiny-model rollout: shapes, SDE windows, log-probs, final images,
and ``EpisodeBatch.select``."""

from __future__ import annotations

import random

import pytest
import torch

N_PROMPTS, G, STEPS, WINDOW = 2, 2, 4, 2
N = N_PROMPTS * G


@pytest.fixture
def trainer(make_trainer):
    return make_trainer("unified_multiround")


@pytest.fixture
def batch(trainer):
    prompts = trainer.task.sample_prompts(N_PROMPTS, generator=random.Random(0))
    return trainer.engine.rollout(prompts, G, generator=torch.Generator().manual_seed(0))


def test_trajectories_have_the_documented_shapes(batch, trainer):
    cfg = trainer.model.config
    images = batch.image_segments
    assert len(images) == 2
    for seg in images:
        t = seg.trajectory
        assert t.latents.shape == (N, STEPS + 1, cfg.channels, 32, 32)
        assert t.latents.dtype == torch.float32
        assert t.log_probs.shape == (N, STEPS)
        assert t.means.shape == (N, STEPS, cfg.channels, 32, 32)
        assert t.stds.shape == (N, STEPS)
        assert t.sigmas.shape == (STEPS + 1,)
        assert t.sigmas[0] == 1 and t.sigmas[-1] == 0 and (t.sigmas.diff() < 0).all()
        assert torch.equal(t.final, t.latents[:, -1])
        assert seg.images.shape == (N, 3, 32, 32)
        assert seg.images.min() >= 0 and seg.images.max() <= 1
        assert seg.active.shape == (N,) and seg.active.dtype == torch.bool


def test_sde_window_has_exactly_window_size_steps_and_only_they_have_log_probs(batch):
    for seg in batch.image_segments:
        t = seg.trajectory
        assert t.sde_mask.dtype == torch.bool and t.sde_mask.shape == (STEPS,)
        assert int(t.sde_mask.sum()) == WINDOW
        steps = torch.nonzero(t.sde_mask).flatten()
        assert (steps.diff() == 1).all()  # FixedWindow: consecutive steps
        assert (t.log_probs[:, t.sde_mask] != 0).all()
        assert (t.log_probs[:, ~t.sde_mask] == 0).all()
        assert (t.stds[:, t.sde_mask] > 0).all()
        assert (t.stds[:, ~t.sde_mask] == 0).all()
        # ODE steps are deterministic: the next latent is the step's mean.
        ode = torch.nonzero(~t.sde_mask).flatten()
        assert torch.equal(t.latents[:, ode + 1], t.means[:, ode])
        # SDE steps are not: the next latent is a draw around the mean.
        assert not torch.allclose(t.latents[:, steps + 1], t.means[:, steps])


def test_text_log_probs_are_recorded_on_generated_tokens_only(batch):
    for seg in batch.segments:
        if seg.kind != "text":
            continue
        assert seg.ids.shape == seg.mask.shape and seg.mask.dtype == torch.bool
        if not seg.generated:
            continue
        assert seg.log_probs.shape == seg.ids.shape
        assert seg.log_probs.dtype == torch.float32
        assert (seg.log_probs[~seg.mask] == 0).all()
        assert (seg.log_probs[seg.mask] < 0).all()
        assert seg.mask[:, 0].all()  # every row generated at least one token


def test_group_ids_are_shared_within_a_group(batch):
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    assert batch.prompts[0] is batch.prompts[1]
    assert batch.prompts[2] is batch.prompts[3]


def test_final_images_pick_each_rows_last_active_image(batch):
    first, second = batch.image_segments
    # Say that row 2 stopped after its first image (as if it had said "done").
    second.active[2] = False
    finals = batch.final_images()
    assert finals.shape == (N, 3, 32, 32)
    assert torch.equal(finals[2], first.images[2])
    for row in (0, 1, 3):
        assert torch.equal(finals[row], second.images[row])
    assert batch.rounds().tolist() == [2, 2, 1, 2]


def test_select_keeps_every_field_aligned(batch):
    batch.rewards = torch.tensor([0.1, 0.2, 0.3, 0.4])
    batch.advantages = torch.tensor([-1.0, 1.0, -0.5, 0.5])
    batch.image_segments[1].active[0] = False
    rows = torch.tensor([3, 0])
    sub = batch.select(rows)
    assert len(sub) == 2
    assert sub.prompts == [batch.prompts[3], batch.prompts[0]]
    assert sub.group_ids.tolist() == [1, 0]
    assert sub.texts == [batch.texts[3], batch.texts[0]]
    assert sub.reflections == [[r[3], r[0]] for r in batch.reflections]
    assert torch.equal(sub.rewards, batch.rewards[rows])
    assert torch.equal(sub.advantages, batch.advantages[rows])
    assert [s.kind for s in sub.segments] == [s.kind for s in batch.segments]
    for mine, theirs in zip(sub.segments, batch.segments):
        if mine.kind == "text":
            assert torch.equal(mine.ids, theirs.ids[rows])
            assert torch.equal(mine.mask, theirs.mask[rows])
            assert mine.generated == theirs.generated
            if theirs.generated:
                assert torch.equal(mine.log_probs, theirs.log_probs[rows])
            if theirs.active is not None:
                assert torch.equal(mine.active, theirs.active[rows])
        else:
            a, b = mine.trajectory, theirs.trajectory
            for field in ("latents", "log_probs", "means", "stds"):
                assert torch.equal(getattr(a, field), getattr(b, field)[rows]), field
            assert torch.equal(a.sde_mask, b.sde_mask)
            assert torch.equal(a.sigmas, b.sigmas)
            assert torch.equal(mine.active, theirs.active[rows])
            assert mine.guidance_scale == theirs.guidance_scale
    assert torch.equal(sub.final_images(), batch.final_images()[rows])
    assert torch.equal(sub.rounds(), batch.rounds()[rows])


def test_rounds_of_a_batch_without_images_is_zero_for_every_row(small_cfg):
    """Text-only training with a text reward paints nothing; ``rounds()`` must still be a [N]
    tensor (the trainer logs ``rounds().float().mean()``)."""
    from unigrpo_kit.runner import build_trainer

    reward = {"reward": dict(type="ReasoningReward", _delete_=True)}
    trainer = build_trainer(small_cfg("text_grpo", **reward))
    assert trainer.engine.paint_images is False
    prompts = trainer.task.sample_prompts(N_PROMPTS, generator=random.Random(0))
    batch = trainer.engine.rollout(prompts, G, generator=torch.Generator().manual_seed(0))
    assert batch.image_segments == [] and batch.final_images() is None
    rounds = batch.rounds()
    assert isinstance(rounds, torch.Tensor)
    assert rounds.tolist() == [0] * N


def test_painting_some_rows_draws_the_noise_of_all_rows(make_tiny_model):
    """``paint(rows=...)`` gives the selected rows exactly the trajectory they get when every
    row is painted with the same generator, and zeros elsewhere."""
    from unigrpo_kit.models.layout import TextSegment
    from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy
    from unigrpo_kit.rollout.painter import paint
    from unigrpo_kit.samplers.flow import FlowSDE
    from unigrpo_kit.samplers.schedules import shifted_sigmas

    model, tokenizer = make_tiny_model()
    ids = torch.randint(5, len(tokenizer), (4, 6), generator=torch.Generator().manual_seed(1))
    context = model([TextSegment(ids, torch.ones_like(ids, dtype=torch.bool))]).cache
    sigmas = shifted_sigmas(4, 3.0)
    sde_mask = torch.tensor([False, True, True, False])
    common = dict(sampler=FlowSDE(0.7), sde_mask=sde_mask)
    policy = TinyUnifiedPolicy.from_parts(model, tokenizer)
    full = paint(
        policy, context, sigmas, generator=torch.Generator().manual_seed(0), num_rows=4, **common
    )
    rows = torch.tensor([0, 3])
    part = paint(
        policy, context.select(rows), sigmas, generator=torch.Generator().manual_seed(0),
        rows=rows, num_rows=4, **common,
    )  # fmt: skip
    for field in ("latents", "log_probs", "means", "stds"):
        a, b = getattr(full, field), getattr(part, field)
        assert a.shape == b.shape
        torch.testing.assert_close(b[rows], a[rows], atol=1e-5, rtol=0)
        assert not b[torch.tensor([1, 2])].any()
