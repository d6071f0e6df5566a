"""A training worker for the distributed tests: ``python worker.py OUT STEPS [key=value ...]``
alone (a world of one) or under ``torchrun --nproc-per-node N``. Trains the tiny multi-round
recipe for STEPS steps and writes, per rank, ``OUT/rank<r>.pt``: every step's metrics and the
final parameters."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from unigrpo_kit import distributed
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.runner import build_trainer

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "threads=1",
    "rollout.prompts_per_step=3",
    "rollout.group_size=4",
    "rollout.num_steps=10",
    "rollout.window.window_range=(0,10)",
    "rollout.text_sampler.max_new_tokens=12",
    "rollout.reflection_sampler.max_new_tokens=6",
    "algorithm.minibatch_size=5",
    "optimizer.warmup_steps=0",
    # Adam turns float noise in near-zero gradients into a fraction of a step, so parameter
    # differences between world sizes scale with the rate: 1.3e-5 after 2 updates at the
    # recipe's 3e-4, 4.5e-6 after 3 at 1e-4 (docs/distributed.md)
    "optimizer.lr_text=1e-4",
]


def whole(p: torch.Tensor) -> torch.Tensor:
    """A parameter's full value (an FSDP2 shard is gathered)."""
    from torch.distributed.tensor import DTensor

    return p.full_tensor() if isinstance(p, DTensor) else p


def local(p: torch.Tensor) -> torch.Tensor:
    """What this rank stores of a parameter (its shard under FSDP2)."""
    from torch.distributed.tensor import DTensor

    return p.to_local() if isinstance(p, DTensor) else p


def main() -> None:
    out, steps, options = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    cfg = load_recipe(REPO / "recipes" / "unified_multiround.py", [*TINY, *options])
    distributed.setup(cfg)
    trainer = build_trainer(cfg)
    metrics = [trainer.train_step().metrics for _ in range(steps)]
    params = {n: whole(p).detach().cpu().clone() for n, p in trainer.model.named_parameters()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "metrics": metrics,
            "params": params,
            "rows": list(trainer.shard.rows),
            "stored": sum(local(p).numel() for p in trainer.model.parameters()),
        },  # fmt: skip
        out / f"rank{distributed.rank()}.pt",
    )
    distributed.teardown()


if __name__ == "__main__":
    main()
