"""The rollout engine on the tiny model: segment order per mode, groups, early stopping."""

from __future__ import annotations

import random

import torch

from unigrpo_kit.rollout.recompute import recompute
from unigrpo_kit.samplers.text import TextSample

N_PROMPTS, G = 2, 2


def rollout(trainer, n_prompts=N_PROMPTS, group_size=G, seed=0):
    prompts = trainer.task.sample_prompts(n_prompts, generator=random.Random(seed))
    batch = trainer.engine.rollout(
        prompts, group_size, generator=torch.Generator().manual_seed(seed)
    )
    return prompts, batch


def force_done(monkeypatch, sampler, tokenizer, rows):
    """Make ``sampler.generate`` answer ``done </look>`` for ``rows`` (the rest as sampled)."""
    original = sampler.generate
    done = tokenizer.stoi["done"]

    def generate(policy, ids, mask, **kwargs):
        sample = original(policy, ids, mask, **kwargs)
        tokens, smask, logp = sample.tokens.clone(), sample.mask.clone(), sample.log_probs.clone()
        if tokens.shape[1] < 2:  # every row stopped at once: make room for "done </look>"
            pad = torch.zeros(tokens.shape[0], 2 - tokens.shape[1], dtype=tokens.dtype)
            tokens = torch.cat([tokens, pad + tokenizer.pad_id], 1)
            smask = torch.cat([smask, pad.bool()], 1)
            logp = torch.cat([logp, pad.float()], 1)
        for row in rows:
            tokens[row] = tokenizer.pad_id
            tokens[row, :2] = torch.tensor([done, tokenizer.end_look_id])
            smask[row] = False
            smask[row, :2] = True
            logp[row] = torch.where(smask[row], -1.0, 0.0)
        return TextSample(tokens, smask, logp, sample.finished)

    monkeypatch.setattr(sampler, "generate", generate)


def test_multiround_segments_come_in_the_documented_order(make_trainer):
    trainer = make_trainer("unified_multiround")
    tok = trainer.policy.tokenizer
    prompts, batch = rollout(trainer)
    n = N_PROMPTS * G
    assert len(batch) == n
    kinds = [s.kind for s in batch.segments]
    assert kinds == ["text", "text", "image", "text", "text", "image"]
    assert [s.generated for s in batch.segments if s.kind == "text"] == [
        False,
        True,
        False,
        True,
    ]
    prompt, reasoning, _, look, reflection, _ = batch.segments
    # <bos> prompt <think>, left-padded: every row's last column is <think>.
    assert (prompt.ids[:, -1] == tok.think_id).all()
    for row, (ids, mask) in enumerate(zip(prompt.ids, prompt.mask)):
        real = ids[mask].tolist()
        assert real[0] == tok.bos_id
        assert tok.decode(real) == batch.prompts[row].text
        assert not mask[: len(mask) - len(real)].any()  # padding on the left only
    # The reasoning stops at </think> or at max_new_tokens; it never emits banned ids.
    assert reasoning.ids.shape[1] <= 6
    banned = torch.tensor(trainer.model.config.banned_token_ids)
    assert not torch.isin(reasoning.ids[reasoning.mask], banned).any()
    assert batch.texts == [tok.decode(r[m]) for r, m in zip(reasoning.ids, reasoning.mask)]
    # One <look> marker per row, then the reflection of at most 4 tokens.
    assert look.ids.shape == (n, 1) and (look.ids == tok.look_id).all()
    assert reflection.ids.shape[1] <= 4
    assert len(batch.reflections) == 1 and len(batch.reflections[0]) == n


def test_image_only_mode_paints_from_the_prompt_with_empty_thoughts(make_trainer):
    trainer = make_trainer("image_flowgrpo")
    tok = trainer.policy.tokenizer
    _, batch = rollout(trainer)
    assert [s.kind for s in batch.segments] == ["text", "image"]
    prompt, image = batch.segments
    assert not prompt.generated
    assert prompt.ids[:, -2:].tolist() == [[tok.think_id, tok.end_think_id]] * len(batch)
    assert int(image.trajectory.sde_mask.sum()) == 2


def test_text_only_mode_paints_with_the_frozen_painter_and_records_no_image_steps(make_trainer):
    trainer = make_trainer("text_grpo")
    assert trainer.engine.painter is trainer.reference
    assert trainer.engine.painter is not trainer.model
    _, batch = rollout(trainer)
    assert [s.kind for s in batch.segments] == ["text", "text", "image"]
    assert batch.segments[1].generated
    t = batch.segments[2].trajectory
    assert not t.sde_mask.any()
    assert (t.log_probs == 0).all() and (t.stds == 0).all()


def test_groups_hold_g_rows_per_prompt_whatever_the_batch(make_trainer):
    trainer = make_trainer("unified_single_round")
    for n_prompts, group_size in [(2, 2), (1, 3), (3, 1)]:
        prompts, batch = rollout(trainer, n_prompts, group_size)
        assert len(batch) == n_prompts * group_size
        expected = torch.arange(n_prompts).repeat_interleave(group_size)
        assert torch.equal(batch.group_ids, expected)
        for row, group in enumerate(batch.group_ids.tolist()):
            assert batch.prompts[row] is prompts[group]
        for seg in batch.segments:
            rows = seg.ids.shape[0] if seg.kind == "text" else seg.trajectory.latents.shape[0]
            assert rows == n_prompts * group_size


