"""Evaluating a policy with a recipe's protocol: the task decides the prompts and the scores.

:func:`evaluate_recipe` builds the deterministic evaluation engine of the recipe
(:func:`~unigrpo_kit.rollout.build.evaluation_engine`: greedy text, ODE images, nothing recorded)
and hands it to the task: a task with an ``evaluate(engine, num_prompts=, seed=, split=)``
method runs its own protocol (ShapeWorld's judge and quality metric); otherwise the task's
``eval_prompts(n, seed=, split=)`` are rolled out once each and its ``eval_metrics(batch)``
(one dict of floats per episode) are averaged, each key over the episodes that have it; a task
with neither (``PromptFile``) is scored by the recipe's reward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from mmengine.config import Config

from .guard import require_finite_weights
from .rollout.build import evaluation_engine

# Where evaluate_episodes also puts each episode's row while recording_episodes() is active.
_EPISODE_ROWS: ContextVar[list | None] = ContextVar("episode_rows", default=None)


@contextmanager
def recording_episodes() -> Iterator[list[dict[str, float]]]:
    """Within the block, :func:`evaluate_episodes` also appends each episode's metrics (one
    dict per episode, in prompt order) to the list this yields: the paired comparison of
    :mod:`~unigrpo_kit.baseline` needs them, and the tasks' protocols return only means."""
    rows: list[dict[str, float]] = []
    token = _EPISODE_ROWS.set(rows)
    try:
        yield rows
    finally:
        _EPISODE_ROWS.reset(token)


@torch.no_grad()
def evaluate_episodes(
    engine,
    prompts: Sequence,
    metrics_of: Callable[[object], list[dict[str, float]]],
    *,
    seed: int = 0,
    batch_size: int = 70,
) -> dict[str, float]:
    """One greedy episode per prompt, in batches of ``batch_size``, scored by ``metrics_of``
    (an episode batch -> one dict per episode); each key's mean over the episodes that have
    it, rounded to 4 decimals, in the order the keys first appear. The painting noise is drawn
    from a CPU generator seeded with ``seed``, so the numbers do not depend on the device
    beyond float rounding."""
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, list[float]] = {}
    recorded = _EPISODE_ROWS.get()
    for start in range(0, len(prompts), batch_size):
        batch = engine.rollout(list(prompts[start : start + batch_size]), 1, generator=generator)
        for row in metrics_of(batch):
            if recorded is not None:
                recorded.append({key: float(value) for key, value in row.items()})
            for key, value in row.items():
                sums.setdefault(key, []).append(float(value))
    return {key: round(sum(values) / len(values), 4) for key, values in sums.items()}


def evaluate_recipe(cfg, policy, *, num_prompts: int | None = None, seed: int | None = None):
    """The task's scores of ``policy`` under the recipe's evaluation protocol
    (``evaluation.num_prompts``, ``seed``, ``split``, ``steps``, ``guidance_scale``; the
    rollout's reasoning, rounds and shift). What ``unigrpo-kit eval`` and ``ablate`` report."""
    from .registry import REWARDS, TASKS

    require_finite_weights(policy.module, "evaluate this policy")
    ev = cfg.evaluation
    task = TASKS.build(cfg.task)
    engine = evaluation_engine(cfg, policy, task)
    num_prompts = num_prompts if num_prompts is not None else ev.num_prompts
    seed = seed if seed is not None else ev.seed
    split = ev.get("split", "eval")
    if hasattr(task, "evaluate"):
        return task.evaluate(engine, num_prompts=num_prompts, seed=seed, split=split)
    prompts = task.eval_prompts(num_prompts, seed=seed, split=split)
    metrics_of = getattr(task, "eval_metrics", None) or reward_metrics(REWARDS.build(cfg.reward))
    return evaluate_episodes(engine, prompts, metrics_of, seed=seed)


def reward_metrics(reward) -> Callable[[object], list[dict[str, float]]]:
    """A task without a scorer of its own is scored by the recipe's reward: ``reward/mean`` and
    the reward's metrics, per episode."""

    def metrics_of(batch) -> list[dict[str, float]]:
        images = batch.final_images()
        scored = reward(
            prompts=batch.prompts,
            images=None if images is None else images.cpu(),
            texts=batch.texts,
        )
        rows = [{"reward/mean": float(score)} for score in scored.scores]
        for key, values in scored.metrics.items():
            for row, value in zip(rows, values.tolist()):
                row[key] = float(value)
        return rows

    return metrics_of


def protocol_cfg(
    *,
    task: dict | None = None,
    reasoning: bool = True,
    max_rounds: int = 1,
    steps: int = 20,
    shift: float = 1.0,
    guidance_scale: float = 1.0,
    num_prompts: int = 140,
    seed: int = 0,
    split: str = "eval",
    max_reasoning_tokens: int = 32,
    max_reflection_tokens: int = 16,
) -> Config:
    """The recipe sections that :func:`evaluate_recipe` reads, from plain settings (the
    defaults are the built-in recipes'): for tools that evaluate outside a recipe."""
    sampler = lambda tokens: dict(type="TextSampler", max_new_tokens=tokens)  # noqa: E731
    return Config(
        dict(
            task=task or dict(type="ShapeWorld"),
            rollout=dict(
                reasoning=reasoning,
                max_rounds=max_rounds,
                shift=shift,
                text_sampler=sampler(max_reasoning_tokens),
                reflection_sampler=sampler(max_reflection_tokens),
            ),
            evaluation=dict(
                num_prompts=num_prompts,
                steps=steps,
                seed=seed,
                split=split,
                guidance_scale=guidance_scale,
            ),
        )
    )


def evaluate(policy, **settings) -> dict[str, float]:
    """:func:`evaluate_recipe` under :func:`protocol_cfg`'s plain ``settings`` (e.g.
    ``num_prompts=140, shift=3.0, max_rounds=2``)."""
    return evaluate_recipe(protocol_cfg(**settings), policy)
