"""Shared fixtures: one thread for torch, a tiny random TinyUnified checkpoint, tiny recipes.

The tiny model (d_model 32, one layer, 16 patches of 8x8) never depends on the shipped
``tiny-base`` checkpoint; recipes are pointed at it with ``model.checkpoint=<folder>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
RECIPE_NAMES = ("text_grpo", "image_flowgrpo", "unified_single_round", "unified_multiround")

# The --cfg-options that make every recipe tiny: 2 prompts x 2 samples, 4 denoising steps with
# an SDE window of 2, short texts, 2 training steps that each save a checkpoint and a sample grid.
TINY_OPTIONS = (
    "rollout.prompts_per_step=2",
    "rollout.group_size=2",
    "rollout.num_steps=4",
    "rollout.window.window_size=2",
    "rollout.window.window_range=(0,4)",
    "rollout.text_sampler.max_new_tokens=6",
    "rollout.reflection_sampler.max_new_tokens=4",
    "algorithm.minibatch_size=4",
    "schedule.steps=2",
    "schedule.save_every=1",
    "schedule.sample_every=1",
    "threads=1",
    "evaluation.num_prompts=7",
    "evaluation.steps=4",
)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: the CI machine has two cores and contention makes torch crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(d_model: int = 32, seed: int = 0):
    """A random TinyUnified over the ShapeWorld vocabulary, with its zero-init heads made
    non-zero (normal 0.02) so that velocities, and so SDE log-probs, depend on the weights."""
    from unigrpo_kit.models.tiny_unified import TinyUnified, TinyUnifiedConfig
    from unigrpo_kit.models.tokenizer import WordTokenizer
    from unigrpo_kit.tasks.shapeworld import ShapeWorld

    tokenizer = WordTokenizer(ShapeWorld().vocabulary())
    banned = tokenizer.never_generated_ids
    config = TinyUnifiedConfig(
        vocab_size=len(tokenizer),
        d_model=d_model,
        n_layers=1,
        n_heads=2,
        image_size=32,
        patch_size=8,
        banned_token_ids=banned,
    )
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinyUnified(config)
    zero_init = [model.final_modulation, model.velocity_head]
    zero_init += [block.modulation for block in model.blocks]
    with torch.no_grad():
        for layer in zero_init:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.02)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.02)
    return model, tokenizer


@pytest.fixture(scope="session")
def make_tiny_model():
    """:func:`tiny_model` as a fixture, for test files (which cannot import conftest)."""
    return tiny_model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint folder (save_model) of the tiny random model."""
    from unigrpo_kit.models.checkpoint import save_model

    model, tokenizer = tiny_model()
    folder = tmp_path_factory.mktemp("tiny") / "tiny-random"
    save_model(model, tokenizer, folder)
    return folder


def build_small_cfg(recipe: str | Path, ckpt: str | Path, **overrides):
    """``recipes/<recipe>.py`` loaded through ``load_recipe`` with the tiny options and
    ``model.checkpoint=ckpt``; ``overrides`` (dotted keys, any Python value, e.g.
    ``**{"algorithm.regularizers": []}``) are merged afterwards."""
    from unigrpo_kit.recipe import load_recipe

    path = Path(recipe)
    if not path.suffix:
        path = RECIPES / f"{recipe}.py"
    cfg = load_recipe(path, [*TINY_OPTIONS, f"model.checkpoint={ckpt}"])
    if overrides:
        cfg.merge_from_dict(overrides)
    return cfg


@pytest.fixture(scope="session")
def small_cfg(tiny_checkpoint):
    """``small_cfg(recipe, ckpt=<tiny checkpoint>, **overrides)``: see :func:`build_small_cfg`."""

    def make(recipe, ckpt=None, **overrides):
        return build_small_cfg(recipe, ckpt if ckpt is not None else tiny_checkpoint, **overrides)

    return make


@pytest.fixture(scope="session")
def make_trainer(small_cfg):
    """``make_trainer(recipe, **overrides)``: a UniGRPOTrainer on the tiny model, seeded."""
    from unigrpo_kit.runner import build_trainer

    def make(recipe, **overrides):
        return build_trainer(small_cfg(recipe, **overrides))

    return make
