"""From a recipe to rollout engines: the one place that maps ``rollout.*`` and ``evaluation.*``
onto a :class:`~unigrpo_kit.rollout.engine.RolloutEngine`.

The trainer builds its engine with :func:`training_engine`; ``unigrpo-kit eval``, ``sample``
and ``ablate`` build theirs with :func:`evaluation_engine`, the deterministic protocol: greedy
text (temperature 0) with the recipe's token budgets, Euler ODE images over
``evaluation.steps`` steps with ``evaluation.guidance_scale``, the recipe's shift, reasoning
and rounds, nothing recorded for training.
"""

from __future__ import annotations

from ..models.protocol import ImagePolicy
from ..registry import SAMPLERS
from ..samplers.flow import FlowODE
from .engine import RolloutEngine

MODES = ("text", "image", "unified")


def trained_parts(cfg) -> tuple[bool, bool]:
    """(train_text, train_image) of ``rollout.mode``; a clear error for an unknown mode."""
    mode = cfg.rollout.mode
    if mode not in MODES:
        raise ValueError(f"rollout.mode={mode!r}: use one of {', '.join(MODES)}")
    return mode in ("text", "unified"), mode in ("image", "unified")


def text_sampler(sampler_cfg, policy, role: str, **overrides):
    """A ``TextSampler`` from its config, with the policy's stop tokens for ``role`` and its pad
    token filled in where the config leaves them out."""
    cfg = dict(sampler_cfg)
    cfg.setdefault("stop_token_ids", tuple(policy.stop_token_ids(role)))
    cfg.setdefault("pad_token_id", policy.pad_token_id)
    cfg.update(overrides)
    return SAMPLERS.build(cfg)


def paints(cfg, reward) -> bool:
    """Whether a training rollout paints: the image part trains, or the reward looks at
    images."""
    return trained_parts(cfg)[1] or "images" in reward.needs


def training_engine(cfg, policy, task, reward, *, painter=None) -> RolloutEngine:
    """The engine that collects a training step's episodes (SDE window steps recorded)."""
    roll = cfg.rollout
    train_text, train_image = trained_parts(cfg)
    reflection = roll.get("reflection_sampler")
    paint_images = paints(cfg, reward)
    return RolloutEngine(
        policy,
        image_sampler=SAMPLERS.build(roll.image_sampler) if paint_images else None,
        window=SAMPLERS.build(roll.window) if train_image else None,
        text_sampler=text_sampler(roll.text_sampler, policy, "reasoning")
        if roll.reasoning
        else None,
        reflection_sampler=text_sampler(reflection, policy, "reflection")
        if reflection and roll.get("max_rounds", 1) > 1
        else None,
        reasoning=roll.reasoning,
        num_steps=roll.get("num_steps", 10),
        shift=roll.get("shift", 1.0),
        max_rounds=roll.get("max_rounds", 1),
        guidance_scale=roll.get("guidance_scale", 1.0),
        train_text=train_text,
        train_image=train_image,
        paint_images=paint_images,
        painter=painter,
        shared_noise=roll.get("shared_noise", False),
        ends_episode=getattr(task, "ends_episode", None),
    )


def evaluation_engine(cfg, policy, task) -> RolloutEngine:
    """The deterministic evaluation engine of the module docstring. A policy that paints
    (an :class:`~unigrpo_kit.models.protocol.ImagePolicy`) is scored on its images too."""
    roll, ev = cfg.rollout, cfg.evaluation
    greedy = {"temperature": 0.0, "top_k": None, "top_p": None}
    reflection = roll.get("reflection_sampler")
    max_rounds = roll.get("max_rounds", 1)
    return RolloutEngine(
        policy,
        image_sampler=FlowODE(),
        text_sampler=text_sampler(roll.text_sampler, policy, "reasoning", **greedy)
        if roll.reasoning
        else None,
        reflection_sampler=text_sampler(reflection, policy, "reflection", **greedy)
        if reflection and max_rounds > 1
        else None,
        reasoning=roll.reasoning,
        num_steps=ev.get("steps", 20),
        shift=roll.get("shift", 1.0),
        max_rounds=max_rounds,
        guidance_scale=ev.get("guidance_scale", 1.0),
        train_text=False,
        train_image=False,
        paint_images=isinstance(policy, ImagePolicy),
        ends_episode=getattr(task, "ends_episode", None),
    )
