"""What RL can learn from a model: how often its own samples succeed, per category and split.

    python tools/trainable_prompts.py RECIPE [--checkpoint tiny-base] [--splits train eval]
        [--samples 16] [--prompts 24] [--seed 1] [--threads 2] [--categories C ...]
        [--by-text CATEGORY] [--out FILE.json]

GRPO learns only from groups whose rewards differ: a prompt on which none of the policy's
samples succeeds gives every episode the advantage 0 (and, with dynamic sampling, is not trained
on at all), so RL cannot teach it; a prompt on which every sample succeeds has nothing left to
teach. For each split and category this samples ``--samples`` episodes of up to ``--prompts``
distinct prompt texts with the recipe's training samplers (its text and reflection
temperatures; pictures painted with the deterministic ODE of the evaluation), scores them with
the recipe's reward, and reports per category: the mean success rate $p$ (reward >=
``--success``), the share of prompts with no success in the samples (RL's blind spot), the share
where every sample succeeds, and the chance that a group of the recipe's $G$ holds both a
success and a failure, $1 - (1-p_j)^G - p_j^G$, averaged over the prompts $j$. With
``--by-text CATEGORY`` it also prints each prompt text's rate and what the greedy episode wrote
(the reasoning, then each reflection).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from unigrpo_kit.models.checkpoint import load_policy
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.registry import REWARDS, TASKS
from unigrpo_kit.rollout.build import evaluation_engine, text_sampler


def distinct_prompts(task, split: str, per_category: int, seed: int) -> dict[str, list]:
    """Up to ``per_category`` prompts of distinct text for each category of ``split``."""
    by_category: dict[str, dict[str, object]] = defaultdict(dict)
    for prompt in task.eval_prompts(per_category * 7 * 8, seed=seed, split=split):
        texts = by_category[prompt.category]
        if len(texts) < per_category:
            texts.setdefault(prompt.text, prompt)
    return {c: sorted(t.values(), key=lambda p: p.text) for c, t in by_category.items()}


@torch.no_grad()
def success_rates(cfg, policy, task, reward, prompts: list, samples: int, seed: int, success):
    """[len(prompts)] fraction of ``samples`` sampled episodes per prompt whose reward is at
    least ``success``, and the greedy episode's (what it wrote, success) per prompt: the
    reasoning, then each reflection, joined by " | "."""
    sampled = evaluation_engine(cfg, policy, task)
    sampled.text_sampler = text_sampler(cfg.rollout.text_sampler, policy, "reasoning")
    if sampled.reflection_sampler is not None:
        reflection = cfg.rollout.reflection_sampler
        sampled.reflection_sampler = text_sampler(reflection, policy, "reflection")
    generator = torch.Generator().manual_seed(seed)
    batch = sampled.rollout(prompts, samples, generator=generator)
    scores = reward(prompts=batch.prompts, images=batch.final_images().cpu(), texts=batch.texts)
    hits = (scores.scores >= success).float()
    rates = torch.zeros(len(prompts)).index_add_(0, batch.group_ids.cpu(), hits) / samples
    greedy = evaluation_engine(cfg, policy, task).rollout(prompts, 1, generator=generator)
    greedy_scores = reward(
        prompts=greedy.prompts, images=greedy.final_images().cpu(), texts=greedy.texts
    ).scores
    # what the greedy episode wrote: the reasoning, then each round's reflection (if any)
    written = [
        " | ".join([text, *(round_[i] for round_ in greedy.reflections)])
        for i, text in enumerate(greedy.texts)
    ]
    return rates, [(w, bool(s >= success)) for w, s in zip(written, greedy_scores)]


def trainable_chance(rates: torch.Tensor, group: int) -> torch.Tensor:
    """The chance that a group of ``group`` samples holds a success and a failure:
    $1 - (1-p)^G - p^G$ per prompt."""
    return 1 - (1 - rates) ** group - rates**group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--checkpoint", default=None, help="default: the recipe's model")
    parser.add_argument("--splits", nargs="+", default=["pretrain", "train", "eval"])
    parser.add_argument("--samples", type=int, default=16, help="sampled episodes per prompt")
    parser.add_argument("--prompts", type=int, default=24, help="distinct prompts per category")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--success", type=float, default=1.0, help="reward counted a success")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--categories", nargs="+", default=None, help="default: all")
    parser.add_argument("--by-text", default=None, help="a category to list prompt by prompt")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.samples < 1 or args.prompts < 1:
        parser.error("--samples and --prompts must be >= 1")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = load_recipe(args.recipe)
    task = TASKS.build(cfg.task)
    reward = REWARDS.build(cfg.reward)
    checkpoint = args.checkpoint or cfg.model.get("checkpoint", "tiny-base")
    policy = load_policy(checkpoint)
    policy.module.eval()
    group = cfg.rollout.group_size
    report: dict = {"checkpoint": str(checkpoint), "samples": args.samples, "group_size": group}
    print(f"{checkpoint}: {args.samples} samples per prompt, success = reward >= {args.success}")
    print("| split | category | prompts | success rate | no success | all succeed "
          f"| P(group of {group} trainable) | greedy success |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for split in args.splits:
        for category, prompts in distinct_prompts(task, split, args.prompts, args.seed).items():
            if args.categories and category not in args.categories:
                continue
            rates, greedy = success_rates(
                cfg, policy, task, reward, prompts, args.samples, args.seed, args.success
            )
            row = {
                "prompts": len(prompts),
                "success_rate": round(float(rates.mean()), 4),
                "no_success": round(float((rates == 0).float().mean()), 4),
                "all_succeed": round(float((rates == 1).float().mean()), 4),
                "trainable_group": round(float(trainable_chance(rates, group).mean()), 4),
                "greedy_success": round(sum(ok for _, ok in greedy) / len(greedy), 4),
            }
            report.setdefault(split, {})[category] = row
            print(f"| {split} | {category} | " + " | ".join(str(v) for v in row.values()) + " |")
            if category == args.by_text:
                row["by_text"] = {
                    p.text: {"rate": round(float(r), 4), "greedy": t, "greedy_success": ok}
                    for p, r, (t, ok) in zip(prompts, rates, greedy)
                }
                for text, item in row["by_text"].items():
                    print(f"    {text!r}: {item['rate']:.2f}; greedy {item['greedy']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
