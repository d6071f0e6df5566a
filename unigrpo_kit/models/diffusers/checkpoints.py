"""The folders a diffusers policy reads and writes: the pipeline folder of ``model.path``
(``model_index.json`` and its component configs), LoRAs in diffusers' format
(``pytorch_lora_weights.safetensors``) and ``save_pretrained`` transformer folders."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

PEFT_MISSING = 'model.lora needs peft: pip install -e ".[peft]"'
# diffusers' LoRA file (``LORA_WEIGHT_NAME_SAFE``) and the sub-folder of a fully trained transformer
LORA_FILE = "pytorch_lora_weights.safetensors"
TRANSFORMER_DIR = "transformer"


def _one_line(error: BaseException) -> str:
    """The first line of an exception's message, for errors that must stay on one line."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _import_peft():
    try:
        import peft
    except ImportError as error:
        raise ImportError(PEFT_MISSING) from error
    return peft


def _pipeline_class_name(path: str) -> str:
    """``_class_name`` of ``path``'s ``model_index.json``; a one-line ValueError naming
    ``model.path`` if it is not a diffusers pipeline folder."""
    folder = Path(path).expanduser()
    hint = (
        "point it at a diffusers pipeline folder (save_pretrained layout: model_index.json and "
        "one sub-folder per part)"
    )
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"model.path={path!r} is not a diffusers pipeline: no model_index.json; {hint}"
            )
        try:
            config = json.loads(index.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(
                f"model.path={path!r}: model_index.json is not JSON ({_one_line(error)}); {hint}"
            ) from None
    elif folder.is_absolute() or str(path).startswith(".") or str(path).count("/") != 1:
        raise ValueError(f"model.path={path!r} is not a folder; {hint}, or a hub id")
    else:  # a hub id: its model_index.json (the machine must reach the hub)
        from diffusers import DiffusionPipeline

        try:
            config = DiffusionPipeline.load_config(str(path))
        except Exception as error:  # OSError, EnvironmentError, HTTP errors
            raise ValueError(
                f"model.path={path!r} is not a diffusers pipeline ({_one_line(error)}); {hint}"
            ) from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if not isinstance(name, str):
        raise ValueError(f"model.path={path!r}: model_index.json names no _class_name; {hint}")
    return name


def _jsonable(value: Any) -> Any:
    """JSON for what a LoraConfig holds besides plain values (sets, enums)."""
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    return str(value)


def _saved_lora_config(peft, file: Path):
    """The ``LoraConfig`` of a LoRA saved in diffusers' format: from the file's metadata
    (``save_lora_weights(..., transformer_lora_adapter_metadata=...)``), else inferred from its
    weights (rank from the shapes, alpha = rank, the targeted module names)."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata() or {}
        keys = list(handle.keys())
        shapes = {key: handle.get_slice(key).get_shape() for key in keys if "lora_A" in key}
    packed = metadata.get("lora_adapter_metadata")
    if packed:
        prefix = "transformer."
        entries = {
            key[len(prefix) :]: value
            for key, value in json.loads(packed).items()
            if key.startswith(prefix)
        }
        known = set(inspect.signature(peft.LoraConfig).parameters)
        settings = {key: value for key, value in entries.items() if key in known}
        settings.pop("task_type", None)
        settings.pop("peft_type", None)
        if settings:
            return peft.LoraConfig(**settings)
    if not shapes:
        raise ValueError(f"{file} holds no LoRA weights (no lora_A tensors)")
    rank = int(next(iter(shapes.values()))[0])
    targets = sorted({key.split(".lora_A")[0].removeprefix("transformer.") for key in shapes})
    return peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)


def _local_config(folder: Path) -> dict | None:
    """A local component folder's config.json, or None (a hub id, no such file)."""
    file = Path(folder).expanduser() / "config.json"
    try:
        return json.loads(file.read_text()) if file.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _transformer_folder(value: str) -> Path:
    """The transformer folder that ``model.transformer`` names (itself, or its
    ``transformer/``); a one-line error if neither holds a config.json."""
    folder = Path(value).expanduser()
    for candidate in (folder / TRANSFORMER_DIR, folder):
        if (candidate / "config.json").is_file():
            return candidate
    raise ValueError(
        f"model.transformer={value!r} holds no transformer (config.json and safetensors, in it "
        f"or in its {TRANSFORMER_DIR}/); point it at a folder written by a full fine-tuning "
        "policy's save()"
    )


def _transformer_files(folder: Path) -> list[Path]:
    """The safetensors of a ``save_pretrained`` transformer folder (one file or sharded)."""
    single = folder / "diffusion_pytorch_model.safetensors"
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / shard for shard in shards]
        absent = [file.name for file in files if not file.is_file()]
        if absent:
            raise FileNotFoundError(f"{folder} lacks the shards {absent[:3]} that its index names")
        return files
    raise FileNotFoundError(
        f"{folder} holds neither diffusion_pytorch_model.safetensors nor its sharded index: "
        "not a full fine-tuning policy's checkpoint"
    )