def test_a_row_that_says_done_is_inactive_in_later_segments(make_trainer, monkeypatch):
    trainer = make_trainer("unified_multiround")
    force_done(monkeypatch, trainer.engine.reflection_sampler, trainer.policy.tokenizer, rows=[1])
    _, batch = rollout(trainer)
    first, second = batch.image_segments
    assert first.active.tolist() == [True] * 4
    assert second.active.tolist() == [True, False, True, True]
    look, reflection = batch.segments[3], batch.segments[4]
    assert look.active.tolist() == [True] * 4  # the look happened for every row
    assert batch.reflections[0][1] == "done"
    assert torch.equal(reflection.train_mask, reflection.mask)
    assert batch.rounds().tolist() == [2, 1, 2, 2]
    finals = batch.final_images()
    assert torch.equal(finals[1], first.images[1])
    for row in (0, 2, 3):
        assert torch.equal(finals[row], second.images[row])
    # The inactive row's image steps are masked out of training.
    terms = recompute(
        trainer.policy,
        batch,
        image_sampler=trainer.image_sampler,
    )
    k = int(first.trajectory.sde_mask.sum())
    assert terms.image.mask[:, k:].tolist() == [[True] * k, [False] * k, [True] * k, [True] * k]


def test_active_rows_never_come_back(make_trainer, small_cfg):
    from unigrpo_kit.runner import build_trainer

    trainer = build_trainer(small_cfg("unified_multiround", **{"rollout.max_rounds": 3}))
    for seed in range(2):
        _, batch = rollout(trainer, seed=seed)
        images = batch.image_segments
        assert 1 <= len(images) <= 3
        assert images[0].active.all()
        for before, after in zip(images, images[1:]):
            assert not (after.active & ~before.active).any()
        # Each look/reflection exists exactly for the rows that painted the image before it.
        for i, seg in enumerate(batch.segments):
            if seg.kind == "text" and seg.active is not None:
                previous = [s for s in batch.segments[:i] if s.kind == "image"][-1]
                assert torch.equal(seg.active, previous.active)


def test_what_the_rollout_recorded_is_what_recompute_reads_back(make_trainer):
    """Each segment's context is everything before it: recomputing over the whole episode gives
    the recorded token log-probs and step means back."""
    trainer = make_trainer("unified_multiround")
    _, batch = rollout(trainer)
    with torch.no_grad():
        terms = recompute(
            trainer.policy,
            batch,
            image_sampler=trainer.image_sampler,
        )
    t, i = terms.text, terms.image
    assert t.mask.any() and i.mask.any()
    assert torch.allclose(t.log_probs[t.mask], t.old_log_probs[t.mask], atol=1e-4)
    assert torch.allclose(i.means, i.old_means, atol=1e-5)
    assert torch.allclose(i.log_probs, i.old_log_probs, atol=1e-4)


def test_only_the_rows_that_edit_paint_again_and_they_paint_what_they_would_have(
    make_trainer, monkeypatch
):
    """Round 2 paints only the active rows, drawing noise for all of them: each painted row is
    the image it would have been with every row painting, the others are left unpainted, and
    recomputing the episode gives the recorded log-probs back on the painted rows."""
    trainer = make_trainer("unified_multiround")
    _, everyone = rollout(trainer)
    assert everyone.image_segments[1].active.all()  # the random tiny model never says "done"
    force_done(monkeypatch, trainer.engine.reflection_sampler, trainer.policy.tokenizer, rows=[1])
    _, some = rollout(trainer)
    all_second, some_second = everyone.image_segments[1], some.image_segments[1]
    for row in (0, 2, 3):
        torch.testing.assert_close(
            some_second.trajectory.latents[row], all_second.trajectory.latents[row],
            atol=1e-5, rtol=0,
        )  # fmt: skip
        torch.testing.assert_close(
            some_second.trajectory.log_probs[row], all_second.trajectory.log_probs[row],
            atol=1e-4, rtol=0,
        )  # fmt: skip
    assert not some_second.trajectory.latents[1].any()
    assert not some_second.trajectory.log_probs[1].any()
    with torch.no_grad():
        terms = recompute(trainer.policy, some, image_sampler=trainer.image_sampler).image
    assert terms.mask.any() and not terms.mask.all()
    torch.testing.assert_close(
        terms.log_probs[terms.mask], terms.old_log_probs[terms.mask], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(terms.means, terms.old_means, atol=1e-5, rtol=0)


def test_shared_noise_starts_a_group_from_one_noise_and_groups_from_different_ones(make_trainer):
    for recipe in ("image_flowgrpo", "unified_multiround"):
        trainer = make_trainer(recipe, **{"rollout.shared_noise": True})
        _, batch = rollout(trainer, n_prompts=2, group_size=3)
        images = [s for s in batch.segments if s.kind == "image"]
        for image in images:
            start = image.trajectory.latents[:, 0]
            painted = image.active
            for group in range(2):
                rows = [r for r in range(group * 3, group * 3 + 3) if painted[r]]
                for row in rows[1:]:
                    assert torch.equal(start[row], start[rows[0]])
            assert not torch.equal(start[0], start[3])
        # what the group does not share: the SDE window's noise, so the finals differ
        final = images[0].trajectory.latents[:, -1]
        assert not torch.equal(final[0], final[1])


def test_without_shared_noise_every_row_starts_from_its_own_noise(make_trainer):
    trainer = make_trainer("image_flowgrpo")
    assert not trainer.engine.shared_noise
    _, batch = rollout(trainer, n_prompts=1, group_size=3)
    start = batch.segments[1].trajectory.latents[:, 0]
    assert not torch.equal(start[0], start[1]) and not torch.equal(start[1], start[2])
