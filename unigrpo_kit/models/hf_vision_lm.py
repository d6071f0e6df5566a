"""A Hugging Face vision-language model as a reasoner that looks at images:
:class:`HFVisionLM`.

:class:`HFVisionLM` is :class:`~unigrpo_kit.models.hf_causal_lm.HFCausalLM` (prompts in the
model's chat format, KV-cache sampling with exact log-probs through
:class:`~unigrpo_kit.samplers.text.TextSampler`, LoRA, checkpoints by ``save_pretrained``) over
``AutoModelForImageTextToText`` (Qwen2-VL, Qwen2.5-VL, ...), with images in the text: an image
is fed through the model's own image processor (``AutoImageProcessor``: resizing, patching,
``pixel_values`` and ``image_grid_thw``) and vision tower, at the placeholder tokens of an
image block in the sequence (``<|vision_start|> <|image_pad|> x n <|vision_end|>``, n the
processor's merged patch count), the way the model's processor lays it out.

The context of a generation is a :class:`VisionContext`: the segments seen so far (text ids
with their masks, and images in [0, 1]). A generation after a context prefills all of it at
once (one pass with the images), then decodes with the KV cache. Positions are the model's own
multimodal rotary positions, computed over the visible columns by the model's ``get_rope_index``
(Qwen2-VL's M-RoPE: text tokens count 1 on each of the three axes, an image's tokens take its
grid coordinates); a decoded token continues at the row's largest position + 1, which is what
``get_rope_index`` gives the same token in one pass. The recomputation
(:meth:`HFVisionLM.forward_episode`) is one ``use_cache=False`` pass over the same segments with
the same positions, so the recorded and recomputed log-probs agree (the tests hold them to
1e-5).

The placeholder tokens of images and videos are never generated: their logits are set to
``BANNED_LOGIT`` in every forward pass (sampling and recomputation alike), so the policy is the
model's distribution renormalised over the other tokens (a generated placeholder would make the
model look for an image that is not there).

The vision tower and the multimodal projector are frozen unless ``train_vision=True`` (full
fine-tuning); under LoRA, target the language model's projections (a ``target_modules`` regex
such as ``.*language_model.*\\.(q_proj|v_proj)``) and the vision tower stays as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..registry import MODELS
from .hf_causal_lm import DecodeState, HFCausalLM, HFTextSession, _quiet_progress_bars
from .layout import TextSegment
from .protocol import EpisodeForward

# The logit of a token the reasoner never writes (exp underflows to 0; finite, unlike -inf).
BANNED_LOGIT = -1e9
# Qwen2-VL's image block (its chat template writes it for an image), "{image}" the placeholder
# the image processor's patch count expands.
QWEN_IMAGE_BLOCK = "<|vision_start|>{image}<|vision_end|>"


@dataclass(frozen=True, eq=False)
class PixelSegment:
    """Images of B rows in the context of a vision-language model: ``pixels`` [B, 3, H, W] in
    [0, 1] (float)."""

    pixels: Tensor

    kind = "pixels"

    def select(self, rows: Tensor) -> PixelSegment:
        return PixelSegment(self.pixels[rows.to(self.pixels.device)])

    def repeat_interleave(self, repeats: int) -> PixelSegment:
        return PixelSegment(self.pixels.repeat_interleave(repeats, 0))


def _select_text(segment: TextSegment, rows: Tensor) -> TextSegment:
    rows = rows.to(segment.ids.device)
    return TextSegment(segment.ids[rows], segment.mask[rows])


def _repeat_text(segment: TextSegment, repeats: int) -> TextSegment:
    return TextSegment(
        segment.ids.repeat_interleave(repeats, 0), segment.mask.repeat_interleave(repeats, 0)
    )


@dataclass(frozen=True, eq=False)
class VisionContext:
    """What B rows have seen: text segments (``TextSegment`` ids [B, n] and masks) and images
    (:class:`PixelSegment`), in order. Row operations act on every segment."""

    segments: tuple

    def select(self, rows: Tensor) -> VisionContext:
        return VisionContext(
            tuple(
                s.select(rows) if s.kind == "pixels" else _select_text(s, rows)
                for s in self.segments
            )
        )

    def repeat_interleave(self, repeats: int) -> VisionContext:
        return VisionContext(
            tuple(
                s.repeat_interleave(repeats) if s.kind == "pixels" else _repeat_text(s, repeats)
                for s in self.segments
            )
        )

    def prefix(self, num_segments: int) -> VisionContext:
        return VisionContext(self.segments[:num_segments])

    def then(self, *segments: Any) -> VisionContext:
        """The context with ``segments`` appended."""
        return VisionContext((*self.segments, *segments))


class VisionTextSession(HFTextSession):
    """A generation after a :class:`VisionContext`: ``prefill`` runs the context and the given
    ids in one pass (images through the vision tower) into a fresh KV cache; ``decode`` is
    :class:`~unigrpo_kit.models.hf_causal_lm.HFTextSession`'s, one visible token per live row at
    the row's next position; ``finish`` returns the context with the given ids and the
    generation appended."""

    def __init__(self, policy: HFVisionLM, context: VisionContext | None, stop_token_ids):
        super().__init__(policy, stop_token_ids)
        self.context = context if context is not None else VisionContext(())
        self.given: TextSegment | None = None

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, DecodeState]:
        self.given = TextSegment(input_ids, attention_mask.bool())
        segments = (*self.context.segments, self.given)
        if not any(s.kind == "pixels" for s in segments) and len(segments) == 1:
            return super().prefill(input_ids, attention_mask)  # text alone: shared prompts
        inputs = self.policy.model_inputs(segments)
        logits, cache = self.policy._forward(
            inputs.ids, inputs.mask, inputs.positions, use_cache=True, keep=1, **inputs.extra
        )
        positions = inputs.positions.amax(0) if inputs.positions.dim() == 3 else inputs.positions
        next_position = positions.masked_fill(~inputs.mask, -1).amax(1) + 1
        alive = torch.ones(inputs.ids.shape[0], dtype=torch.bool, device=inputs.ids.device)
        return logits[:, -1], DecodeState(cache, inputs.mask, next_position, alive)

    def finish(self, tokens: Tensor, mask: Tensor) -> VisionContext:
        if self.given is None:
            raise RuntimeError("finish() before prefill(): the session generated nothing")
        return self.context.then(self.given, TextSegment(tokens, mask.bool()))


@dataclass
class ModelInputs:
    """One call's inputs: ids [B, L], mask [B, L] bool, positions ([3, B, L] with images, else
    [B, L]) and the rest (``pixel_values``, ``image_grid_thw``), and each segment's width."""

    ids: Tensor
    mask: Tensor
    positions: Tensor
    extra: dict
    widths: list[int]


