"""Runs of the trainer: work directories, metrics, sample grids, checkpoints and exact resume.

``work_dir`` gets ``config.py`` (the resolved recipe), ``metrics.jsonl`` (one JSON object per
step), TensorBoard events in ``tb/``, sample grids in ``samples/``, plots in ``plots/``
(:mod:`~unigrpo_kit.run_report`) and checkpoints in
``checkpoints/step_XXXXXX/`` (the policy in its ecosystem's layout, written by its ``save``;
``trainer_state.safetensors`` + ``trainer_state.json``, the optimizer and every random-number
state; ``checksums.json``, the sha256 of every file, written last), each written atomically;
``checkpoints/latest`` names the newest. Checkpoints hold CPU tensors whatever
``model.device`` was, so a run saved on CUDA resumes on CUDA or on the CPU.

Reliability (tests/test_reliability_runs.py pins each):

- nothing is unpickled: the trainer state is safetensors + JSON; an older checkpoint's
  ``trainer_state.pt`` is read with ``weights_only=True`` and a pickle that could run code is
  refused in one line;
- ``--resume`` verifies the newest checkpoint and falls back to the newest intact one with a
  one-line warning; it never restarts from scratch over a run's metrics, and an older
  checkpoint is pruned only once a newer one is written and verified;
- ``metrics.jsonl`` is cut back to the resumed step (a torn last line too) and is always valid
  JSON (a non-finite number is written ``null``);
- a full disk or an I/O error while writing ends the run with :class:`RunStorageError`, one
  line; nothing written before is lost;
- SIGINT / SIGTERM finish the step, save a checkpoint and raise :class:`RunInterrupted`; a
  second signal raises KeyboardInterrupt at once (the atomic save keeps the last checkpoint);
- ``--resume`` with options that differ from the run's ``config.py`` lists them and applies
  them (:data:`NO_EFFECT_ON_RESUME` names those that cannot act); a work dir holding files that
  are not a kit run is refused.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file

from . import distributed as dist
from . import sharded_checkpoint
from .devices import recipe_device
from .models.checkpoint import (
    CHECKSUMS_FILE,
    CheckpointError,
    UnsafeCheckpointError,
    atomic_write_dir,
    latest_checkpoint,
    load_tensor_pickle,
    remove_leftovers,
    verify_checkpoint,
)
from .run_report import RunReport
from .trainer import UniGRPOTrainer
from .visualize import episode_grid

__all__ = [
    "KEEP_CHECKPOINTS",
    "RunInterrupted",
    "RunStorageError",
    "build_policy",
    "build_trainer",
    "latest_checkpoint",
    "restore",
    "save_checkpoint",
    "train",
]

KEEP_CHECKPOINTS = 2
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
LEGACY_STATE = "trainer_state.pt"  # written by kit versions before 2026-07: a pickle
STATE_FORMAT = 1
STEP_FOLDER = re.compile(r"^step_(\d+)$")
# What a kit run writes into its work dir, and what `unigrpo-kit ablate` writes there before
# it trains the run (sweep/command.py, sweep/worker.py).
RUN_ENTRIES = {"config.py", "metrics.jsonl", "checkpoints", "tb", "samples", "plots", "wandb"}
SWEEP_ENTRIES = {"run.json", "worker.log", "result.json", ".lock"}
KIT_CONFIG_KEYS = {"recipe_name", "model", "rollout", "schedule", "optimizer"}
# Recipe keys that --resume with a new value cannot act on: the checkpoint holds what they set.
NO_EFFECT_ON_RESUME = {
    "seed": "the random-number states come from the checkpoint",
    "model.checkpoint": "the weights come from the run's checkpoint",
}
# Hyperparameters of the optimizer's param groups that the recipe sets: after the optimizer
# state is restored, these are taken from the (possibly changed) recipe.
RECIPE_GROUP_KEYS = ("lr", "base_lr", "betas", "weight_decay")


class RunStorageError(RuntimeError):
    """Writing a run's file failed (a full disk, an I/O error): the run stopped; everything
    written before (older metric lines, the previous checkpoint) is intact."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run between steps, after a checkpoint of the last step was
    saved. A KeyboardInterrupt, so that ``except Exception`` (the sweep worker's) does not
    record an interrupted run as a failed one."""

    def __init__(self, step: int, signal_name: str, checkpoint: Path):
        super().__init__(f"interrupted at step {step} by {signal_name}; saved {checkpoint}")
        self.step = step
        self.signal_name = signal_name
        self.checkpoint = checkpoint


def warn(message: str) -> None:
    """One line on stderr, whatever ``quiet`` says: what the run did that the user must know."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


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
    if dist.launched():  # one device per rank: cuda:LOCAL_RANK where CUDA is asked for
        cfg.model.device = dist.device_for(cfg.model.get("device"))
    recipe_device(cfg)  # a bad model.device fails here, in one line, before any loading
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    return UniGRPOTrainer(cfg, build_policy(cfg.model))


# ----------------------------------------------------------------------------- trainer state
def _encode(value, tensors: dict[str, torch.Tensor], path: str):
    """``value`` (tensors in dicts, lists, tuples, numbers, strings) as JSON, with every tensor
    moved (on the CPU) into ``tensors`` under a unique name and a ``{"__tensor__": name}`` in its
    place; tuples, non-string keys and non-finite floats get markers that :func:`_decode`
    reverses. Anything else is a TypeError: a state that cannot be stored safely."""
    if isinstance(value, torch.Tensor):
        name = path if path not in tensors else f"{path}#{len(tensors)}"
        tensor = value.detach().cpu()
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # a view: safetensors stores whole, unshared storages
        tensors[name] = tensor.contiguous()
        return {"__tensor__": name}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, (list, tuple)):
        items = [_encode(item, tensors, f"{path}.{i}") for i, item in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {
            "__items__": [
                [_encode(k, tensors, f"{path}.key{i}"), _encode(v, tensors, f"{path}.{k}")]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    raise TypeError(f"trainer state {path or '.'}: a {type(value).__name__} cannot be stored")


def _decode(value, tensors: dict[str, torch.Tensor]):
    """The inverse of :func:`_encode`: plain containers and the tensors they name."""
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_decode(item, tensors) for item in value["__tuple__"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def trainer_state(trainer: UniGRPOTrainer) -> dict:
    """Everything besides the weights that an exact resume needs: the step and the optimizer's
    state (every draw of a step comes from streams of the seed and the step,
    :mod:`~unigrpo_kit.rollout.streams`), and torch's global random state."""
    # under FSDP2 the optimizer's state is sharded: it lives in the checkpoint's sharded/
    sharded = _sharded(trainer)
    return {
        "format": STATE_FORMAT,
        "step": trainer.step,
        "optimizer": {"sharded": sharded_checkpoint.SHARDED}
        if sharded
        else trainer.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }


def _sharded(trainer: UniGRPOTrainer) -> bool:
    """The run shards its model and optimizer (``distributed.strategy="fsdp2"``): its
    checkpoints take the sharded format, written and read by every rank."""
    parallel = getattr(trainer, "parallel", None)
    return parallel is not None and parallel.name == "fsdp2"


def write_trainer_state(state: dict, folder: Path) -> None:
    """``state``'s tensors to ``trainer_state.safetensors``, the rest to ``trainer_state.json``:
    a format that cannot run code when read."""
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "")
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_JSON).write_text(json.dumps(encoded, allow_nan=False) + "\n")


def read_trainer_state(folder: Path) -> dict:
    """The state :func:`write_trainer_state` wrote into ``folder`` or, for a checkpoint of an
    older kit, its ``trainer_state.pt`` read with ``weights_only=True``. A :class:`CheckpointError`
    (one line naming the file) if it is missing or unreadable; an
    :class:`~unigrpo_kit.models.checkpoint.UnsafeCheckpointError` if it is a pickle that could
    run code."""
    folder = Path(folder)
    if (folder / STATE_JSON).is_file() or not (folder / LEGACY_STATE).is_file():
        try:
            encoded = json.loads((folder / STATE_JSON).read_text())
            tensors = load_file(str(folder / STATE_TENSORS))
            state = _decode(encoded, tensors)
        except FileNotFoundError as error:
            raise CheckpointError(f"{error.filename} is missing: no trainer state") from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{folder / STATE_JSON} is unreadable ({error})") from None
        except Exception as error:  # safetensors' own error type: a damaged tensor file
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise CheckpointError(f"{folder / STATE_TENSORS} is unreadable ({first})") from None
    else:
        try:
            state = load_tensor_pickle(folder / LEGACY_STATE)
        except UnsafeCheckpointError:
            raise
        except Exception as error:  # a truncated zip, a bad magic number
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise CheckpointError(f"{folder / LEGACY_STATE} is unreadable ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"the trainer state in {folder} is a {type(state).__name__}")
    missing = sorted({"step", "optimizer", "torch_rng"} - set(state))
    if missing:
        raise CheckpointError(f"the trainer state in {folder} lacks {', '.join(missing)}")
    return state


# ----------------------------------------------------------------------------- checkpoints
def step_folders(checkpoints: Path) -> list[Path]:
    """The ``step_XXXXXX`` folders of a run's ``checkpoints/``, oldest first."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if STEP_FOLDER.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(STEP_FOLDER.match(p.name).group(1)))


def _step_of(folder: Path) -> int:
    return int(STEP_FOLDER.match(folder.name).group(1))


def check_checkpoint(folder: Path) -> dict:
    """Verify a run's checkpoint and read its trainer state; a :class:`CheckpointError` if it is
    damaged. Every file's sha256 is checked against ``checksums.json`` (whose absence damages a
    checkpoint of this format); a checkpoint of an older kit (``trainer_state.pt``, no checksums)
    has its safetensors files and its state read back in full instead."""
    new_format = (folder / STATE_JSON).exists() or (folder / STATE_TENSORS).exists()
    if (folder / CHECKSUMS_FILE).is_file() or new_format:
        verify_checkpoint(folder)  # this kit writes checksums.json into every checkpoint
    else:
        for file in sorted(folder.rglob("*.safetensors")):
            try:
                load_file(str(file))
            except Exception as error:
                first = (str(error).splitlines() or [type(error).__name__])[0]
                raise CheckpointError(f"{file} is unreadable ({first})") from None
    state = read_trainer_state(folder)
    if state["step"] != _step_of(folder):
        raise CheckpointError(f"{folder} holds the state of step {state['step']}")
    return state


def _point_latest(checkpoints: Path, name: str) -> None:
    """Make ``checkpoints/latest`` name ``name``, atomically."""
    latest = checkpoints / "latest"
    tmp = checkpoints / f".latest.tmp-{os.getpid()}"
    tmp.write_text(name)
    os.replace(tmp, latest)


def _prune(checkpoints: Path, saved: Path, damaged: set[str]) -> None:
    """Remove the checkpoints older than ``saved`` (just written and verified) but the newest
    ``KEEP_CHECKPOINTS - 1`` intact ones. Folders newer than ``saved`` are damaged ones a
    resume skipped: each is replaced when the run reaches its step."""
    older = [p for p in step_folders(checkpoints) if _step_of(p) < _step_of(saved)]
    intact = [p for p in older if p.name not in damaged]
    keep = set(intact[max(0, len(intact) - (KEEP_CHECKPOINTS - 1)) :])
    for old in older:
        if old not in keep:
            shutil.rmtree(old)
            damaged.discard(old.name)


def save_checkpoint(trainer: UniGRPOTrainer, work_dir: Path, damaged: set[str] | None = None):
    """Write ``checkpoints/step_XXXXXX`` atomically (``checksums.json`` last), verify it, point
    ``latest`` at it, and only then prune older checkpoints. ``damaged``: names of folders a
    resume found damaged, which do not count as kept checkpoints."""
    checkpoints = Path(work_dir) / "checkpoints"
    folder = checkpoints / f"step_{trainer.step:06d}"
    state = trainer_state(trainer)
    sharded = _sharded(trainer)
    if sharded and not dist.is_main():  # write this rank's shards into rank 0's folder
        _write_sharded(trainer, Path(dist.broadcast_object(None)), export=False)
        dist.barrier()
        return folder

    def write(tmp: Path) -> None:
        if sharded:
            dist.broadcast_object(str(tmp))
            _write_sharded(trainer, tmp, export=True)
        else:
            trainer.policy.save(tmp)
        write_trainer_state(state, tmp)

    atomic_write_dir(folder, write, checksums=True)
    verify_checkpoint(folder)
    _point_latest(checkpoints, folder.name)
    if damaged is not None:
        damaged.discard(folder.name)
    _prune(checkpoints, folder, damaged if damaged is not None else set())
    if sharded:
        dist.barrier()  # the checkpoint is whole before any rank goes on
    return folder


def _write_sharded(trainer: UniGRPOTrainer, tmp: Path, *, export: bool) -> None:
    """Every rank: the policy in its own layout from the gathered parameters (written by rank
    0, ``export``), then each rank's shards into ``tmp/sharded``."""
    with trainer.parallel.gathered():
        if export:
            trainer.policy.save(tmp)
    sharded_checkpoint.save(trainer, tmp)


def _apply_optimizer_state(trainer: UniGRPOTrainer, saved: dict, folder: Path) -> None:
    """Load the optimizer's saved state, then set each group's recipe hyperparameters (lr,
    betas, weight_decay) from the recipe the trainer was built with: a changed
    ``optimizer.lr_<part>`` acts on resume."""
    fresh = [{k: g[k] for k in RECIPE_GROUP_KEYS if k in g} for g in trainer.optimizer.param_groups]
    try:
        trainer.optimizer.load_state_dict(saved)
    except ValueError:
        before = [g.get("name", "?") for g in saved["param_groups"]]
        now = [g.get("name", "?") for g in trainer.optimizer.param_groups]
        raise ValueError(
            f"cannot resume from {folder}: the optimizer trained parts {before}, the recipe "
            f"trains {now}; optimizer.lr_<part> cannot switch a part between frozen (0) and "
            "trained on resume (start a new run with --work-dir)"
        ) from None
    for group, values in zip(trainer.optimizer.param_groups, fresh):
        group.update(values)


def restore(trainer: UniGRPOTrainer, folder: Path, state: dict | None = None) -> None:
    """Load weights, optimizer and RNG states from a checkpoint folder written by this module
    (``state``: its trainer state, if already read by :func:`check_checkpoint`).

    The tensors are read onto the CPU; the optimizer moves its state to the device of the
    parameters it belongs to (the trainer's model). The optimizer's lr, betas and weight decay
    are the recipe's, not the checkpoint's."""
    folder = Path(folder)
    if state is None:
        state = check_checkpoint(folder)
    if sharded_checkpoint.has_shards(folder):  # any strategy, any world size (collective)
        fresh = [{k: g[k] for k in RECIPE_GROUP_KEYS if k in g}
                 for g in trainer.optimizer.param_groups]  # fmt: skip
        sharded_checkpoint.load(trainer, folder, collective=_sharded(trainer))
        for group, values in zip(trainer.optimizer.param_groups, fresh, strict=True):
            group.update(values)
    elif _sharded(trainer):
        raise CheckpointError(
            f"cannot resume {folder} with distributed.strategy='fsdp2': it was written by a "
            "replicated run (no sharded/ folder); resume it with distributed.strategy='ddp'"
        )
    else:
        trainer.policy.load_weights(folder)
        _apply_optimizer_state(trainer, state["optimizer"], folder)
    torch.set_rng_state(state["torch_rng"])  # older checkpoints' stream states are not needed
    trainer.step = int(state["step"])


@dataclass
class ResumePoint:
    """What ``--resume`` found: the checkpoint to continue from (None: start afresh), its
    trainer state, and the names of newer folders that were damaged."""

    folder: Path | None = None
    state: dict | None = None
    damaged: dict[str, str] = field(default_factory=dict)


def find_resume_point(work_dir: Path) -> ResumePoint:
    """The newest intact checkpoint of a run (newest by step; ``latest`` only reports), and the
    damaged ones newer than it, each with its one-line reason. A pickle that could run code
    is not a damaged checkpoint to skip: it stops the resume."""
    point = ResumePoint()
    for folder in reversed(step_folders(Path(work_dir) / "checkpoints")):
        try:
            point.state = check_checkpoint(folder)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as error:
            point.damaged[folder.name] = str(error)
            continue
        point.folder = folder
        return point
    return point


def _latest_problem(checkpoints: Path, chosen: Path) -> str | None:
    """What is wrong with ``checkpoints/latest``, given that ``chosen`` is the newest intact
    checkpoint; None if it names ``chosen``."""
    pointer = checkpoints / "latest"
    if not pointer.is_file():
        return "checkpoints/latest is missing"
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return "checkpoints/latest is unreadable"
    if name == chosen.name:
        return None
    if not STEP_FOLDER.match(name) or not (checkpoints / name).is_dir():
        return f"checkpoints/latest names {name!r}, which does not exist"
    if _step_of(checkpoints / name) < _step_of(chosen):
        return f"checkpoints/latest names {name}, but {chosen.name} is newer and intact"
    return None  # a damaged one: the damage is reported


def _report_resume_point(work_dir: Path, point: ResumePoint) -> None:
    """One warning line if the checkpoint resumed from is not what ``latest`` named, or newer
    checkpoints were damaged; ``latest`` is then repointed at the checkpoint used."""
    checkpoints = work_dir / "checkpoints"
    problems = [f"checkpoint {name} is damaged: {why}" for name, why in point.damaged.items()]
    latest = _latest_problem(checkpoints, point.folder)
    if latest:
        problems.insert(0, latest)
    if problems:
        warn(f"{'; '.join(problems)}; resuming from {point.folder.name} instead")
        _point_latest(checkpoints, point.folder.name)


# ----------------------------------------------------------------------------- metrics
@dataclass
class MetricLines:
    """The records of ``metrics.jsonl``, read leniently: each complete record, the numbers of
    the lines that are not records, and whether the last line is torn."""

    records: list[tuple[int, int, str]]  # (1-based line number, step, line without newline)
    bad: list[int]  # 1-based line numbers before the last line
    torn: bool
    unterminated: bool = False  # the file does not end with a newline


def read_metric_lines(path: Path) -> MetricLines:
    """Parse ``metrics.jsonl`` line by line; a last line that is not a complete record is torn
    (a write cut by a kill or a full disk)."""
    data = path.read_bytes() if path.is_file() else b""
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()  # the file ends with a newline (or is empty)
    records, bad, torn = [], [], False
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            step = record["step"]
            if isinstance(step, bool) or not isinstance(step, int):
                raise TypeError("step")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if number == len(lines):
                torn = True
            else:
                bad.append(number)
            continue
        records.append((number, step, raw.decode()))
    return MetricLines(records, bad, torn, unterminated=bool(data) and not data.endswith(b"\n"))


def cut_metrics(path: Path, last_step: int) -> None:
    """Keep the metric records up to ``last_step`` (a killed run may have logged past its last
    checkpoint, or torn its last line) and say so in one line if anything was dropped. A
    damaged line among the kept records is a one-line :class:`CheckpointError` (nothing is
    changed)."""
    if not path.exists():
        return
    found = read_metric_lines(path)
    kept = [(number, line) for number, step, line in found.records if step <= last_step]
    damaged = [number for number in found.bad if kept and number < kept[-1][0]]
    if damaged:
        raise CheckpointError(
            f"{path} line {damaged[0]} is not a JSON record with a 'step', among the records "
            f"kept up to step {last_step}; repair or remove that line, then resume"
        )
    dropped = len(found.records) - len(kept)
    if not dropped and not found.torn and not found.bad:
        if found.unterminated:  # a complete last record without its newline
            _replace_text(path, "".join(line + "\n" for _, line in kept))
        return
    parts = [f"{dropped} record(s) past step {last_step}"] if dropped else []
    parts += [f"{len(found.bad)} unreadable line(s) after them"] if found.bad else []
    parts += ["a torn last line"] if found.torn else []
    _replace_text(path, "".join(line + "\n" for _, line in kept))
    warn(
        f"{path}: cut back to step {last_step} (the step resumed from): dropped "
        f"{' and '.join(parts)}"
    )


def metrics_line(metrics: dict) -> str:
    """One ``metrics.jsonl`` line: strict JSON, a non-finite number written ``null``."""
    clean = {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in metrics.items()
    }
    return json.dumps(clean, allow_nan=False) + "\n"


def _write_bytes(fd: int, data: memoryview) -> int:
    """``os.write``: the one system call that appends metrics (tests inject failures here)."""
    return os.write(fd, data)


def append_line(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` with unbuffered writes (no buffered bytes left to flush, and
    so to fail, later)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(text.encode())
        while view:
            view = view[_write_bytes(fd, view) :]
    finally:
        os.close(fd)


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` atomically (a temporary sibling renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- work dirs
def _literal(node: ast.AST):
    """The value of a dumped recipe's expression: literals, ``dict(k=v)``, unary minus; a
    ValueError for anything else (nothing is executed)."""
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise ValueError("not dict(...)")
        if any(kw.arg is None for kw in node.keywords):
            raise ValueError("**kwargs")
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("**dict")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if not isinstance(value, (int, float)):
            raise ValueError("sign of a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    return ast.literal_eval(node)


def read_recipe_dump(path: Path) -> dict | None:
    """The resolved recipe a run wrote to ``config.py`` (``cfg.dump``), read without running
    it; None if it is not one (another program's config, or not Python literals)."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    recipe = {}
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            return None
        try:
            recipe[node.targets[0].id] = _literal(node.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return None
    return recipe if KIT_CONFIG_KEYS <= set(recipe) else None


def _has_run(work_dir: Path) -> bool:
    """Whether ``work_dir`` holds a run's metrics or checkpoints."""
    checkpoints = work_dir / "checkpoints"
    return (work_dir / "metrics.jsonl").exists() or (
        checkpoints.is_dir() and any(True for _ in checkpoints.iterdir())
    )


def check_work_dir(work_dir: Path, resume: bool) -> bool:
    """Whether ``work_dir`` holds a run to continue; refuse (one line, nothing written) a work
    dir that is a file, that holds files but is not a kit run, or a run without ``--resume``."""
    if not work_dir.exists():
        return False
    if not work_dir.is_dir():
        raise FileExistsError(f"--work-dir {work_dir} is a file, not a folder")
    has_run = _has_run(work_dir)
    config = work_dir / "config.py"
    if not has_run:
        if config.exists() and read_recipe_dump(config) is None:
            raise FileExistsError(
                f"work dir {work_dir} holds a config.py that is not a kit recipe; choose an "
                "empty or new --work-dir (nothing was overwritten)"
            )
        foreign = sorted(
            p.name
            for p in work_dir.iterdir()
            if p.name not in RUN_ENTRIES | SWEEP_ENTRIES and not _is_leftover(p)
        )
        if foreign:
            raise FileExistsError(
                f"work dir {work_dir} holds files that are not a kit run "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose an "
                "empty or new --work-dir (nothing was overwritten)"
            )
        return False
    if not resume:
        raise FileExistsError(
            f"work dir {work_dir} already holds a run; pass --resume to continue it or "
            "--work-dir to start a new one (nothing was overwritten)"
        )
    return True


def _is_leftover(path: Path) -> bool:
    return path.name.startswith(".") and (".tmp-" in path.name or ".old-" in path.name)


def _flat(tree, prefix: str = "") -> dict:
    """``{dotted key: value}`` of a nested dict; tuples compare as lists."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flat(value, dotted + "."))
        else:
            flat[dotted] = json.loads(json.dumps(value, default=str))
    return flat


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def report_changed_options(cfg, config_file: Path, step: int) -> list[str]:
    """Compare the recipe with the run's ``config.py``; list the keys that differ in one
    warning line and return them. The new ``config.py`` records the recipe the run goes on with.

    What a changed key does from step ``step + 1``: ``schedule.*`` (more steps, other save and
    sample periods), ``optimizer.lr_<part>`` / ``betas`` / ``weight_decay`` (set on the restored
    optimizer's groups), ``rollout.*``, ``algorithm.*``, ``reward.*``, ``task.*``, ``threads``
    and ``model.device`` all act. ``seed`` and ``model.checkpoint`` cannot
    (:data:`NO_EFFECT_ON_RESUME`: the checkpoint holds the RNG states and the weights); an
    ``optimizer.lr_<part>`` that turns a part from frozen (0) to trained or back, or a model of
    another shape, is refused in one line."""
    old = read_recipe_dump(config_file) if config_file.is_file() else None
    if old is None:
        warn(f"{config_file} is missing or not a kit recipe: cannot list changed options")
        return []
    before, now = _flat(old), _flat(cfg._cfg_dict.to_dict())
    missing = object()
    keys = sorted(
        k for k in before.keys() | now.keys() if before.get(k, missing) != now.get(k, missing)
    )
    if not keys:
        return []
    shown = ", ".join(
        f"{k} {_short(before.get(k, '(unset)'))} -> {_short(now.get(k, '(unset)'))}" for k in keys
    )
    inert = [f"{k} ({NO_EFFECT_ON_RESUME[k]})" for k in keys if k in NO_EFFECT_ON_RESUME]
    tail = f"; no effect: {', '.join(inert)}" if inert else ""
    warn(
        f"--resume with options that differ from {config_file}: {shown}; applied from step "
        f"{step + 1}{tail}"
    )
    return keys


def _dump_config(cfg, work_dir: Path) -> None:
    """Write the resolved recipe to ``config.py`` atomically."""
    _replace_text(work_dir / "config.py", cfg.pretty_text)


# ----------------------------------------------------------------------------- signals
class Interrupts:
    """While active (main thread only), SIGINT and SIGTERM set :attr:`received` instead of
    stopping the step; a second one raises KeyboardInterrupt at once. The previous handlers
    come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped at once")
        self.received = signal.Signals(signum).name

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


# ----------------------------------------------------------------------------- the run
def _storage_error(what: str, error: OSError, step: int, kept: str) -> RunStorageError:
    reason = error.strerror or str(error) or type(error).__name__
    return RunStorageError(
        f"could not write {what}: {reason} (errno {error.errno}); the run stopped at step "
        f"{step} and nothing older was lost ({kept}); free space, then resume with --resume"
    )


class _Run:
    """One training run's files: metrics, TensorBoard, samples, checkpoints."""

    def __init__(self, trainer: UniGRPOTrainer, work_dir: Path, damaged: set[str]):
        self.trainer = trainer
        self.work_dir = work_dir
        self.metrics_path = work_dir / "metrics.jsonl"
        self.damaged = damaged
        self.saved_step: int | None = None

    def kept(self) -> str:
        """The newest checkpoint on disk, in words."""
        intact = [
            p for p in step_folders(self.work_dir / "checkpoints") if p.name not in self.damaged
        ]
        return f"checkpoint {intact[-1]} is intact" if intact else "no checkpoint was written yet"

    def log(self, metrics: dict) -> None:
        try:
            append_line(self.metrics_path, metrics_line(metrics))
        except OSError as error:
            raise _storage_error(self.metrics_path, error, self.trainer.step, self.kept()) from None

    def sample(self, batch) -> Path:
        path = self.work_dir / "samples" / f"step_{self.trainer.step:06d}.png"
        try:
            episode_grid(batch, path)
        except OSError as error:
            raise _storage_error(path, error, self.trainer.step, self.kept()) from None
        return path

    def save(self) -> Path:
        folder = self.work_dir / "checkpoints" / f"step_{self.trainer.step:06d}"
        try:
            folder = save_checkpoint(self.trainer, self.work_dir, self.damaged)
        except OSError as error:
            raise _storage_error(folder, error, self.trainer.step, self.kept()) from None
        except CheckpointError as error:
            raise RunStorageError(
                f"checkpoint {folder} failed its verification right after it was written "
                f"({error}); older checkpoints were kept; check the disk"
            ) from None
        self.saved_step = self.trainer.step
        return folder


def _prepare(
    cfg, work_dir: Path, trainer: UniGRPOTrainer, has_run: bool, load: bool = True
) -> tuple[set[str], ResumePoint]:
    """Remove leftovers of killed writes, restore the checkpoint ``--resume`` continues from
    (or refuse; ``load=False``: only find it, for a collective restore by every rank), cut the
    metrics back to it, report changed options and write ``config.py``; returns the names of
    damaged checkpoints and the resume point."""
    checkpoints = work_dir / "checkpoints"
    for gone in remove_leftovers(checkpoints) + remove_leftovers(work_dir):
        warn(f"removed {gone}, left by a write that was killed")
    point = find_resume_point(work_dir) if has_run else ResumePoint()
    metrics = work_dir / "metrics.jsonl"
    if has_run and point.folder is None:
        _refuse_restart(work_dir, point)
    step = trainer.step
    if point.folder is not None:
        _report_resume_point(work_dir, point)
        if load:
            restore(trainer, point.folder, point.state)
        step = int(point.state["step"])
        report_changed_options(cfg, work_dir / "config.py", step)
    cut_metrics(metrics, step)
    work_dir.mkdir(parents=True, exist_ok=True)
    _dump_config(cfg, work_dir)
    return set(point.damaged), point


def _refuse_restart(work_dir: Path, point: ResumePoint) -> None:
    """With no intact checkpoint, start afresh only if nothing would be lost; else refuse."""
    records = read_metric_lines(work_dir / "metrics.jsonl").records
    if not point.damaged and not records:
        return
    why = (
        f"every checkpoint is damaged ({next(iter(point.damaged.values()))})"
        if point.damaged
        else "it has no checkpoint"
    )
    held = f"metrics.jsonl holds {len(records)} step(s)" if records else "its checkpoints exist"
    raise CheckpointError(
        f"cannot resume {work_dir}: {why}, and {held}; refusing to restart from scratch over "
        "them: move them away or train into a new --work-dir"
    )


def train(cfg, work_dir: Path, *, resume: bool = False, quiet: bool = False) -> UniGRPOTrainer:
    """Run the recipe ``cfg`` to ``schedule.steps`` steps in ``work_dir`` (continuing the run
    there with ``resume``). Raises :class:`RunInterrupted` after SIGINT / SIGTERM (once the
    step is checkpointed) and :class:`RunStorageError` when a write fails.

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs this: rank 0 alone checks and prepares
    the work dir, writes metrics, samples, TensorBoard and checkpoints; the other ranks restore
    the checkpoint rank 0 chose and train their shards."""
    work_dir = Path(work_dir)
    dist.setup(cfg)
    try:
        has_run = check_work_dir(work_dir, resume)
        dist.barrier()  # every rank has seen the work dir before rank 0 writes into it
        trainer = build_trainer(cfg)
        damaged = _prepare_ranks(cfg, work_dir, trainer, has_run)
        run = _Run(trainer, work_dir, damaged)
        with Interrupts() as interrupts:
            _loop(cfg, run, interrupts, quiet or not dist.is_main())
        # the ranks leave together: an FSDP2 rank that tore down its process group while rank
        # 0 was still writing its last files was seen to abort at exit (1 run in 10)
        dist.barrier()
        return trainer
    finally:
        dist.teardown()


def _prepare_ranks(cfg, work_dir: Path, trainer: UniGRPOTrainer, has_run: bool) -> set[str]:
    """:func:`_prepare` on rank 0; the other ranks then restore the checkpoint it resumed from
    (if any) and every rank starts from rank 0's weights."""
    sharded = _sharded(trainer)
    resumed = None
    damaged: set[str] = set()
    if dist.is_main():
        try:
            damaged, point = _prepare(cfg, work_dir, trainer, has_run, load=not sharded)
        except OSError as error:
            if isinstance(error, (FileNotFoundError, FileExistsError)):
                raise
            raise _storage_error(work_dir, error, trainer.step, "nothing was changed") from None
        resumed = None if point.folder is None else int(point.state["step"])
    resumed = dist.broadcast_object(resumed)
    if resumed and (sharded or not dist.is_main()):  # FSDP2: every rank restores together
        restore(trainer, work_dir / "checkpoints" / f"step_{resumed:06d}")
    if dist.world_size() > 1 and not sharded:
        dist.broadcast_parameters(trainer.policy.module)
    return damaged


def _loop(cfg, run: _Run, interrupts: Interrupts, quiet: bool) -> None:
    """The training steps, each logged, sampled and checkpointed as the schedule says (by rank
    0 alone in a multi-process run)."""
    from torch.utils.tensorboard import SummaryWriter

    trainer, schedule = run.trainer, cfg.schedule
    main = dist.is_main()
    collective_save = _sharded(trainer)  # FSDP2: every rank writes its shards
    writer = SummaryWriter(str(run.work_dir / "tb")) if main else None
    report = RunReport(cfg, run.work_dir, writer, quiet=quiet) if main else None
    columns = [
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    try:
        bar_off = quiet or report is None or not report.terminal
        with Progress(*columns, disable=bar_off) as progress:
            bar = progress.add_task(
                "train", total=schedule.steps, completed=trainer.step, status=""
            )
            while trainer.step < schedule.steps:
                result = trainer.train_step()
                metrics = result.metrics
                last = trainer.step == schedule.steps
                if main:
                    run.log(metrics)
                    for key, value in metrics.items():
                        if key != "step":
                            writer.add_scalar(key, value, trainer.step)
                    progress.update(bar, completed=trainer.step, status=_status(metrics))
                    report.logged(metrics)
                    sample_now = schedule.sample_every and (
                        trainer.step % schedule.sample_every == 0 or last
                    )
                    if sample_now and result.batch is not None:  # rank 0 may hold no episode
                        report.sampled(run.sample(result.batch), trainer.step)
                save_now = (schedule.save_every and trainer.step % schedule.save_every == 0) or last
                if save_now and (main or collective_save):
                    run.save()
                # a stop asked of any rank stops every rank at the same step
                if dist.any_rank(interrupts.received is not None) and not last:
                    received = interrupts.received or "a stop on another rank"
                    if (main or collective_save) and run.saved_step != trainer.step:
                        run.save()
                    dist.barrier()  # the checkpoint is on disk before any rank leaves
                    folder = run.work_dir / "checkpoints" / f"step_{trainer.step:06d}"
                    raise RunInterrupted(trainer.step, received, folder)
    finally:
        if report is not None:
            report.finish()
        if writer is not None:
            writer.close()


def _status(metrics: dict) -> str:
    return (
        f"reward {metrics['reward/mean']:.3f}  loss {metrics['loss/text']:+.4f}/"
        f"{metrics['loss/image']:+.4f}  {metrics['time/step_s']:.1f}s/step"
    )
