"""What the model rewards share: loading with one-line errors, devices, batching, images, and
the CLIP tower that CLIPScore, PickScore and Aesthetic read embeddings from.

Images reach every model the way a saved picture would: ``[N, 3, H, W]`` in [0, 1] quantised to
8 bits (``round(clamp(x, 0, 1) * 255)``) and handed to the model's own processor as PIL images,
which resizes, crops and normalises them exactly as it does for its model card's examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LAYOUT_HINT = (
    "use a folder with config.json, the weights and the processor (save_pretrained layout), "
    "or a hub id"
)


def one_line(error: BaseException) -> str:
    """The first line of an exception's message."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def quiet_transformers() -> None:
    """No transformers progress bars while weights load: the run has its own."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def check_batch_size(batch_size: Any, name: str) -> int:
    """``batch_size`` as a positive int, or a one-line ValueError naming ``reward.batch_size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{name} reward.batch_size={batch_size!r} must be a positive integer")
    return batch_size


def check_dtype(dtype: Any, name: str) -> torch.dtype:
    """The torch dtype that ``reward.dtype`` names (float32, bfloat16 or float16)."""
    if dtype not in DTYPES:
        raise ValueError(f"{name} reward.dtype={dtype!r} must be one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_reward_device(device: Any, name: str) -> torch.device:
    """``reward.device``: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``
    or ``"cuda:N"``; the kit's :func:`~unigrpo_kit.devices.resolve_device`, its one-line
    errors naming ``reward.device``."""
    from unigrpo_kit.devices import DEVICE_KEY, resolve_device

    try:
        return resolve_device(device)
    except ValueError as error:
        raise ValueError(f"{name} {one_line(error).replace(DEVICE_KEY, 'reward.device')}") from None


def local_or_hub(path: Any, key: str, name: str) -> str:
    """``path`` as a string for ``from_pretrained``: an existing folder made absolute, or else a
    hub id. A one-line ValueError naming ``key`` when it is empty or an existing file."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ValueError(
            f"{name} {key}={path!r} is empty; set it to a model folder or a hub id ({LAYOUT_HINT})"
        )
    local = Path(path).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if local.exists():
        raise ValueError(f"{name} {key}={str(path)!r} is a file, not a model folder; {LAYOUT_HINT}")
    return str(path)


def load_or_fail(
    load: Callable[[str], Any], path: str, key: str, name: str, what: str, hint: str = LAYOUT_HINT
) -> Any:
    """``load(path)``, with any failure (a missing folder, an unknown hub id, a folder of the
    wrong model) turned into one line naming ``key``."""
    try:
        return load(path)
    except Exception as error:  # OSError, ValueError, HFValidationError, KeyError...
        raise ValueError(
            f"{name} {key}={path!r} is not {what} transformers can load ({one_line(error)}); {hint}"
        ) from None


def pretrained(
    model_class: Any, path: str, dtype: torch.dtype, ignore_missing: tuple[str, ...] = ()
) -> Any:
    """``model_class.from_pretrained(path, dtype=dtype)`` that refuses weights that do not fit:
    transformers 5 loads a folder of another model (a BERT folder into ``CLIPModel``) with
    every weight missing and freshly random, and only logs a report; here any missing weight
    (but names starting with ``ignore_missing``) or size mismatch is an error, and the report is
    not printed. Use inside :func:`load_or_fail`."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = model_class.from_pretrained(path, dtype=dtype, output_loading_info=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(ignore_missing))
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise ValueError(
            f"its weights do not fit {type(model).__name__}: {len(missing)} missing "
            f"({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''}), "
            f"{len(mismatched)} of another shape"
        )
    return model


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``batch_size`` items."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def prompt_texts(prompts: Sequence[Any], name: str) -> list[str]:
    """The text of each prompt: a ``str`` itself, else its ``.text``."""
    texts = []
    for i, prompt in enumerate(prompts):
        text = prompt if isinstance(prompt, str) else getattr(prompt, "text", None)
        if not isinstance(text, str):
            raise ValueError(
                f"{name} needs prompts that are strings or have a .text; "
                f"prompt {i} is a {type(prompt).__name__}"
            )
        texts.append(text)
    return texts


def pil_images(images: torch.Tensor) -> list[Image.Image]:
    """``images`` [N, 3, H, W] in [0, 1] as N 8-bit RGB PIL images (``round(x * 255)``)."""
    # in place after the first product: round(clamp(x, 0, 1) * 255) with one temporary
    pixels = images.detach().float().mul(255).round_().clamp_(0, 255).to(torch.uint8)
    arrays = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [Image.fromarray(array) for array in arrays]


def pooled(output: Any) -> torch.Tensor:
    """The embedding that ``get_image_features`` / ``get_text_features`` return: a tensor in
    transformers 4.x, the ``pooler_output`` of a model output in 5.x."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def unique(texts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """(distinct texts in first-seen order, index [N] of each text among them): a GRPO batch
    repeats each prompt group-size times, and each distinct text is encoded once."""
    first: dict[str, int] = {}
    inverse = [first.setdefault(text, len(first)) for text in texts]
    return list(first), torch.tensor(inverse, dtype=torch.long)


class ClipTower:
    """A ``CLIPModel`` and its processor, loaded once, frozen, in eval mode on ``device``.

    ``image_embeddings`` / ``text_embeddings`` return L2-normalised float32 embeddings ``[N, D]``
    (D: the projection width), computed in batches under ``torch.no_grad()`` with
    ``CLIPModel.get_image_features`` / ``get_text_features`` on the processor's outputs (texts
    padded and truncated to the text tower's positions, 77 for OpenAI CLIP).
    """

    def __init__(
        self,
        path: Any,
        *,
        name: str,
        processor_path: Any = None,
        device: Any = "auto",
        dtype: str = "float32",
        key: str = "reward.path",
        offers_processor_path: bool = False,
    ) -> None:
        from transformers import AutoProcessor, CLIPModel

        quiet_transformers()
        self.device = resolve_reward_device(device, name)
        self.dtype = check_dtype(dtype, name)
        model_path = local_or_hub(path, key, name)
        processor_key = key if processor_path is None else "reward.processor_path"
        processor_path = model_path if processor_path is None else processor_path
        processor_path = local_or_hub(processor_path, processor_key, name)
        self.model = load_or_fail(
            lambda p: pretrained(CLIPModel, p, self.dtype),
            model_path,
            key,
            name,
            "a CLIP model (CLIPModel)",
        )
        hint = LAYOUT_HINT
        if processor_key == key and offers_processor_path:
            hint += "; or set reward.processor_path to a folder or hub id with the processor"
        self.processor = load_or_fail(
            AutoProcessor.from_pretrained,
            processor_path,
            processor_key,
            name,
            "a CLIP processor",
            hint,
        )
        self.model.to(self.device).eval().requires_grad_(False)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image], batch_size: int) -> torch.Tensor:
        """L2-normalised ``get_image_features`` of PIL ``images``: float32 [N, D] on the CPU."""
        out = []
        for part in chunks(len(images), batch_size):
            inputs = self.processor(images=images[part], return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.device, self.dtype)
            out.append(pooled(self.model.get_image_features(pixel_values=pixels)).float())
        return F.normalize(torch.cat(out), dim=-1).cpu()

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str], batch_size: int) -> torch.Tensor:
        """L2-normalised ``get_text_features`` of ``texts``: float32 [N, D] on the CPU."""
        out = []
        for part in chunks(len(texts), batch_size):
            inputs = self.processor(
                text=list(texts[part]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            features = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
            )
            out.append(pooled(features).float())
        return F.normalize(torch.cat(out), dim=-1).cpu()

    def cosines(self, texts: Sequence[str], images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """cos(E_img_i, E_txt_i) [N] float32 of each image ``[N, 3, H, W]`` and its text (each
        distinct text encoded once)."""
        distinct, inverse = unique(texts)
        image_embeds = self.image_embeddings(pil_images(images), batch_size)
        text_embeds = self.text_embeddings(distinct, batch_size)[inverse]
        return (image_embeds * text_embeds).sum(-1)
