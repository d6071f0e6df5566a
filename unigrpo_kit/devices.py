"""Where the model runs (the recipe key ``model.device``) and where random numbers are drawn.

``model.device`` is ``"auto"`` (CUDA when ``torch.cuda.is_available()``, else the CPU),
``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Whatever the device, every random draw of training,
evaluation and sampling is made by a CPU ``torch.Generator`` (the trainer's, eval's) and the
drawn tensor is then moved to the model's device: a run on CPU draws exactly what it drew
before the kit knew about devices, and a run on CUDA consumes the same random stream.
"""

from __future__ import annotations

import re

import torch

DEVICE_KEY = "model.device"
CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(value: str | torch.device | None = "auto") -> torch.device:
    """The device that ``model.device = value`` names; a :class:`RecipeError` if it is not one
    this machine has."""
    from .recipe import RecipeError  # mmengine's config: only where a recipe is read

    if isinstance(value, torch.device):
        value = str(value)
    text = "auto" if value is None else value
    if not isinstance(text, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text.strip()):
        raise RecipeError(f"{DEVICE_KEY}={value!r} is not a device; use {CHOICES}")
    text = text.strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RecipeError(
            f"{DEVICE_KEY}={text!r} needs CUDA, which this machine's torch does not see "
            f"(torch.cuda.is_available() is False); use {DEVICE_KEY}=auto or cpu"
        )
    device = torch.device(text)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise RecipeError(
            f"{DEVICE_KEY}={text!r} names a GPU this machine lacks (it has {count}: "
            f"cuda:0 to cuda:{count - 1}); use {DEVICE_KEY}=cuda or auto"
        )
    return device


def recipe_device(cfg) -> torch.device:
    """The device of a recipe's ``model.device`` (``auto`` where the recipe has no such key)."""
    return resolve_device(cfg.model.get("device", "auto"))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device that holds the model's parameters."""
    return next(model.parameters()).device


def randn(
    shape,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn on the generator's own device.

    With a CPU generator the noise is drawn on the CPU and copied to ``device``, so that it is
    the same on every device; with none it is drawn on ``device`` by torch's global generator
    there, as ``torch.randn(shape, device=device)`` does.
    """
    if hasattr(generator, "randn"):  # RowStreams: each row from its own stream
        noise = generator.randn(tuple(shape), dtype=dtype)
        return noise if device is None else noise.to(device)
    where = generator.device if generator is not None else device
    noise = torch.randn(shape, generator=generator, device=where, dtype=dtype)
    return noise if device is None else noise.to(device)


def multinomial(
    probs: torch.Tensor, num_samples: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``torch.multinomial`` drawn on the generator's device, returned on ``probs``' device."""
    if hasattr(generator, "multinomial"):  # RowStreams: each row from its own stream
        return generator.multinomial(probs.cpu(), num_samples).to(probs.device)
    where = generator.device if generator is not None else probs.device
    drawn = torch.multinomial(probs.to(where), num_samples, generator=generator)
    return drawn.to(probs.device)
