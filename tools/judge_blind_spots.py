"""How often a policy's own samples fall where the judge's rules are a close call.

    python tools/judge_blind_spots.py --checkpoint tiny-base [--checkpoint RUN ...]
        [--recipe recipes/unified_multiround.py] [--num-prompts 300] [--eval-seed 1]
        [--out work_dirs/judge_blind_spots]

Each checkpoint paints the final images of the recipe's evaluation protocol (greedy text, ODE
images, as ``unigrpo-kit eval``). Every image is judged by the judge as it is, and again with
one rule moved: the kind decided by the bounding-box fill ratio with cut-offs 0.85 / 0.90 /
0.95 (the judge's rule before template matching; 0.90 was its value), and same-colour
fragments merged within 1, 2 or 3 px with no limit on the merged size (the old merge, 2 px).
For each variant the tool prints how many images change their strict verdict, in which
direction, and saves those images (upscaled, the judge's objects listed) for a look.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from unigrpo_kit.models.checkpoint import load_policy
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.registry import TASKS
from unigrpo_kit.rollout.build import evaluation_engine
from unigrpo_kit.tasks.shapeworld import judge


def _fill_ratio_kind(cut: float, triangle_max: float = 0.65):
    def classify(ys: np.ndarray, xs: np.ndarray) -> str:
        fill = float(judge.shape_mask(ys, xs).mean())
        if fill >= cut:
            return "square"
        return "triangle" if fill <= triangle_max else "circle"

    return classify


@contextmanager
def rules(classify=None, merge_distance=None, unlimited_merge=False):
    """The judge with one rule swapped, restored afterwards."""
    saved = judge.classify_kind, judge.MERGE_DISTANCE, judge.MAX_OBJECT_EXTENT
    judge.classify_kind = classify or saved[0]
    judge.MERGE_DISTANCE = saved[1] if merge_distance is None else merge_distance
    judge.MAX_OBJECT_EXTENT = float("inf") if unlimited_merge else saved[2]
    try:
        yield
    finally:
        judge.classify_kind, judge.MERGE_DISTANCE, judge.MAX_OBJECT_EXTENT = saved


VARIANTS = {
    "fill cut-off 0.85": dict(classify=_fill_ratio_kind(0.85)),
    "fill cut-off 0.90 (old rule)": dict(classify=_fill_ratio_kind(0.90)),
    "fill cut-off 0.95": dict(classify=_fill_ratio_kind(0.95)),
    "merge 1 px, no size limit": dict(merge_distance=1, unlimited_merge=True),
    "merge 2 px, no size limit (old rule)": dict(merge_distance=2, unlimited_merge=True),
    "merge 3 px, no size limit": dict(merge_distance=3, unlimited_merge=True),
    "old judge (both old rules)": dict(
        classify=_fill_ratio_kind(0.90), merge_distance=2, unlimited_merge=True
    ),
}


@torch.no_grad()
def final_images(cfg, checkpoint: str, num_prompts: int, seed: int):
    policy = load_policy(checkpoint)
    policy.module.eval()
    task = TASKS.build(cfg.task)
    engine = evaluation_engine(cfg, policy, task)
    prompts = task.eval_prompts(num_prompts, seed=seed, split="eval")
    generator = torch.Generator().manual_seed(seed)
    images = []
    for start in range(0, len(prompts), 70):
        batch = engine.rollout(prompts[start : start + 70], 1, generator=generator)
        images.append(batch.final_images().cpu())
    return prompts, torch.cat(images)


def save_cases(path: Path, images: torch.Tensor) -> None:
    from PIL import Image

    if not len(images):
        return
    tiles = (images[:32].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    padded = [np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles]
    row = np.concatenate(padded, axis=1)
    Image.fromarray(row).resize((row.shape[1] * 4, row.shape[0] * 4), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/unified_multiround.py")
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--num-prompts", type=int, default=300)
    parser.add_argument("--eval-seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("work_dirs/judge_blind_spots"))
    args = parser.parse_args()
    cfg = load_recipe(args.recipe)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for index, checkpoint in enumerate(args.checkpoint):
        prompts, images = final_images(cfg, checkpoint, args.num_prompts, args.eval_seed)
        specs = [p.spec for p in prompts]
        strict, _ = judge.score_batch(images, specs)
        rows = {"images": len(specs), "strict": round(float(strict.mean()), 4)}
        print(f"{checkpoint}: {len(specs)} images, strict {strict.mean():.4f} (the judge as it is)")
        for name, variant in VARIANTS.items():
            with rules(**variant):
                other, _ = judge.score_batch(images, specs)
            gained = ((other == 1) & (strict == 0)).nonzero().flatten()
            lost = ((other == 0) & (strict == 1)).nonzero().flatten()
            rows[name] = {"strict": round(float(other.mean()), 4), "only_variant_passes":
                          len(gained), "only_judge_passes": len(lost)}  # fmt: skip
            print(f"  {name:38s} strict {other.mean():.4f}  passes only here {len(gained):3d}"
                  f"  passes only with the judge {len(lost):3d}")  # fmt: skip
            slug = name.split(" (")[0].replace(" ", "_").replace(",", "").replace(".", "")
            changed = torch.cat([gained, lost])
            save_cases(args.out / f"{index}_{slug}.png", images[changed])
        report[checkpoint] = rows
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / 'report.json'} and the changed images")


if __name__ == "__main__":
    main()
