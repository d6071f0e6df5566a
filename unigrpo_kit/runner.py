"""Runs of the trainer: work directories, metrics, sample grids, checkpoints and exact resume.

``work_dir`` gets ``config.py`` (the resolved recipe), ``metrics.jsonl`` (one JSON object per
step), TensorBoard events in ``tb/``, sample grids in ``samples/`` and checkpoints in
``checkpoints/step_XXXXXX/`` (the policy in its ecosystem's layout, written by its ``save``,
plus the optimizer and every random-number state), each written atomically;
``checkpoints/latest`` names the newest.
Checkpoints hold CPU tensors whatever ``model.device`` was, so a run saved on CUDA resumes on
CUDA or on the CPU.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .devices import recipe_device
from .models.checkpoint import atomic_write_dir, latest_checkpoint
from .trainer import UniGRPOTrainer
from .visualize import episode_grid

KEEP_CHECKPOINTS = 2


def build_policy(model_cfg, **overrides):
    """The policy a recipe's ``model`` names, through ``MODELS.build`` (``type`` defaults to
    the built-in ``TinyUnified``); ``overrides`` replace keys (e.g. a checkpoint's folder)."""
    from .registry import MODELS

    spec = dict(model_cfg)
    spec.setdefault("type", "TinyUnified")
    spec.update(overrides)
    return MODELS.build(spec)


def build_trainer(cfg) -> UniGRPOTrainer:
    """Seed everything, build the policy that ``model`` names (on ``model.device``) and the
    trainer."""
    recipe_device(cfg)  # a bad model.device fails here, in one line, before any loading
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    return UniGRPOTrainer(cfg, build_policy(cfg.model))


def _to_cpu(value):
    """``value`` (an optimizer state dict: dicts, lists, tensors) with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def save_checkpoint(trainer: UniGRPOTrainer, work_dir: Path) -> Path:
    """Write ``checkpoints/step_XXXXXX`` atomically and point ``latest`` at it."""
    folder = work_dir / "checkpoints" / f"step_{trainer.step:06d}"

    def write(tmp: Path) -> None:
        trainer.policy.save(tmp)
        state = {
            "step": trainer.step,
            "optimizer": _to_cpu(trainer.optimizer.state_dict()),
            "python_rng": trainer.rng.getstate(),
            "generator": trainer.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, tmp / "trainer_state.pt")

    atomic_write_dir(folder, write)
    latest = work_dir / "checkpoints" / "latest"
    tmp = latest.with_suffix(".tmp")
    tmp.write_text(folder.name)
    os.replace(tmp, latest)
    steps = sorted((work_dir / "checkpoints").glob("step_*"))
    for old in steps[:-KEEP_CHECKPOINTS]:
        if old != folder:
            shutil.rmtree(old)
    return folder


def restore(trainer: UniGRPOTrainer, folder: Path) -> None:
    """Load weights, optimizer and RNG states from a checkpoint folder written by this module.

    The file's tensors are read onto the CPU; the optimizer moves its state to the device of
    the parameters it belongs to (the trainer's model)."""
    trainer.policy.load_weights(folder)
    state = torch.load(folder / "trainer_state.pt", map_location="cpu", weights_only=False)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.rng.setstate(state["python_rng"])
    trainer.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    trainer.step = state["step"]


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the metric lines up to ``last_step`` (a killed run may have logged past it)."""
    if not path.exists():
        return
    lines = [
        ln
        for ln in path.read_text().splitlines()
        if ln.strip() and json.loads(ln)["step"] <= last_step
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)


def train(cfg, work_dir: Path, *, resume: bool = False, quiet: bool = False) -> UniGRPOTrainer:
    """Run the recipe ``cfg`` to ``schedule.steps`` steps in ``work_dir``."""
    from torch.utils.tensorboard import SummaryWriter

    work_dir = Path(work_dir)
    trainer = build_trainer(cfg)
    metrics_path = work_dir / "metrics.jsonl"
    previous = latest_checkpoint(work_dir)
    if (previous is not None or metrics_path.exists()) and not resume:
        raise FileExistsError(
            f"work dir {work_dir} already holds a run; pass --resume to continue it or "
            "--work-dir to start a new one (nothing was overwritten)"
        )
    if previous is not None:
        restore(trainer, previous)
    _truncate_metrics(metrics_path, trainer.step)
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(work_dir / "config.py"))
    schedule = cfg.schedule
    writer = SummaryWriter(str(work_dir / "tb"))
    columns = [
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    with open(metrics_path, "a") as log, Progress(*columns, disable=quiet) as progress:
        bar = progress.add_task("train", total=schedule.steps, completed=trainer.step, status="")
        while trainer.step < schedule.steps:
            result = trainer.train_step()
            metrics = result.metrics
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            for key, value in metrics.items():
                if key != "step":
                    writer.add_scalar(key, value, trainer.step)
            progress.update(
                bar,
                completed=trainer.step,
                status=(
                    f"reward {metrics['reward/mean']:.3f}  loss {metrics['loss/text']:+.4f}/"
                    f"{metrics['loss/image']:+.4f}  {metrics['time/step_s']:.1f}s/step"
                ),
            )
            last = trainer.step == schedule.steps
            if schedule.sample_every and (trainer.step % schedule.sample_every == 0 or last):
                episode_grid(result.batch, work_dir / "samples" / f"step_{trainer.step:06d}.png")
            if (schedule.save_every and trainer.step % schedule.save_every == 0) or last:
                save_checkpoint(trainer, work_dir)
    writer.close()
    return trainer
