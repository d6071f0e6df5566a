"""Which half of a trained unified model earned its score: the expert swap.

    python tools/expert_swap.py RECIPE CHECKPOINT [CHECKPOINT ...] [--base tiny-base]
        [--num-prompts 300] [--seed 1] [--threads 2] [--out FILE.json]

A policy's parameters split into its text part and its image part (``parameter_groups()``:
for TinyUnified the embeddings, text experts and LM head against the patch and sigma
embeddings, image experts, modulation and velocity head; every parameter is in one of them).
For each trained checkpoint, four models are scored on the recipe's evaluation protocol (the
same prompts for all): the base, the trained model, the trained text part with the base image
part, and the base text part with the trained image part. The image half has earned its place
when "base text + trained image" beats the base model (the reasoning is the base's, so any gain
is the painter's) without costing quality.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from unigrpo_kit.evaluation import evaluate_recipe, recording_episodes
from unigrpo_kit.models.checkpoint import load_policy, resolve_checkpoint
from unigrpo_kit.recipe import load_recipe

METRICS = ("judge/strict", "judge/partial", "quality", "strict/counting", "reasoning/strict",
           "painter/right_given_right_reasoning")  # fmt: skip
OBJECTS = (1, 2, 3)
COLUMNS = (*METRICS, *(f"{k}/{n}_objects" for n in OBJECTS for k in ("share", "quality")))


def swapped(base_folder: Path, trained_folder: Path, part: str):
    """The base policy with ``part`` ("text" or "image") replaced by the trained one's."""
    policy = load_policy(base_folder)
    donor = load_policy(trained_folder)
    mine, theirs = policy.parameter_groups()[part], donor.parameter_groups()[part]
    if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
        sys.exit(f"error: {trained_folder} and {base_folder} are not the same architecture")
    with torch.no_grad():
        for a, b in zip(mine, theirs, strict=True):
            a.copy_(b)
    return policy


def scores(cfg, policy, num_prompts: int, seed: int) -> dict:
    """The protocol's means, and quality and share of the episodes by the number of objects
    the reasoning's scene holds (quality falls with the objects drawn)."""
    with recording_episodes() as rows:
        result = evaluate_recipe(cfg, policy, num_prompts=num_prompts, seed=seed)
    out = {k: round(float(result[k]), 4) for k in METRICS if k in result}
    for count in OBJECTS:
        held = [r["quality"] for r in rows if r.get("reasoning/objects") == count]
        out[f"share/{count}_objects"] = round(len(held) / max(len(rows), 1), 4)
        out[f"quality/{count}_objects"] = round(sum(held) / len(held), 4) if held else None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--base", default="tiny-base")
    parser.add_argument("--num-prompts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_recipe(args.recipe, [])
    base = resolve_checkpoint(args.base)
    rows = {"base": scores(cfg, load_policy(base), args.num_prompts, args.seed)}
    for checkpoint in args.checkpoints:
        name = str(checkpoint)
        rows[name] = {
            "trained": scores(cfg, load_policy(checkpoint), args.num_prompts, args.seed),
            "trained text + base image": scores(
                cfg, swapped(base, checkpoint, "text"), args.num_prompts, args.seed
            ),
            "base text + trained image": scores(
                cfg, swapped(base, checkpoint, "image"), args.num_prompts, args.seed
            ),
        }

    def cells(values: dict) -> str:
        shown = [values.get(c) for c in COLUMNS]
        return " | ".join("-" if v is None else f"{v:.4f}" for v in shown)

    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    print(f"| base | {cells(rows['base'])} |")
    for checkpoint in args.checkpoints:
        for label, values in rows[str(checkpoint)].items():
            print(f"| {checkpoint.parent.parent.name} {label} | {cells(values)} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {"num_prompts": args.num_prompts, "seed": args.seed, "base": args.base}
        args.out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
