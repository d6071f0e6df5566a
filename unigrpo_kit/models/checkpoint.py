"""Checkpoint folders: TinyUnified's files, and loading any policy by its registry type.

A checkpoint is a folder with ``model.safetensors``, ``config.json`` and ``tokenizer.json``.
Named checkpoints shipped inside the package (``"tiny-base"``) live in
``unigrpo_kit/checkpoints/<name>/``. Writes are atomic: files go to a temporary sibling folder
that replaces the target only once complete, so an interrupted save never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .tiny_unified import TinyUnified, TinyUnifiedConfig
from .tokenizer import WordTokenizer

CHECKPOINT_FILES = ("model.safetensors", "config.json", "tokenizer.json")
# Written by every policy's ``save``: the registry type and keyword arguments that rebuild it
# through ``MODELS.build``; a path value "." stands for the folder the file is in.
POLICY_FILE = "unigrpo_policy.json"
PACKAGE_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The folder of a named shipped checkpoint or of a path; a clear error if neither exists."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = PACKAGE_CHECKPOINTS / str(name_or_path)
    if shipped.is_dir():
        return shipped
    names = sorted(p.name for p in PACKAGE_CHECKPOINTS.glob("*") if p.is_dir())
    raise FileNotFoundError(
        f"checkpoint {str(name_or_path)!r} is neither a folder nor a shipped name "
        f"(shipped: {', '.join(names) or 'none'})"
    )


def atomic_write_dir(target: Path, write) -> None:
    """Call ``write(tmp_dir)`` and move the finished folder onto ``target`` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for f in tmp.iterdir():  # make the bytes durable before the rename makes them visible
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def write_model_files(
    model: TinyUnified, tokenizer: WordTokenizer, folder: Path, extra: dict | None = None
) -> None:
    """Write weights, config and tokenizer into an existing ``folder`` (not atomic by itself)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    meta = {"type": type(model).__name__, "config": model.config_dict(), **(extra or {})}
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    tokenizer.save(folder / "tokenizer.json")


def save_model(
    model: TinyUnified, tokenizer: WordTokenizer, folder: str | Path, extra: dict | None = None
) -> None:
    """Write weights, config and tokenizer to ``folder`` atomically."""
    atomic_write_dir(Path(folder), lambda tmp: write_model_files(model, tokenizer, tmp, extra))


def load_model(
    name_or_path: str | Path, device: str | torch.device = "cpu", attention_backend: str = "auto"
) -> tuple[TinyUnified, WordTokenizer]:
    """Load a checkpoint folder or shipped name; a one-line error if it does not fit the model."""
    folder = resolve_checkpoint(name_or_path)
    missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a checkpoint folder: it lacks {', '.join(missing)}"
        )
    meta = json.loads((folder / "config.json").read_text())
    tokenizer = WordTokenizer.load(folder / "tokenizer.json")
    config = dict(meta["config"])
    config["banned_token_ids"] = tuple(config.get("banned_token_ids", ()))
    known = set(TinyUnifiedConfig.__dataclass_fields__)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"checkpoint {folder} does not match the model: unknown config field {unknown[0]!r}"
        )
    model = TinyUnified(TinyUnifiedConfig(**config), attention_backend=attention_backend)
    load_weights(model, folder / "model.safetensors")
    return model.to(device), tokenizer


def load_weights(model: torch.nn.Module, file: str | Path) -> None:
    """Load a safetensors state dict strictly, with a one-line error on any mismatch."""
    state = load_file(str(file))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, model wants "
            f"{tuple(own[wrong[0]].shape)}"
        )
        raise ValueError(f"checkpoint {file} does not match the model: {detail}")
    model.load_state_dict(state)


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint that a run's ``checkpoints/latest`` names, or None."""
    pointer = Path(work_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    folder = Path(work_dir) / "checkpoints" / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def checkpoint_folder(name_or_path: str | Path) -> Path:
    """A checkpoint folder from a shipped name, a checkpoint folder or a run's work dir."""
    path = Path(name_or_path)
    if path.is_dir() and (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"work dir {path} has no checkpoint yet")
        return found
    return resolve_checkpoint(name_or_path)


def policy_spec(folder: str | Path) -> dict:
    """The ``MODELS.build`` config of the policy saved in ``folder`` (its ``unigrpo_policy.json``,
    or a TinyUnified checkpoint's ``config.json``), with "." resolved to the folder."""
    folder = Path(folder)
    meta_file = folder / POLICY_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        kwargs = {k: str(folder) if v == "." else v for k, v in meta.get("kwargs", {}).items()}
        return {"type": meta["type"], **kwargs}
    if (folder / "config.json").is_file():
        kind = json.loads((folder / "config.json").read_text()).get("type")
        if kind == "TinyUnified":
            return {"type": "TinyUnified", "checkpoint": str(folder)}
    raise FileNotFoundError(
        f"{folder} is not a policy checkpoint: it has no {POLICY_FILE} (written by a kit run) "
        "and no TinyUnified config.json"
    )


def load_policy(name_or_path: str | Path, **overrides):
    """The policy saved in a checkpoint folder, a run's work dir (its latest checkpoint) or a
    shipped name, built by registry type through ``MODELS.build``; ``overrides`` (e.g.
    ``device``) replace saved keyword arguments."""
    from ..registry import MODELS

    spec = policy_spec(checkpoint_folder(name_or_path))
    spec.update({k: v for k, v in overrides.items() if v is not None})
    return MODELS.build(spec)
