"""The figures and numbers of docs/world.md, from a checkpoint and a pretraining run.

    python tools/world_report.py --checkpoint tiny-base --snapshots work_dirs/pretrain_snapshots \
        --out docs/assets

Writes ``world_renders.png`` (exact renders of train prompts with their reasoning),
``base_samples.png`` (the model's own reasoning and images on eval prompts),
``pretrain_curve.png`` (minutes of pretraining vs eval strict and partial scores of the raw
and EMA weights of each saved pretraining state) and
``world_scores.json`` (the base model's eval scores by category, with reasoning and without).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from unigrpo_kit.evaluation import evaluate, protocol_cfg
from unigrpo_kit.models.checkpoint import CheckpointError, load_model, load_tensor_pickle
from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy
from unigrpo_kit.rollout.build import evaluation_engine
from unigrpo_kit.tasks.shapeworld import ShapeWorld
from unigrpo_kit.visualize import episode_grid, grid


def renders_figure(task: ShapeWorld, path: Path) -> None:
    rows = []
    for category in task.categories:
        prompts = task.sample_prompts(1, split="train", generator=len(rows), categories=[category])
        prompt = prompts[0]
        rows.append(
            {
                "lines": [f"[{category}] {prompt.text}", f"reasoning: {prompt.reasoning}"],
                "images": [task.render(prompt.scene)],
            }
        )
    grid(rows, path)


def snapshot_curve(folder: Path, model, tokenizer, num_prompts: int) -> list[dict]:
    """Eval scores of the raw and EMA weights of every pretraining state saved in ``folder``
    (copies of ``<pretrain dir>/last/state.pt`` taken while the run went on)."""
    points = []
    for file in sorted(folder.glob("*.pt")):
        try:  # tensors and plain containers only: a planted pickle cannot run code
            state = load_tensor_pickle(file)
        except CheckpointError as error:
            raise SystemExit(f"error: {error}") from None
        point = {"step": state["step"], "minutes": round(state["elapsed"] / 60, 2)}
        for name in ("model", "ema"):
            model.load_state_dict(state[name])
            policy = TinyUnifiedPolicy.from_parts(model, tokenizer)
            scores = evaluate(policy, num_prompts=num_prompts, shift=3.0)
            point.update({f"{name}/{k}": v for k, v in scores.items()})
        points.append(point)
        print(json.dumps(point), flush=True)
    return sorted(points, key=lambda p: p["step"])


def curve_figure(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["minutes"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, style in (("model", "-"), ("ema", "--")):
        for metric in ("strict", "partial"):
            ax.plot(
                minutes,
                [p[f"{name}/judge/{metric}"] for p in points],
                style,
                marker="o",
                label=f"{metric} ({'weights' if name == 'model' else 'EMA'})",
            )
    ax.set_xlabel("pretraining minutes (2-core CPU, 1 thread)")
    ax.set_ylabel("eval judge score (140 prompts)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="tiny-base")
    parser.add_argument(
        "--snapshots",
        type=Path,
        default=Path("work_dirs/pretrain_snapshots"),
        help="copies of the pretraining state taken during the run",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/assets"))
    parser.add_argument("--num-prompts", type=int, default=700)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shift", type=float, default=3.0, help="the recipes' rollout.shift")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    task = ShapeWorld()
    model, tokenizer = load_model(args.checkpoint)
    model.eval()

    renders_figure(task, args.out / "world_renders.png")
    policy = TinyUnifiedPolicy.from_parts(model, tokenizer)
    engine = evaluation_engine(protocol_cfg(max_rounds=2, shift=args.shift), policy, task)
    prompts = task.eval_prompts(14, seed=1)[::2]
    batch = engine.rollout(prompts, 1, generator=torch.Generator().manual_seed(1))
    episode_grid(batch, args.out / "base_samples.png", max_rows=len(prompts))

    common = dict(num_prompts=args.num_prompts, shift=args.shift)
    scores = {
        "with_reasoning": evaluate(policy, **common),
        "without_reasoning": evaluate(policy, reasoning=False, **common),
        "two_rounds": evaluate(policy, max_rounds=2, **common),
    }
    if args.snapshots.is_dir():
        points = snapshot_curve(args.snapshots, model, tokenizer, num_prompts=140)
        curve_figure(points, args.out / "pretrain_curve.png")
        scores["pretrain_curve"] = points
    (args.out / "world_scores.json").write_text(json.dumps(scores, indent=2))
    print(json.dumps({k: v for k, v in scores.items() if k != "pretrain_curve"}, indent=2))


if __name__ == "__main__":
    main()
