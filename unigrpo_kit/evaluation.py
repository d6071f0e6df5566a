"""Scoring a unified model on ShapeWorld's eval prompts: reason (greedy), paint (ODE), judge.

The protocol, fixed so that numbers are comparable across runs and checkpoints:
the eval prompts of ``task.eval_prompts(num_prompts, seed)``, stratified over the categories;
greedy reasoning (temperature 0) up to ``</think>``; an Euler ODE over ``steps`` steps from
noise drawn from ``seed``; the GenEval-style judge (strict and partial) and the quality metric
on the painted image. ``reasoning=False`` paints from the raw prompt (``<think> </think>``).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .rollout.painter import paint
from .rollout.policy import UnifiedTextPolicy
from .samplers.schedules import shifted_sigmas
from .samplers.text import TextSampler


def prompt_ids(tokenizer, texts: list[str], suffix: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids [B, n] and mask of ``<bos> text`` followed by ``suffix``."""
    rows = [[tokenizer.bos_id, *tokenizer.encode(t), *suffix] for t in texts]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = True
    return ids, mask


@torch.no_grad()
def reason_and_paint(
    model,
    tokenizer,
    texts: list[str],
    *,
    reasoning: bool = True,
    steps: int = 20,
    shift: float = 1.0,
    max_reasoning_tokens: int = 32,
    generator: torch.Generator | None = None,
    temperature: float = 0.0,
):
    """Reasoning strings and images [B, 3, H, W] in [0, 1] for prompts ``texts``."""
    device = next(model.parameters()).device
    if reasoning:
        ids, mask = prompt_ids(tokenizer, texts, [tokenizer.think_id])
        sampler = TextSampler(
            temperature=temperature,
            max_new_tokens=max_reasoning_tokens,
            stop_token_ids=(tokenizer.end_think_id,),
            pad_token_id=tokenizer.pad_id,
        )
        policy = UnifiedTextPolicy(model, None, tokenizer.pad_id)
        sample = sampler.generate(policy, ids.to(device), mask.to(device), generator=generator)
        context = policy.finish(sample.tokens, sample.mask)
        thoughts = [tokenizer.decode(row[m]) for row, m in zip(sample.tokens, sample.mask)]
    else:
        ids, mask = prompt_ids(tokenizer, texts, [tokenizer.think_id, tokenizer.end_think_id])
        _, context = model.extend_text(None, ids.to(device), mask.to(device))
        thoughts = [""] * len(texts)
    trajectory = paint(model, context, shifted_sigmas(steps, shift), generator=generator)
    images = ((trajectory.final + 1) / 2).clamp(0, 1)
    return thoughts, images


def evaluate(
    model,
    tokenizer,
    task,
    *,
    num_prompts: int = 140,
    seed: int = 0,
    steps: int = 20,
    shift: float = 1.0,
    batch_size: int = 70,
    reasoning: bool = True,
) -> dict:
    """Judge scores on the eval prompts: strict, partial, quality, and strict per category."""
    from .tasks.shapeworld import quality, score

    was_training = model.training
    model.eval()
    prompts = task.eval_prompts(num_prompts, seed=seed)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    per_category: dict[str, list[float]] = defaultdict(list)
    strict, partial, qualities, valid = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        thoughts, images = reason_and_paint(
            model,
            tokenizer,
            [p.text for p in batch],
            reasoning=reasoning,
            steps=steps,
            shift=shift,
            generator=generator,
        )
        for prompt, thought, image in zip(batch, thoughts, images.cpu()):
            s, p = score(image, prompt.spec)
            strict.append(s)
            partial.append(p)
            qualities.append(quality(image))
            per_category[prompt.category].append(s)
            valid.append(float(task.parse_reasoning(thought) is not None) if reasoning else 0.0)
    model.train(was_training)
    mean = lambda xs: round(sum(xs) / max(len(xs), 1), 4)  # noqa: E731
    result = {
        "judge/strict": mean(strict),
        "judge/partial": mean(partial),
        "quality": mean(qualities),
    }
    if reasoning:
        result["reasoning/valid"] = mean(valid)
    result.update({f"strict/{c}": mean(v) for c, v in sorted(per_category.items())})
    return result
