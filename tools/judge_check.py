"""Measure the ShapeWorld judge and quality metric against their targets; print the numbers.

    python tools/judge_check.py [--n 1000] [--seed 0] [--resolutions 32 64]

Targets: exact renders of eval-split prompts' canonical scenes score strict >= 0.99; renders of
scenes with one attribute changed so that the spec fails score strict 0 (all of them); renders
plus N(0, 0.05) pixel noise score strict >= 0.95; ragged shapes (a 1-px background line
through the shape, or boundary pixels flipped) parse as one object of the right kind; quality
is ~1 on clean renders and clearly lower on noisy, oversaturated and patterned images.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from unigrpo_kit.tasks.shapeworld.edits import perturb
from unigrpo_kit.tasks.shapeworld.judge import parse_image, parse_images, score_batch
from unigrpo_kit.tasks.shapeworld.quality_metric import quality_batch
from unigrpo_kit.tasks.shapeworld.renderer import render, render_batch
from unigrpo_kit.tasks.shapeworld.scene import BACKGROUND, COLORS, KINDS, PALETTE, Obj, Scene
from unigrpo_kit.tasks.shapeworld.spec import satisfies
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld

NOISE_STD = 0.05


def _wrong_scenes(prompts: list, rng: random.Random) -> list[Scene]:
    """For each prompt, its scene with one attribute changed so that the spec fails."""
    wrong = []
    for prompt in prompts:
        scene, _ = perturb(prompt.scene, rng)
        while satisfies(scene, prompt.spec):
            scene, _ = perturb(prompt.scene, rng)
        wrong.append(scene)
    return wrong


def _ragged_variants(resolution: int, rng: random.Random) -> list[tuple[torch.Tensor, Obj]]:
    """Single shapes damaged three ways: a 1-px background row, a column, 4 boundary flips."""
    background = torch.tensor(BACKGROUND).view(3, 1)
    variants = []
    for color in COLORS:
        for kind in KINDS:
            for slot in range(4):
                obj = Obj(color, kind, slot)
                clean = render(Scene((obj,)), resolution, jitter_rng=rng)
                mask = (clean - background.view(3, 1, 1)).abs().sum(0) > 0
                ys, xs = mask.nonzero(as_tuple=True)
                middle_y, middle_x = int(ys.float().mean()), int(xs.float().mean())
                row, column, flipped = clean.clone(), clean.clone(), clean.clone()
                row[:, middle_y, :] = background
                column[:, :, middle_x] = background
                edge = (ys == ys.min()) | (ys == ys.max()) | (xs == xs.min()) | (xs == xs.max())
                for index in rng.sample(range(int(edge.sum())), 4):
                    flipped[:, ys[edge][index], xs[edge][index]] = background.view(3)
                variants += [(row, obj), (column, obj), (flipped, obj)]
    return variants


def _strict_mean(images: torch.Tensor, prompts: list) -> float:
    strict, _ = score_batch(images, [p.spec for p in prompts])
    return float(strict.mean())


def check_resolution(resolution: int, n: int, seed: int) -> None:
    rng = random.Random(seed)
    prompts = ShapeWorld(resolution=resolution).sample_prompts(n, "eval", generator=seed)
    exact = render_batch([p.scene for p in prompts], resolution, jitter_rng=rng)
    wrong = render_batch(_wrong_scenes(prompts, rng), resolution, jitter_rng=rng)
    generator = torch.Generator().manual_seed(seed)
    noisy = (exact + NOISE_STD * torch.randn(exact.shape, generator=generator)).clamp(0, 1)
    print(f"== resolution {resolution}, {n} eval prompts, seed {seed}")
    print(f"exact renders      strict {_strict_mean(exact, prompts):.4f}   (target >= 0.99)")
    print(f"wrong-spec renders strict {_strict_mean(wrong, prompts):.4f}   (target 0)")
    print(f"noise std {NOISE_STD}    strict {_strict_mean(noisy, prompts):.4f}   (target >= 0.95)")

    variants = _ragged_variants(resolution, rng)
    parsed = [parse_image(image) for image, _ in variants]
    right = sum(
        len(found) == 1
        and (found[0].color, found[0].kind, found[0].slot) == (o.color, o.kind, o.slot)
        for found, (_, o) in zip(parsed, variants, strict=True)
    )
    print(f"ragged shapes      one right object {right}/{len(variants)}   (target all)")

    saturated = ((exact - 0.5) * 3 + 0.5).clamp(0, 1)
    patterned = exact.clone()
    patterned[:, :, ::2, ::2] = torch.tensor(PALETTE["red"]).view(3, 1, 1)
    for name, images in (
        ("clean", exact),
        ("noisy", noisy),
        ("saturated x3", saturated),
        ("checkerboard", patterned),
    ):
        q = quality_batch(images)
        print(f"quality {name:<13} mean {q.mean():.3f}  min {q.min():.3f}  max {q.max():.3f}")

    batch = exact[:32]
    timings = []
    for _ in range(10):
        start = time.perf_counter()
        parse_images(batch)
        timings.append(time.perf_counter() - start)
    print(f"parse 32 images    median {sorted(timings)[5] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="eval prompts per resolution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    for resolution in args.resolutions:
        check_resolution(resolution, args.n, args.seed)


if __name__ == "__main__":
    main()
