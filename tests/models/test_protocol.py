"""Both policies conform to the written protocol, and checkpoints load back by registry type."""

from __future__ import annotations

import json

import torch

from unigrpo_kit.models.checkpoint import POLICY_FILE, load_policy
from unigrpo_kit.models.hf_causal_lm import HFCausalLM
from unigrpo_kit.models.protocol import (
    Context,
    ImagePolicy,
    TextPolicy,
    TextSession,
    TrainablePolicy,
    UnifiedPolicy,
)
from unigrpo_kit.models.tiny_random import save_tiny_causal_lm
from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy


def test_tiny_unified_is_a_unified_policy(make_tiny_model):
    policy = TinyUnifiedPolicy.from_parts(*make_tiny_model())
    for role in (TrainablePolicy, TextPolicy, ImagePolicy, UnifiedPolicy):
        assert isinstance(policy, role), role.__name__
    ids, mask = policy.encode_prompts(["a red circle", "two blue squares"])
    session = policy.text_session(None)
    assert isinstance(session, TextSession)
    logits, state = session.prefill(ids, mask)
    assert logits.shape == (2, len(policy.tokenizer))
    context = session.finish(ids[:, -1:], mask[:, -1:])
    assert isinstance(context, Context)
    latents = torch.zeros(2, *policy.latent_shape())
    velocity = policy.velocity(context, latents, torch.full((2,), 0.5))
    assert velocity.shape == latents.shape
    assert isinstance(policy.look(context, latents), Context)
    images = policy.decode_images(torch.full((2, *policy.latent_shape()), 3.0))
    assert images.min() == 1.0 and images.max() == 1.0  # clamped to [-1, 1], mapped to [0, 1]
    assert set(policy.parameter_groups()) == {"text", "image"}
    assert policy.stop_token_ids("reasoning") == (policy.tokenizer.end_think_id,)
    assert policy.stop_token_ids("reflection") == (policy.tokenizer.end_look_id,)


def test_a_causal_lm_is_a_text_policy_only(tmp_path):
    policy = HFCausalLM(path=str(save_tiny_causal_lm(tmp_path / "m", "qwen2")), device="cpu")
    assert isinstance(policy, TextPolicy) and isinstance(policy, TrainablePolicy)
    assert not isinstance(policy, ImagePolicy) and not isinstance(policy, UnifiedPolicy)


def test_the_tiny_policy_saves_and_loads_back_by_registry_type(make_tiny_model, tmp_path):
    policy = TinyUnifiedPolicy.from_parts(*make_tiny_model(seed=3))
    reference = policy.reference()
    with torch.no_grad():
        for p in policy.module.parameters():
            p.add_(0.01)
    folder = tmp_path / "ck"
    folder.mkdir()
    policy.save(folder)
    record = json.loads((folder / POLICY_FILE).read_text())
    assert record["type"] == "TinyUnified" and record["kwargs"]["checkpoint"] == "."
    moved = tmp_path / "moved"
    folder.rename(moved)  # "." follows the folder
    loaded = load_policy(moved, device="cpu")
    assert type(loaded) is TinyUnifiedPolicy
    for (name, a), b in zip(
        policy.module.state_dict().items(), loaded.module.state_dict().values()
    ):
        assert torch.equal(a, b), name
    # the reference was frozen before the update: it kept the old weights and trains nothing
    assert reference.module is not policy.module
    first = next(iter(reference.module.parameters()))
    assert not first.requires_grad
    assert not torch.equal(first, next(iter(policy.module.parameters())))
    # load_weights puts the saved weights back in place, keeping the parameter objects
    fresh = TinyUnifiedPolicy.from_parts(*make_tiny_model(seed=3))
    params = list(fresh.module.parameters())
    fresh.load_weights(moved)
    assert all(a is b for a, b in zip(params, fresh.module.parameters()))
    assert torch.equal(params[0], next(iter(policy.module.parameters())))
