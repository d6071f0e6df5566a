"""The recipe whose trainer the bench times (``ratio/window_train``).

``recipes/unified_single_round.py`` is five ``_base_`` files merged, and ``recipes/`` is not part
of an installed kit, so the bench carries the merged recipe here as a dict;
``tests/test_bench.py`` checks that it equals the recipe file. ``unigrpo-kit bench --recipe
PATH`` measures another recipe instead. Either way the bench then sets the mode, the number of
steps, the window and the minibatch size itself (``Bench.trainer_and_batches`` in
:mod:`unigrpo_kit.bench.world`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmengine.config import Config

RECIPE_NAME = "unified_single_round"
RECIPE = dict(
    model=dict(checkpoint="tiny-base", attention_backend="auto", device="auto"),
    task=dict(type="ShapeWorld", resolution=32, seed=0),
    reward=dict(type="ShapeWorldJudge", mode="strict"),
    algorithm=dict(
        advantage=dict(type="GroupNorm", clip=5.0),
        text_loss=dict(type="GRPOLoss", clip_eps=0.2, agg="seq-mean-token-mean"),
        image_loss=dict(type="FlowGRPOLoss", clip_eps=1e-3, ratio_norm=False),
        image_loss_weight=1.0,
        regularizers=[dict(type="VelocityMSE", weight=0.046), dict(type="TokenKL", weight=0.04)],
        inner_epochs=2,
        minibatch_size=32,
        grad_clip=1.0,
        self_check_tol=1e-3,
        skip_zero_advantage=True,
        guided_image_advantage="shared",
    ),
    optimizer=dict(
        lr_text=3e-4,
        lr_image=1e-5,
        eps_text=1e-8,
        eps_image=1e-3,
        betas=(0.9, 0.999),
        weight_decay=0.0,
        warmup_steps=10,
    ),
    rollout=dict(
        mode="unified",
        reasoning=True,
        prompts_per_step=8,
        group_size=8,
        num_steps=10,
        shift=3.0,
        max_rounds=1,
        guidance_scale=1.0,
        shared_noise=False,
        split_groups=False,
        prompt_splits="train",
        guided_members=1,
        text_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=32),
        reflection_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=16),
        image_sampler=dict(type="FlowSDE", noise_level=0.7),
        window=dict(type="FixedWindow", window_size=3, window_range=(0, 5)),
    ),
    schedule=dict(steps=120, save_every=20, sample_every=20, log_every=10),
    evaluation=dict(num_prompts=140, steps=20, seed=0, split="eval"),
    distributed=dict(strategy="ddp", backend="auto", timeout_s=300, param_dtype=None),
    seed=0,
    threads=2,
    trackers=[],
)


def bench_recipe(path: str | Path | None = None) -> Config:
    """The recipe at ``path`` (:func:`unigrpo_kit.recipe.load_recipe`), or by default
    :data:`RECIPE`, as the same kind of mmengine Config."""
    from mmengine.config import Config

    from unigrpo_kit.recipe import load_recipe

    if path is not None:
        return load_recipe(path)
    cfg = Config(copy.deepcopy(RECIPE))
    cfg.recipe_name = RECIPE_NAME
    return cfg
