"""Speed of the built-in world's model on this machine (the targets of docs/world.md).

    python tools/bench_world.py [--checkpoint tiny-base] [--threads 2] [--repeats 20]

Measures, as the median of ``--repeats`` runs after two warm-up runs:
- ``forward_ms``: one forward pass over 32 sequences of prompt + reasoning + one noisy image;
- ``sample_10_steps_s``: painting 32 images with 10 Euler steps over a cached text context
  (the prompt + reasoning prefix is encoded once, as in a rollout).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from unigrpo_kit.models.checkpoint import load_model
from unigrpo_kit.models.layout import ImageSegment, TextSegment
from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy, prompt_ids
from unigrpo_kit.rollout.painter import paint
from unigrpo_kit.samplers.schedules import shifted_sigmas
from unigrpo_kit.tasks.shapeworld import ShapeWorld


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median and (max - min) spread in seconds of ``fn()`` after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times) - min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="tiny-base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.checkpoint)
    model.eval()
    task = ShapeWorld()
    prompts = task.sample_prompts(args.batch, split="train", generator=0)
    # prompt + canonical reasoning, as the model reads them before painting
    texts = [f"{p.text} <think> {p.reasoning} </think>" for p in prompts]
    ids, mask = prompt_ids(tokenizer, texts, [])
    size = model.config.image_size
    noisy = torch.randn(args.batch, 3, size, size)
    sigma = torch.full((args.batch,), 0.5)
    with torch.inference_mode():
        forward = lambda: model([TextSegment(ids, mask), ImageSegment(noisy, sigma, noisy=True)])  # noqa: E731
        forward_s, forward_spread = timed(forward, args.repeats)

        def sample() -> None:
            context = model.extend_text(None, ids, mask)[1]
            policy = TinyUnifiedPolicy.from_parts(model, tokenizer)
            paint(policy, context, shifted_sigmas(10), num_rows=args.batch)

        sample_s, sample_spread = timed(sample, max(3, args.repeats // 4))
    print(
        json.dumps(
            {
                "threads": args.threads,
                "batch": args.batch,
                "text_tokens": ids.shape[1],
                "image_tokens": model.config.num_patches,
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                "forward_ms": round(forward_s * 1000, 1),
                "forward_spread_ms": round(forward_spread * 1000, 1),
                "sample_10_steps_s": round(sample_s, 3),
                "sample_spread_s": round(sample_spread, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
