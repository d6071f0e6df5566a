"""The sharded part of a checkpoint: model and optimizer state through
``torch.distributed.checkpoint`` (DCP), for ``distributed.strategy="fsdp2"``.

A checkpoint folder of an FSDP2 run holds, beside the policy in its ecosystem's layout (written
by rank 0 from the gathered parameters, so that ``eval``, ``from_pretrained`` and the kit's
loaders read it as any other), ``sharded/``: every rank's shard of the master weights and of the
optimizer's moments, as DCP writes them (one ``__<rank>_0.distcp`` file per rank and a
``.metadata`` file). DCP re-shards on load, so a checkpoint written at world size W resumes at
any other world size, one process included (there the state is loaded into the plain module).
The step and the random state stay in ``trainer_state.json``; its ``optimizer`` entry names the
folder.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from . import distributed as dd

SHARDED = "sharded"


@contextmanager
def _quiet():
    """DCP warns that a process without a process group saves and loads alone: that is
    what a world of one means here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _state(trainer) -> dict:
    """The model's and the optimizer's state dicts, as DCP reads and writes them (DTensor
    shards under FSDP2, plain tensors otherwise)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optimizer = get_state_dict(trainer.model, trainer.optimizer)
    return {"model": model, "optimizer": optimizer}


def has_shards(folder: Path) -> bool:
    return (Path(folder) / SHARDED / ".metadata").is_file()


def save(trainer, folder: Path) -> None:
    """Every rank writes its shards into ``folder/sharded`` (collective)."""
    import torch.distributed.checkpoint as dcp

    with _quiet():
        dcp.save(_state(trainer), checkpoint_id=str(Path(folder) / SHARDED),
                 no_dist=dd.world_size() == 1)  # fmt: skip


def load(trainer, folder: Path, *, collective: bool) -> None:
    """Fill the model and the optimizer from ``folder/sharded``, re-sharding to this run's
    world size: ``collective`` (FSDP2: every rank reads its shards together) or alone (a
    replica reads the whole state)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _state(trainer)
    alone = not collective or dd.world_size() == 1
    with _quiet():
        dcp.load(state, checkpoint_id=str(Path(folder) / SHARDED), no_dist=alone)
    set_state_dict(
        trainer.model,
        trainer.optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )
