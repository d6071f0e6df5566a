"""A training worker for any recipe: ``python recipe_worker.py CONFIG OUT STEPS [key=value ...]``
alone or under ``torchrun``. ``CONFIG`` is a resolved recipe (e.g. a dry run's shrunk copy,
dumped by the test, whose model is a tiny random model saved in a folder). Writes, per rank,
``OUT/rank<r>.pt``: every step's metrics, the final parameters (whole) and how many parameter
entries this rank stores."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import torch
from mmengine.config import Config

from unigrpo_kit import distributed
from unigrpo_kit.runner import build_trainer


def whole(p: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return p.full_tensor() if isinstance(p, DTensor) else p


def local(p: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return p.to_local() if isinstance(p, DTensor) else p


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> None:
    config, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({k: _value(v) for k, v in (o.split("=", 1) for o in sys.argv[4:])})
    distributed.setup(cfg)
    trainer = build_trainer(cfg)
    metrics = [trainer.train_step().metrics for _ in range(steps)]
    named = list(trainer.model.named_parameters())
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "metrics": metrics,
            "params": {n: whole(p).detach().cpu().clone() for n, p in named},
            "stored": sum(local(p).numel() for _, p in named),
            "total": sum(p.numel() for _, p in named),
        },
        out / f"rank{distributed.rank()}.pt",
    )
    distributed.teardown()


if __name__ == "__main__":
    main()