@MODELS.register_module()
class HFVisionLM(HFCausalLM):
    """A transformers image-text-to-text model (``AutoModelForImageTextToText``: Qwen2-VL,
    Qwen2.5-VL) as a reasoner that looks at images; see the module docstring.

    Args: :class:`~unigrpo_kit.models.hf_causal_lm.HFCausalLM`'s, and
        image_block: the text of an image in the sequence, ``{image}`` where the model's image
            token goes (repeated as many times as the image processor makes merged patches);
            default Qwen2-VL's ``<|vision_start|>{image}<|vision_end|>``.
        train_vision: full fine-tuning also trains the vision tower (default: frozen).
    """

    def __init__(
        self,
        path: str,
        *,
        image_block: str = QWEN_IMAGE_BLOCK,
        train_vision: bool = False,
        **kwargs: Any,
    ) -> None:
        if "{image}" not in image_block:
            raise ValueError(
                f"model.image_block={image_block!r} must hold {{image}}, where the image's "
                "tokens go"
            )
        super().__init__(path, **kwargs)
        self._kwargs.update(image_block=image_block, train_vision=train_vision)
        config = self._lm.config
        self.image_token_id = int(config.image_token_id)
        self.merge_size = int(config.vision_config.spatial_merge_size)
        before, after = image_block.split("{image}", 1)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self._image_block = (encode(before), encode(after))
        # the placeholders of images and videos are never written: the model reads an image
        # at each of them, so a generated one would not be text
        banned = [getattr(config, key, None) for key in ("image_token_id", "video_token_id")]
        self.banned_token_ids = torch.tensor(
            [int(i) for i in banned if i is not None], dtype=torch.long, device=self._device
        )
        if not self._peft and not train_vision:
            for name, parameter in self._lm.named_parameters():
                if _is_vision(name):
                    parameter.requires_grad_(False)

    def _load(self, path: str, attn_implementation: str, trust_remote_code: bool):
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        model = AutoModelForImageTextToText.from_pretrained(
            path,
            dtype=torch.float32,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self.image_processor = AutoImageProcessor.from_pretrained(
            path, trust_remote_code=trust_remote_code
        )
        return model, AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)

    def _forward(self, input_ids, mask, positions, *, cache=None, use_cache, keep, **inputs):
        """:meth:`HFCausalLM._forward`, the placeholder tokens of images and videos given
        logit ``BANNED_LOGIT`` (probability 0, finite: no NaN in an entropy or a KL)."""
        logits, cache = super()._forward(
            input_ids, mask, positions, cache=cache, use_cache=use_cache, keep=keep, **inputs
        )
        return logits.index_fill(-1, self.banned_token_ids, BANNED_LOGIT), cache

    @classmethod
    def dry_run_spec(cls, model_cfg: dict, task: Any, folder: Path) -> dict:
        """``--dry-run``: a tiny random Qwen2.5-VL (language model and vision tower from their
        config classes, a ChatML tokenizer with the vision tokens trained in memory, Qwen2-VL's
        image processor) saved into ``folder``, and ``model_cfg`` pointed at it."""
        from .tiny_random import save_tiny_vision_lm

        _quiet_progress_bars()
        save_tiny_vision_lm(Path(folder))
        return {**model_cfg, "path": str(folder), "adapter": None}

    # -- images in the sequence ----------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """:meth:`HFCausalLM.save`, and the image processor beside the tokenizer."""
        super().save(folder)
        self.image_processor.save_pretrained(Path(folder).expanduser().resolve())

    def pixel_inputs(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The image processor's ``pixel_values`` and ``image_grid_thw`` [B, 3] of ``images``
        [B, 3, H, W] in [0, 1]."""
        pictures = list(images.detach().float().clamp(0, 1).cpu())
        out = self.image_processor(images=pictures, do_rescale=False, return_tensors="pt")
        return out["pixel_values"].to(self._device), out["image_grid_thw"].to(self._device)

    def model_inputs(self, segments: Sequence[Any]) -> ModelInputs:
        """One call's inputs over ``segments`` (text ``TextSegment`` and :class:`PixelSegment`,
        B rows each), concatenated: each image as the image block with its tokens, visible; the
        multimodal positions of the visible columns (``get_rope_index``) when there are images,
        else ``cumsum(mask) - 1``."""
        ids, masks, widths, grids, pixels = [], [], [], [], []
        for segment in segments:
            if segment.kind == "pixels":
                values, grid = self.pixel_inputs(segment.pixels)
                block = self._block_ids(grid)
                ids.append(block)
                masks.append(torch.ones_like(block, dtype=torch.bool))
                pixels.append(values.view(grid.shape[0], -1, values.shape[-1]))
                grids.append(grid)
            else:
                ids.append(segment.ids.to(self._device))
                masks.append(segment.mask.to(self._device).bool())
            widths.append(ids[-1].shape[1])
        ids_all, mask = torch.cat(ids, 1), torch.cat(masks, 1)
        if not grids:
            positions = (mask.long().cumsum(1) - 1).clamp(min=0)
            return ModelInputs(ids_all, mask, positions, {}, widths)
        # row-major, as the placeholders appear in the flattened sequence
        grid = torch.stack(grids, 1).flatten(0, 1)
        values = torch.stack(pixels, 1).flatten(0, 2)
        token_types = (ids_all == self.image_token_id).int()
        positions, _ = self._lm.model.get_rope_index(
            ids_all, token_types, grid, attention_mask=mask.long()
        )
        extra = dict(pixel_values=values, image_grid_thw=grid)
        return ModelInputs(ids_all, mask, positions, extra, widths)

    def _block_ids(self, grid: Tensor) -> Tensor:
        """The ids [B, n] of an image block for images of grid ``grid`` [B, 3] (one size)."""
        counts = (grid.prod(-1) // self.merge_size**2).tolist()
        if len(set(counts)) != 1:
            raise ValueError(f"the images of one segment make different token counts {counts}")
        before, after = self._image_block
        row = [*before, *[self.image_token_id] * counts[0], *after]
        return torch.tensor(row, device=self._device).expand(grid.shape[0], -1)

    def see(self, context: VisionContext | None, images: Tensor) -> VisionContext:
        """The context with ``images`` [B, 3, H, W] in [0, 1] appended."""
        context = context if context is not None else VisionContext(())
        return context.then(PixelSegment(images.detach().float()))

    def encode_text(self, text: str, batch: int) -> tuple[Tensor, Tensor]:
        """Given text (no special-token handling: ChatML markers are written out) as ids
        [batch, n] and mask, the same on every row."""
        row = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor(row, dtype=torch.long, device=self._device).expand(batch, -1)
        return ids.clone(), torch.ones_like(ids, dtype=torch.bool)

    # -- generation and recomputation ----------------------------------------------------------

    def text_session(
        self, context: VisionContext | None, stop_token_ids: Sequence[int] | None = None
    ) -> VisionTextSession:
        """A generation after ``context`` (None: from the prompt alone) whose rows finish at
        ``stop_token_ids`` (default: ``stop_token_ids("reasoning")``)."""
        stops = self._stop_ids if stop_token_ids is None else tuple(stop_token_ids)
        return VisionTextSession(self, context, stops)

    def forward_episode(
        self, segments: Sequence[Any], context: VisionContext | None = None
    ) -> EpisodeForward:
        """One pass, with gradients where enabled, over ``context``'s segments and then
        ``segments`` (text and :class:`PixelSegment`). ``text_logits``: one per text segment of
        ``segments``, float32; the first segment's (given text) only its last column, [B, 1, V],
        every later text segment's full, [B, n_i, V]. ``context``: the
        :class:`VisionContext` of all of it."""
        before = tuple(context.segments) if context is not None else ()
        everything = (*before, *segments)
        if not any(s.kind == "text" for s in segments):
            raise ValueError("forward_episode needs at least one text segment")
        inputs = self.model_inputs(everything)
        start = sum(inputs.widths[: len(before)])
        first = start + inputs.widths[len(before)]
        keep = inputs.ids.shape[1] - first + 1
        logits, _ = self._forward(
            inputs.ids, inputs.mask, inputs.positions, use_cache=False, keep=keep, **inputs.extra
        )
        # columns from the first segment's last one: split by segment, keep the text ones
        widths = [1, *inputs.widths[len(before) + 1 :]]
        pieces = logits.split(widths, dim=1)
        text_logits = [
            piece for piece, s in zip(pieces, segments) if s.kind == "text"
        ]  # the first segment is text (a prompt) in every episode
        return EpisodeForward(text_logits, VisionContext(everything))


def _is_vision(name: str) -> bool:
    """Parameters of the vision tower and its projector (Qwen2-VL: ``visual.*``)."""
    parts = name.split(".")
    return "visual" in parts or "vision_tower" in parts or "multi_modal_projector" in parts
