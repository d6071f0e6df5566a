"""ShapeWorld's evaluation protocol: the GenEval-style judge and the quality metric.

The prompts of ``eval_prompts(num_prompts, seed, split)``, stratified over the categories; one
greedy episode each from the evaluation engine (reasoning, ODE painting, as many rounds as the
recipe allows); on each episode's final image the judge's strict and partial scores and the
quality metric, and, with reasoning, whether the reasoning parses as a scene. A policy that
paints nothing (a causal LM on the riddle task) is scored on its reasoning alone: the scene it
describes, judged against the prompt (``reasoning/strict``, ``reasoning/partial``). A unified
policy's score is also split into its halves: ``reasoning/strict`` (its reasoning's scene
against the prompt) and ``painter/right_given_right_reasoning`` (the image's strict score over
the episodes whose reasoning was right: the painter's fidelity, the room an image expert has),
and ``reasoning/objects``, the objects its parsed scene holds (quality falls with them).
"""

from __future__ import annotations

from unigrpo_kit.evaluation import evaluate_episodes
from unigrpo_kit.tasks.shapeworld.judge import score
from unigrpo_kit.tasks.shapeworld.quality_metric import quality
from unigrpo_kit.tasks.shapeworld.scene import parse_reasoning
from unigrpo_kit.tasks.shapeworld.spec import constraints_met


def episode_metrics(batch, reasoning: bool) -> list[dict[str, float]]:
    """One dict per episode of an evaluation batch (see the module docstring)."""
    images = batch.final_images()
    rounds = batch.rounds().tolist()
    rows = []
    for i, prompt in enumerate(batch.prompts):
        row: dict[str, float] = {}
        scene = parse_reasoning(batch.texts[i]) if reasoning else None
        if images is not None:
            image = images[i].cpu()
            strict, partial = score(image, prompt.spec)
            row.update({"judge/strict": strict, "judge/partial": partial})
            row.update({"quality": quality(image), "rounds/mean": rounds[i]})
        else:
            met, total = constraints_met(scene, prompt.spec) if scene is not None else (0, 1)
            row.update({"reasoning/strict": float(met == total), "reasoning/partial": met / total})
        if reasoning:
            row["reasoning/valid"] = float(scene is not None)
        if reasoning and images is not None:
            # the score split into its halves: the reasoning's scene judged against the prompt,
            # and the painter's fidelity where that scene was right (a key only those rows have)
            met, total = constraints_met(scene, prompt.spec) if scene is not None else (0, 1)
            row["reasoning/strict"] = float(met == total)
            if scene is not None:
                row["reasoning/objects"] = float(len(scene.objects))
            if met == total:
                row["painter/right_given_right_reasoning"] = row["judge/strict"]
        key = "judge/strict" if images is not None else "reasoning/strict"
        row[f"strict/{prompt.category}"] = row[key]
        rows.append(row)
    return rows


def evaluate(task, engine, *, num_prompts: int, seed: int, split: str, batch_size: int = 70):
    """The protocol's scores: overall, then strict per category (sorted)."""
    prompts = task.eval_prompts(num_prompts, seed=seed, split=split)
    scores = evaluate_episodes(
        engine,
        prompts,
        lambda batch: episode_metrics(batch, engine.reasoning),
        seed=seed,
        batch_size=batch_size,
    )
    overall = {k: v for k, v in scores.items() if not k.startswith("strict/")}
    overall.update(sorted((k, v) for k, v in scores.items() if k.startswith("strict/")))
    return overall
