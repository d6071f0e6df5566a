"""Checkpoint folders: TinyUnified's files, and loading any policy by its registry type.

A checkpoint is a folder with ``model.safetensors``, ``config.json`` and ``tokenizer.json``.
Named checkpoints shipped inside the package (``"tiny-base"``) live in
``unigrpo_kit/checkpoints/<name>/``. Writes are atomic: files go to a temporary sibling folder
that replaces the target only once complete, so an interrupted save never leaves a
half-written checkpoint behind.

A run's checkpoints also hold ``checksums.json`` (the sha256 and size of every other file,
written last, before the rename): :func:`verify_checkpoint` tells a missing, truncated or
altered file from an intact one, and :func:`load_policy` checks it wherever it is present
(folders without it, such as the shipped ``tiny-base`` or a Hugging Face folder, are not
checked). Nothing here unpickles anything that could run code: weights are safetensors, and
an old pickled state is read with ``torch.load(weights_only=True)`` (:func:`load_tensor_pickle`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
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
# Written last into a run's checkpoint folder: {"sha256": {relative path: {"sha256", "bytes"}}}.
CHECKSUMS_FILE = "checksums.json"
# Temporary siblings left by atomic writes (``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``).
LEFTOVER = re.compile(r"^\..+\.(tmp|old)-(\d+)$")
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


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, altered, or refused (a pickle that
    could run code). The message is one line naming the folder or file."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled file that ``torch.load(weights_only=True)`` refused: it could run code."""


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (subfolders too), sorted, ``checksums.json`` left out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() != CHECKSUMS_FILE
    )


def write_checksums(folder: Path) -> None:
    """Record the sha256 and size of every file of ``folder`` in its ``checksums.json``."""
    folder = Path(folder)
    record = {
        path.relative_to(folder).as_posix(): {
            "sha256": file_sha256(path),
            "bytes": path.stat().st_size,
        }
        for path in _files(folder)
    }
    (folder / CHECKSUMS_FILE).write_text(json.dumps({"sha256": record}, indent=1) + "\n")


def verify_checkpoint(folder: str | Path) -> None:
    """Raise :class:`CheckpointError` (one line naming the file) unless every file that
    ``folder/checksums.json`` records is there with its recorded size and sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} does not exist")
    sums = folder / CHECKSUMS_FILE
    try:
        record = json.loads(sums.read_text())["sha256"]
        items = [
            (name, int(entry["bytes"]), str(entry["sha256"])) for name, entry in record.items()
        ]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {folder} has no {CHECKSUMS_FILE}") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{sums} is damaged ({type(error).__name__}): cannot verify"
        ) from None
    for name, size, digest in items:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (recorded in {CHECKSUMS_FILE})")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(f"{path} is truncated or grown: {actual} bytes, {size} recorded")
        if file_sha256(path) != digest:
            raise CheckpointError(f"{path} was altered: its sha256 differs from {CHECKSUMS_FILE}")


def load_tensor_pickle(file: str | Path):
    """``torch.load(file, weights_only=True)`` onto the CPU: tensors and plain containers only.

    A pickle that needs anything else (a class, a function: code that would run on loading)
    is refused with :class:`UnsafeCheckpointError`, one line naming the file; it never runs."""
    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" (it asks for {found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"{file} was refused: it is a pickle that could run code when loaded{what}; only "
            "tensors and plain containers are read (weights_only=True)"
        ) from None


def _fsync_tree(folder: Path) -> None:
    """Make the bytes of every file under ``folder`` durable."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_dir(target: Path, write, *, checksums: bool = False) -> None:
    """Call ``write(tmp_dir)`` and move the finished folder onto ``target`` atomically.

    With ``checksums``, ``checksums.json`` is written last inside the temporary folder, before
    the rename. On any failure (an exception, a KeyboardInterrupt) before the rename the
    temporary folder is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write(tmp)
        if checksums:
            write_checksums(tmp)
        _fsync_tree(tmp)  # make the bytes durable before the rename makes them visible
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` entries that a killed
    write left in ``folder`` (those of another live process are kept); returns what went."""
    removed = []
    if not Path(folder).is_dir():
        return removed
    for path in sorted(Path(folder).iterdir()):
        match = LEFTOVER.match(path.name)
        if match is None or _alive_elsewhere(int(match.group(2))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive_elsewhere(pid: int) -> bool:
    """Whether ``pid`` is another process that is running (and so may still be writing)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True  # exists, but another user's
    return True


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
    ``device``) replace saved keyword arguments. A folder with ``checksums.json`` (a run's
    checkpoint) is verified first: a damaged one is a one-line :class:`CheckpointError`."""
    from ..registry import MODELS

    folder = checkpoint_folder(name_or_path)
    if (folder / CHECKSUMS_FILE).is_file():
        verify_checkpoint(folder)
    spec = policy_spec(folder)
    spec.update({k: v for k, v in overrides.items() if v is not None})
    return MODELS.build(spec)