def _component_class(path: str, name: str):
    """The class that ``path``'s ``model_index.json`` names for component ``name``."""
    import importlib

    folder = Path(path).expanduser()
    if folder.is_dir():
        config = json.loads((folder / "model_index.json").read_text())
    else:
        from diffusers import DiffusionPipeline

        config = DiffusionPipeline.load_config(path)
    library, class_name = config[name]
    return getattr(importlib.import_module(library), class_name)


def _load_pipeline(pipeline_class, path: str, transformer_dir: Path | None, transformer: Any):
    """``pipeline_class.from_pretrained(path)`` in float32, with the transformer of
    ``transformer_dir`` (``model.transformer``, the value ``transformer``) in place of
    ``path``'s when given; a one-line error naming the key if diffusers cannot load them."""
    extra: dict[str, Any] = {}
    # newer diffusers call torch_dtype dtype (with a FutureWarning); older know no other
    if transformer_dir is not None:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", ".*torch_dtype.*", FutureWarning)
                extra["transformer"] = _component_class(path, "transformer").from_pretrained(
                    transformer_dir, torch_dtype=torch.float32
                )
        except Exception as error:  # OSError, ValueError from diffusers
            raise ValueError(
                f"model.transformer={transformer!r} is not a transformer "
                f"the pipeline at model.path can take ({_one_line(error)})"
            ) from None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*torch_dtype.*", FutureWarning)
            return pipeline_class.from_pretrained(path, torch_dtype=torch.float32, **extra)
    except Exception as error:  # OSError, ValueError, EnvironmentError from diffusers
        raise ValueError(
            f"model.path={path!r} is not a {pipeline_class.__name__} diffusers can load "
            f"({_one_line(error)})"
        ) from None


def _save_lora(pipeline_class, module, folder: Path) -> None:
    """Write ``module``'s LoRA into ``folder`` in diffusers' format, through
    ``pipeline_class.save_lora_weights`` (keys ``transformer.*``, the LoraConfig in the file's
    metadata)."""
    peft = _import_peft()
    state = peft.get_peft_model_state_dict(module)
    metadata = module.peft_config["default"].to_dict()
    metadata = json.loads(json.dumps(metadata, default=_jsonable))
    pipeline_class.save_lora_weights(
        folder,
        transformer_lora_layers=state,
        transformer_lora_adapter_metadata=metadata,
        weight_name=LORA_FILE,
    )


def _load_lora(module, file: Path) -> None:
    """Copy the LoRA in ``file`` (diffusers' format: ``transformer.``-prefixed keys, stripped)
    into ``module``'s adapter, in place, and make the adapter trainable."""
    from safetensors.torch import load_file

    peft = _import_peft()
    prefix = "transformer."
    state = {
        key[len(prefix) :]: value
        for key, value in load_file(str(file)).items()
        if key.startswith(prefix)
    }
    if not state:
        raise ValueError(f"{file} holds no transformer.* LoRA weights")
    result = peft.set_peft_model_state_dict(module, state, adapter_name="default")
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if unexpected or missing:
        raise ValueError(
            f"the LoRA in {file.parent} does not fit this transformer "
            f"(unexpected {unexpected[:3]}, missing {missing[:3]})"
        )
    for name, parameter in module.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(True)


def _load_transformer(module, folder: Path) -> None:
    """Copy the safetensors of the ``save_pretrained`` transformer ``folder`` (one file or
    sharded) into ``module``, in place; a one-line error if they do not fit."""
    from safetensors.torch import load_file

    state: dict[str, Tensor] = {}
    for file in _transformer_files(folder):
        state.update(load_file(str(file)))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"the transformer in {folder} does not fit this model: {_one_line(error)}"
        ) from None
