"""The remote reward protocol's encoding, shared by :mod:`.remote` (client) and :mod:`.server`.

One request scores N episodes, ``POST /score`` with the JSON body::

    {"prompts": [{"text": "...", ...metadata}, ...N],
     "images": ["<base64 PNG>", ...N] | null,
     "texts": ["...", ...N] | null}

and the answer is ``{"scores": [float | null, ...N], "metrics": {name: [float | null, ...N]}}``,
where ``null`` marks a sample the reward could not score (NaN or infinite on the wire's other
side). ``GET /health`` answers ``{"reward": "<type>", "needs": ["images", ...]}``.

**Images** travel as 8-bit RGB PNG: ``round(clamp(x, 0, 1) * 255)``, decoded as ``byte / 255``
in float32. The remote reward therefore sees images quantised to steps of 1/255;
:func:`quantize` applies the same round trip in memory, so an in-process reward given
``quantize(images)`` sees exactly the tensor the server decodes.

**Prompts** travel as JSON objects with a ``"text"`` and their metadata. A prompt whose class
has a registered codec (:func:`register_prompt_codec`) carries ``"_codec": "<name>"`` and is
rebuilt as that class on the server: ShapeWorld ``Prompt`` (spec and scene included),
``ArithmeticPrompt`` and ``FilePrompt`` are built in, and a plain ``str`` comes back a ``str``.
Any other prompt is sent generically (a dataclass via ``dataclasses.asdict``, an object with a
``__dict__`` such as a ``SimpleNamespace`` via ``vars``, else just its ``.text``) and is rebuilt
as a ``SimpleNamespace`` of its top-level fields (tuples arrive as lists, nested objects as
dicts).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

CODEC_KEY = "_codec"
# PNG's fastest zlib level: 512x512 RGB in ~10 ms, the size barely larger than at level 6.
PNG_COMPRESS_LEVEL = 1


class WireError(ValueError):
    """A request or answer that does not follow the protocol; ``str()`` is one line."""


# --------------------------------------------------------------------------- numbers
def to_json_floats(values: torch.Tensor) -> list[float | None]:
    """A ``[N]`` tensor as JSON numbers, NaN and infinities as ``None`` (JSON ``null``)."""
    return [v if math.isfinite(v) else None for v in values.detach().double().cpu().tolist()]


def from_json_floats(values: Any, n: int, what: str) -> torch.Tensor:
    """``[N]`` float32 from a JSON list of numbers or nulls (null -> NaN); a WireError if it is
    not a list of ``n`` of them."""
    if not isinstance(values, list) or len(values) != n:
        got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
        raise WireError(f"{what} must be a list of {n} numbers or nulls; got {got}")
    out = []
    for value in values:
        if value is None:
            out.append(math.nan)
        elif isinstance(value, (int, float)):  # bool is an int: true/false read as 1/0
            out.append(float(value))
        else:
            raise WireError(f"{what} holds a {type(value).__name__}; numbers or nulls only")
    return torch.tensor(out, dtype=torch.float32)


# --------------------------------------------------------------------------- images
def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` in [0, 1] as uint8 bytes ``round(clamp(x, 0, 1) * 255)``."""
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 bytes as float32 in [0, 1]: ``byte / 255``."""
    return pixels.float() / 255


def quantize(images: torch.Tensor) -> torch.Tensor:
    """The images exactly as the server decodes them: 8-bit, i.e. steps of 1/255, float32."""
    return from_uint8(to_uint8(images))


def encode_image(image: torch.Tensor) -> str:
    """One image ``[3, H, W]`` in [0, 1] as a base64 8-bit RGB PNG."""
    pixels = to_uint8(image).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(data: Any, index: int) -> torch.Tensor:
    """A base64 PNG as ``[3, H, W]`` float32 in [0, 1] (grey and RGBA converted to RGB)."""
    if not isinstance(data, str):
        raise WireError(f"images[{index}] must be a base64 PNG string; got {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as error:
        raise WireError(f"images[{index}] is not a base64 PNG ({error})") from None
    return from_uint8(torch.from_numpy(pixels.copy()).permute(2, 0, 1))


def encode_images(images: torch.Tensor) -> list[str]:
    """``[N, 3, H, W]`` in [0, 1] as N base64 PNGs."""
    return [encode_image(image) for image in images]


def decode_images(data: Any, n: int) -> torch.Tensor:
    """N base64 PNGs of one size as ``[N, 3, H, W]`` float32; a WireError otherwise."""
    if not isinstance(data, list) or len(data) != n:
        got = f"{len(data)} images" if isinstance(data, list) else type(data).__name__
        raise WireError(f"images must be a list of {n} base64 PNGs (one per prompt); got {got}")
    images = [decode_image(item, i) for i, item in enumerate(data)]
    sizes = sorted({tuple(image.shape) for image in images})
    if len(sizes) > 1:
        raise WireError(f"images must all have one size; got {sizes[0]} and {sizes[1]}")
    return torch.stack(images) if images else torch.zeros(0, 3, 1, 1)


# --------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class PromptCodec:
    """How one prompt class travels: ``encode`` to a JSON-able dict, ``decode`` it back."""

    name: str
    cls: type
    encode: Callable[[Any], dict]
    decode: Callable[[dict], Any]


PROMPT_CODECS: dict[str, PromptCodec] = {}
_BUILTINS_REGISTERED = False


def register_prompt_codec(
    name: str,
    cls: type,
    decode: Callable[[dict], Any],
    encode: Callable[[Any], dict] | None = None,
) -> None:
    """Register how prompts of ``cls`` (exactly that class) travel under ``name``.

    ``encode`` defaults to ``dataclasses.asdict`` (or ``vars``) of the prompt; ``decode`` gets
    that dict, without the ``_codec`` key, and returns the prompt. Client and server must both
    register the codec (import the module that does it on both sides).
    """
    PROMPT_CODECS[name] = PromptCodec(name, cls, encode or _fields, decode)


def _fields(prompt: Any) -> dict:
    """A prompt's fields: ``asdict`` of a dataclass, ``vars`` of an object, else its text."""
    if dataclasses.is_dataclass(prompt) and not isinstance(prompt, type):
        return dataclasses.asdict(prompt)
    if hasattr(prompt, "__dict__"):
        return dict(vars(prompt))
    return {"text": getattr(prompt, "text", str(prompt))}


def _codec_of(prompt: Any) -> PromptCodec | None:
    _builtin_codecs()
    return next((c for c in PROMPT_CODECS.values() if type(prompt) is c.cls), None)


def encode_prompt(prompt: Any) -> dict:
    """One prompt as a JSON-able dict with a ``"text"``; ``"_codec"`` names its codec, if any."""
    codec = _codec_of(prompt)
    fields = codec.encode(prompt) if codec is not None else _fields(prompt)
    fields = {CODEC_KEY: codec.name, **fields} if codec is not None else dict(fields)
    fields.setdefault("text", str(getattr(prompt, "text", "")))
    return fields


def decode_prompt(data: Any, index: int) -> Any:
    """A prompt rebuilt from its JSON object: by its codec, else as a ``SimpleNamespace``."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise WireError(f'prompts[{index}] must be an object with a string "text"')
    fields = dict(data)
    name = fields.pop(CODEC_KEY, None)
    if name is None:
        return SimpleNamespace(**fields)
    _builtin_codecs()
    if name not in PROMPT_CODECS:
        known = ", ".join(sorted(PROMPT_CODECS))
        raise WireError(f"prompts[{index}] has unknown _codec {name!r}; this server knows {known}")
    try:
        return PROMPT_CODECS[name].decode(fields)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise WireError(f"prompts[{index}] is not a valid {name} prompt ({first})") from None


def encode_prompts(prompts: Sequence[Any]) -> list[dict]:
    """Every prompt as :func:`encode_prompt` does."""
    return [encode_prompt(prompt) for prompt in prompts]


def decode_prompts(data: Any) -> list[Any]:
    """The request's prompts, rebuilt; a WireError if ``prompts`` is not a list of objects."""
    if not isinstance(data, list):
        raise WireError(f"prompts must be a list of objects; got {type(data).__name__}")
    return [decode_prompt(item, i) for i, item in enumerate(data)]


def _decode_shapeworld(fields: dict) -> Any:
    from unigrpo_kit.tasks.shapeworld.prompts import Prompt
    from unigrpo_kit.tasks.shapeworld.scene import Obj, Scene
    from unigrpo_kit.tasks.shapeworld.spec import Rel, Req, Spec

    spec = fields["spec"]
    return Prompt(
        text=fields["text"],
        category=fields["category"],
        spec=Spec(
            tuple(Req(**req) for req in spec["reqs"]),
            tuple(Rel(**rel) for rel in spec.get("rels", ())),
        ),
        reasoning=fields["reasoning"],
        scene=Scene(tuple(Obj(**obj) for obj in fields["scene"]["objects"])),
        split=fields["split"],
    )


def _decode_arithmetic(fields: dict) -> Any:
    from unigrpo_kit.tasks.arithmetic import ArithmeticPrompt

    return ArithmeticPrompt(**{**fields, "numbers": tuple(fields.get("numbers", ()))})


def _decode_file_prompt(fields: dict) -> Any:
    from unigrpo_kit.tasks.prompt_file import FilePrompt

    return FilePrompt(**fields)


def _builtin_codecs() -> None:
    """Register the kit's own prompt classes once, lazily (the tasks import much); a codec
    registered earlier under the same name is kept."""
    global _BUILTINS_REGISTERED
    if _BUILTINS_REGISTERED:
        return
    from unigrpo_kit.tasks.arithmetic import ArithmeticPrompt
    from unigrpo_kit.tasks.prompt_file import FilePrompt
    from unigrpo_kit.tasks.shapeworld.prompts import Prompt

    builtins = (
        PromptCodec("str", str, lambda prompt: {"text": prompt}, lambda fields: fields["text"]),
        PromptCodec("arithmetic", ArithmeticPrompt, _fields, _decode_arithmetic),
        PromptCodec("file", FilePrompt, _fields, _decode_file_prompt),
        PromptCodec("shapeworld", Prompt, _fields, _decode_shapeworld),
    )
    for codec in builtins:
        PROMPT_CODECS.setdefault(codec.name, codec)
    _BUILTINS_REGISTERED = True


# --------------------------------------------------------------------------- bodies
def encode_request(
    prompts: Sequence[Any], images: torch.Tensor | None, texts: Sequence[str] | None
) -> dict:
    """The JSON body of ``POST /score``."""
    return {
        "prompts": encode_prompts(prompts),
        "images": None if images is None else encode_images(images),
        "texts": None if texts is None else [str(text) for text in texts],
    }


def decode_request(body: Any) -> tuple[list[Any], torch.Tensor | None, list[str] | None]:
    """``(prompts, images, texts)`` of a ``POST /score`` body; a WireError when malformed."""
    if not isinstance(body, dict):
        raise WireError(f"the body must be a JSON object; got {type(body).__name__}")
    unknown = sorted(set(body) - {"prompts", "images", "texts"})
    if unknown:
        raise WireError(f"unknown keys {unknown}; a request has prompts, images, texts")
    prompts = decode_prompts(body.get("prompts"))
    n = len(prompts)
    images = body.get("images")
    images = None if images is None else decode_images(images, n)
    texts = body.get("texts")
    if texts is not None and (
        not isinstance(texts, list) or len(texts) != n or not all(isinstance(t, str) for t in texts)
    ):
        raise WireError(f"texts must be null or a list of {n} strings (one per prompt)")
    return prompts, images, texts


def encode_response(scores: torch.Tensor, metrics: dict[str, torch.Tensor]) -> dict:
    """The JSON answer of ``POST /score``: NaN and infinities become ``null``."""
    return {
        "scores": to_json_floats(scores.reshape(-1)),
        "metrics": {str(k): to_json_floats(v.reshape(-1)) for k, v in metrics.items()},
    }


def decode_response(body: Any, n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(scores [N], metrics {name: [N]})`` of an answer; a WireError when it is malformed or
    its lengths are not N."""
    if not isinstance(body, dict):
        raise WireError(f"the answer must be a JSON object; got {type(body).__name__}")
    scores = from_json_floats(body.get("scores"), n, "scores")
    metrics = body.get("metrics", {})
    if not isinstance(metrics, dict):
        raise WireError(f"metrics must be an object; got {type(metrics).__name__}")
    return scores, {str(k): from_json_floats(v, n, f"metrics[{k!r}]") for k, v in metrics.items()}
