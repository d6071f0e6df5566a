"""``unigrpo-kit train RECIPE --nproc N``: torchrun on this machine, and its failures in one line.

The launch is PyTorch's own elastic agent (:func:`torch.distributed.run.run`, what the
``torchrun`` command runs) with ``--standalone`` (a rendezvous on a free local port) and
``--nproc-per-node N``; each worker runs ``python -m unigrpo_kit.cli train ...`` with torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), which is all
:mod:`unigrpo_kit.distributed` reads, so a user's own ``torchrun --nnodes ... --rdzv-backend
c10d`` or Slurm ``srun`` runs the same entry unchanged.

When a worker dies (an exception, out of memory, a signal), the agent stops the others (SIGTERM,
then SIGKILL after its grace period) and this returns the first failure: which rank, and why.
"""

from __future__ import annotations

import signal
from pathlib import Path

DEADLINE_S = 30  # the agent's grace between SIGTERM and SIGKILL of the surviving workers


def _cause(failure) -> str:
    """A worker's failure in words: the signal that killed it, or its exit status."""
    if failure.exitcode is not None and failure.exitcode < 0:
        try:
            name = signal.Signals(-failure.exitcode).name
        except ValueError:
            name = f"signal {-failure.exitcode}"
        return f"was killed by {name}"
    return f"exited with status {failure.exitcode} (its error is above)"


def launch(nproc: int, train_argv: list[str], work_dir: Path) -> tuple[int, str]:
    """Run ``unigrpo-kit train *train_argv`` in ``nproc`` processes; ``(0, "")`` when every
    rank finished, else ``(exit code, one-line message)`` naming the first failed rank."""
    import os

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # each worker sets torch's threads from the recipe; this only silences torchrun's banner
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    args = get_args_parser().parse_args(
        [
            "--standalone",
            f"--nproc-per-node={nproc}",
            "--max-restarts=0",
            "--module",
            "unigrpo_kit.cli",
            "train",
            *train_argv,
        ]  # fmt: skip
    )
    try:
        run(args)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        from .runner import step_folders

        saved = step_folders(Path(work_dir) / "checkpoints")
        kept = f"checkpoint {saved[-1]} is intact" if saved else "no checkpoint was written yet"
        return 1, (
            f"rank {rank} (pid {failure.pid}) {_cause(failure)}; every rank was stopped and "
            f"{kept}; resume with --resume"
        )
    return 0, ""
