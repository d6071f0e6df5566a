"""Data parallelism over ``torch.distributed``: who holds which episodes, and the reductions.

A run started by ``torchrun`` (``unigrpo-kit train --nproc N``, a user's own ``torchrun
--nnodes ...``, or Slurm ``srun`` with torchrun's environment) has ``WORLD_SIZE`` > 1 in its
environment; :func:`setup` then joins the process group (NCCL on CUDA, gloo on the CPU) with
``distributed.timeout_s`` on every collective, so that no rank waits forever for a dead peer.
Without it every function here is the identity of a world of one, and the trainer's code path
is the same.

**The episodes of a step.** P prompts x G episodes: global row ``g * G + m`` is member ``m`` of
group ``g``. :func:`shard` gives rank r a contiguous block: whole groups
(``rollout.split_groups=False``, the default: groups ``[r P / W, (r + 1) P / W)``) or rows
(``split_groups=True``: rows ``[r P G / W, (r + 1) P G / W)``, so a group may straddle ranks).
Any P, G and W work; a rank may hold no episode at all and still takes part in every
collective.

**One update.** The trainer walks the same global minibatches on every rank, each rank
computing the loss of the rows it holds. A term of the objective is a mean over some count C
(episodes, or tokens for ``token-mean``); the rank's term, a mean over its own count C_r, is
scaled by C_r / sum_r C_r (:func:`term_scales`) so that the ranks' losses sum to the loss of the
whole minibatch, and the gradients are summed across ranks (:func:`all_reduce_gradients`,
DDP's all-reduce, in one flat buffer per dtype). Every replica then takes the same optimizer
step; the result equals a world-1 run's up to the order of floating-point additions.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes logs, samples and checkpoints."""
    return rank() == 0


def launched() -> bool:
    """This process was started by torchrun (or srun with its variables) for a world > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(cfg) -> None:
    """Join the process group of a torchrun launch (no-op for a single process).

    ``distributed.backend``: ``"auto"`` (NCCL with CUDA, else gloo), ``"gloo"`` or ``"nccl"``;
    ``distributed.timeout_s``: the longest any collective waits (default 300 s)."""
    if not launched() or dist.is_initialized():
        return
    settings = cfg.get("distributed", None) or {}
    backend = settings.get("backend", "auto")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = datetime.timedelta(seconds=float(settings.get("timeout_s", 300)))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timeout)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(requested: str | None) -> str | None:
    """The device of this rank: ``cuda:LOCAL_RANK`` when the recipe asks for CUDA (or auto
    finds it) in a multi-process run; otherwise what the recipe asked for."""
    if not launched():
        return requested
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if requested in (None, "auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local}"
    return requested


# ------------------------------------------------------------------------------ the shards
@dataclass(frozen=True)
class Shard:
    """The global rows this rank holds: ``rows`` (global indices, ascending) of a step of
    ``num_groups`` x ``group_size`` episodes."""

    rows: tuple[int, ...]
    num_groups: int
    group_size: int

    @property
    def total(self) -> int:
        return self.num_groups * self.group_size

    def keys(self) -> list[tuple[int, int]]:
        """``(group, member)`` of each held row."""
        return [divmod(r, self.group_size) for r in self.rows]

    def group_ids(self) -> torch.Tensor:
        return torch.tensor([r // self.group_size for r in self.rows], dtype=torch.long)


def shard(num_groups: int, group_size: int, *, split_groups: bool, rank_: int, world: int):
    """Rank ``rank_``'s contiguous block of the step's rows (see the module docstring)."""
    if split_groups:
        total = num_groups * group_size
        lo, hi = rank_ * total // world, (rank_ + 1) * total // world
        return Shard(tuple(range(lo, hi)), num_groups, group_size)
    lo, hi = rank_ * num_groups // world, (rank_ + 1) * num_groups // world
    return Shard(tuple(range(lo * group_size, hi * group_size)), num_groups, group_size)


# ------------------------------------------------------------------------------ reductions
def all_gather_rows(values: list, shard_: Shard) -> list:
    """Every rank's per-row ``values`` (picklable), in global row order."""
    if world_size() == 1:
        return list(values)
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, (list(shard_.rows), list(values)))
    out: list = [None] * shard_.total
    for rows, vals in gathered:
        for row, value in zip(rows, vals, strict=True):
            out[row] = value
    return out


def all_gather_objects(value) -> list:
    """Every rank's ``value`` (picklable), in rank order."""
    if world_size() == 1:
        return [value]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise sum (or max) of a list of floats over the ranks (float64)."""
    if world_size() == 1 or not values:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def term_scales(denominators: dict[str, float]) -> dict[str, float]:
    """C_r / sum_r C_r for each term (1 in a world of one; 0 where no rank has any)."""
    names = sorted(denominators)
    totals = all_reduce([float(denominators[n]) for n in names])
    return {n: (denominators[n] / t if t > 0 else 0.0) for n, t in zip(names, totals, strict=True)}


def all_reduce_gradients(params: list[torch.Tensor]) -> None:
    """Sum every parameter's gradient over the ranks (a missing gradient counts as zeros), one
    flat all-reduce per dtype and device: DistributedDataParallel's reduction."""
    if world_size() == 1:
        return
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for group in buckets.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (replicas start equal)."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast_object(value):
    """Rank 0's ``value`` (picklable) on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any (a stop request, a non-finite loss)."""
    return bool(all_reduce([float(flag)], op="max")[0])


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def say(message: str) -> None:
    """A line on stderr, prefixed with the rank in a multi-process run."""
    prefix = f"[rank {rank()}] " if world_size() > 1 else ""
    print(prefix + message, file=sys.stderr, flush=True)
