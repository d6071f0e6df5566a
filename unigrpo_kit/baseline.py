"""A checkpoint's scores beside its base model's: the difference and its standard error.

Both policies are evaluated on the same prompts with the same painting noise (the recipe's
protocol, :func:`~unigrpo_kit.evaluation.evaluate_recipe`), so each prompt gives a *paired*
difference ``d_i = score_i(checkpoint) - score_i(base)``; the reported difference is their
mean and its standard error ``std(d) / sqrt(n)`` (sample std), which is smaller than the
unpaired ``sqrt(se_a^2 + se_b^2)`` because prompt difficulty cancels. A difference under about
two standard errors is within noise at this number of prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.table import Table

from . import evaluation


@dataclass(frozen=True)
class Scored:
    """A policy's mean scores and the per-episode rows they average."""

    scores: dict[str, float]
    rows: list[dict[str, float]]


@dataclass(frozen=True)
class Comparison:
    """Per metric: the mean paired difference (checkpoint - base), its standard error (None
    below 2 pairs or when the protocol keeps no per-episode rows) and the number of pairs."""

    difference: dict[str, float]
    stderr: dict[str, float | None]
    pairs: dict[str, int]


def scored(cfg, policy, *, num_prompts: int | None, seed: int | None) -> Scored:
    """:func:`evaluate_recipe` of ``policy``, keeping its per-episode rows."""
    with evaluation.recording_episodes() as rows:
        scores = evaluation.evaluate_recipe(cfg, policy, num_prompts=num_prompts, seed=seed)
    return Scored(scores, list(rows))


def compare(checkpoint: Scored, base: Scored) -> Comparison:
    """The paired differences of every metric both report: episode ``i`` of one against
    episode ``i`` of the other (the same prompt), over the episodes that have the metric."""
    difference, stderr, pairs = {}, {}, {}
    same_prompts = len(checkpoint.rows) == len(base.rows) and checkpoint.rows
    for key, value in checkpoint.scores.items():
        if key not in base.scores:
            continue
        deltas = [
            a[key] - b[key]
            for a, b in zip(checkpoint.rows, base.rows)
            if same_prompts and key in a and key in b
        ]
        if len(deltas) < 2:
            difference[key], stderr[key], pairs[key] = value - base.scores[key], None, len(deltas)
            continue
        mean = sum(deltas) / len(deltas)
        variance = sum((d - mean) ** 2 for d in deltas) / (len(deltas) - 1)
        difference[key] = mean
        stderr[key] = math.sqrt(variance / len(deltas))
        pairs[key] = len(deltas)
    return Comparison(difference, stderr, pairs)


def comparison_table(title: str, checkpoint: Scored, base: Scored, diff: Comparison) -> Table:
    """metric | checkpoint | base | diff | ± s.e.: five short columns, under 80 wide."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold cyan")
    for name in ("checkpoint", "base", "diff", "± s.e."):
        table.add_column(name, justify="right")
    for key, value in checkpoint.scores.items():
        if key not in diff.difference:
            table.add_row(key, f"{value:.4f}", "-", "-", "-")
            continue
        se = diff.stderr[key]
        table.add_row(
            key,
            f"{value:.4f}",
            f"{base.scores[key]:.4f}",
            f"{diff.difference[key]:+.4f}",
            "-" if se is None else f"{se:.4f}",
        )
    return table


def baseline_json(source: str, base: Scored, diff: Comparison) -> dict:
    """What ``eval --json`` adds under ``"baseline"``."""
    return {
        "checkpoint": source,
        "scores": base.scores,
        "difference": {k: round(v, 4) for k, v in diff.difference.items()},
        "stderr": {k: None if v is None else round(v, 4) for k, v in diff.stderr.items()},
        "pairs": diff.pairs,
    }


def base_policy(cfg, baseline: str | None, evaluated: str, evaluated_checkpoint: str | None):
    """The policy to compare with and its name, or None: ``baseline`` (a checkpoint folder or
    shipped name) when given; else the recipe's own model, unless that is what is evaluated
    (no checkpoint was found, or ``--checkpoint`` names the recipe's ``model.checkpoint``)."""
    from .models.checkpoint import load_policy
    from .runner import build_policy

    if baseline is not None:
        return load_policy(baseline, device=cfg.model.get("device")), baseline
    recipe_model = cfg.model.get("checkpoint") or cfg.model.get("path")
    if evaluated == "the recipe's model" or evaluated_checkpoint in (None, recipe_model):
        return None
    return build_policy(cfg.model), str(recipe_model or "the recipe's model")
