"""A vision-language reasoner and an image editor as one multi-round unified policy:
reason, paint, look, reflect, edit.

:class:`ComposedMultiRound` is :class:`~unigrpo_kit.models.composed.ComposedUnified` (one
policy over two parts, per-part parameter groups, LoRA and checkpoints) whose reasoner looks at
the painted images (:class:`~unigrpo_kit.models.hf_vision_lm.HFVisionLM`, a Qwen2-VL /
Qwen2.5-VL) and whose painter edits them (:class:`~unigrpo_kit.models.diffusers.kontext.
FluxKontextPolicy`, FLUX.1 Kontext). It answers the protocol's
:class:`~unigrpo_kit.models.protocol.UnifiedPolicy` (``look``, ``reflection_prompt``), so the
kit's rollout engine runs the episode with ``rollout.max_rounds`` > 1, unchanged::

    c -> y ~ pi_text(. | c)                       reasoning
      -> x^1 ~ pi_img(. | T(c, y))                image 1 (from text)
      -> r^1 ~ pi_text(. | c, y, x^1, q)          look at x^1, reflect: "done" or an edit
      -> x^2 ~ pi_img(. | E(c, r^1), x^1)         image 2: x^1 edited by r^1
      -> ... up to max_rounds images; a row that said "done" stops painting.

``T`` is ``template`` (the first image's prompt, as in the single-round policy), ``q`` the
reflection question (``reflection_prompt``), ``E`` ``edit_template`` (the editor's instruction,
default the reflection itself). The reasoner reads every image it looks at through its own
image processor and vision tower, decoded by the painter's VAE (``decode_images``: the image
the reward sees); the editor reads the previous image as its reference through the pipeline's
``prepare_latents`` (the painter's own latents, or the decoded image, ``model.painter.reference``).

Its log-probability is the sum over every generated token of every text segment and every
trained (SDE-window) denoising step of every image, and the episode's one advantage weighs all
of them: GRPO on the reasoner's tokens (reasoning and reflections) plus lambda Flow-GRPO on the
editor's steps (UniGRPO's Eq. 7 over the whole interleaved episode). The reward scores the last
image each row painted.

The context (:class:`EpisodeContext`) is the episode so far: the reasoner's segments (text ids,
and each image as its latents and decoded pixels) and the painter's conditioning of each image,
by the segment index the image is painted at (what the recomputation's ``Context.prefix``
reads). A reflection is generated after the whole history, prefilled at once; the
recomputation (:meth:`ComposedMultiRound.forward_episode`) runs the reasoner once over the
whole episode and rebuilds each image's conditioning from the recorded text and latents through
the same frozen encoders, so the rollout's log-probs come back (the self-check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..registry import MODELS
from .composed import ComposedUnified, PainterContext, _row_keys, _template_fields
from .hf_vision_lm import PixelSegment, VisionContext
from .layout import TextSegment
from .protocol import EpisodeForward

EDIT_FIELDS = ("prompt", "reflection")
# The question after an image (ChatML: the user's turn ends, the assistant's reply follows).
REFLECTION_PROMPT = (
    "Does the image show the request? Answer done, or write one instruction that edits it."
    "<|im_end|>\n<|im_start|>assistant\n"
)


@dataclass(frozen=True, eq=False)
class ImageEntry(PixelSegment):
    """An image of the episode: ``pixels`` [B, 3, H, W] in [0, 1] (what the reasoner sees) and
    ``latents`` [B, *latent_shape] (the painter's, the editor's reference)."""

    latents: Tensor | None = None

    def select(self, rows: Tensor) -> ImageEntry:
        rows = rows.to(self.pixels.device)
        return ImageEntry(self.pixels[rows], self.latents[rows.to(self.latents.device)])

    def repeat_interleave(self, repeats: int) -> ImageEntry:
        return ImageEntry(
            self.pixels.repeat_interleave(repeats, 0), self.latents.repeat_interleave(repeats, 0)
        )


@dataclass(frozen=True, eq=False)
class EpisodeContext:
    """B rows' episode so far.

    history: the reasoner's :class:`~unigrpo_kit.models.hf_vision_lm.VisionContext` (text
        segments and :class:`ImageEntry` images), in the episode's segment order.
    conditions: ``(segment index, PainterContext)`` of each image painted or to be painted; the
        last one is the conditioning of the next image.
    """

    history: VisionContext
    conditions: tuple[tuple[int, PainterContext], ...] = ()

    @property
    def current(self) -> PainterContext:
        if not self.conditions:
            raise ValueError("the episode has no painter conditioning yet (no reasoning)")
        return self.conditions[-1][1]

    def select(self, rows: Tensor) -> EpisodeContext:
        return EpisodeContext(
            self.history.select(rows), tuple((i, c.select(rows)) for i, c in self.conditions)
        )

    def repeat_interleave(self, repeats: int) -> EpisodeContext:
        return EpisodeContext(
            self.history.repeat_interleave(repeats),
            tuple((i, c.repeat_interleave(repeats)) for i, c in self.conditions),
        )

    def prefix(self, num_segments: int) -> PainterContext:
        """The conditioning of the image painted after the first ``num_segments`` segments."""
        for index, condition in self.conditions:
            if index == num_segments:
                return condition
        raise KeyError(f"no image of the episode is painted at segment {num_segments}")


def painter_context(context: Any) -> Any:
    """The painter's own conditioning of an :class:`EpisodeContext` (its current one) or a
    :class:`PainterContext`."""
    if isinstance(context, EpisodeContext):
        context = context.current
    return context.painter if isinstance(context, PainterContext) else context


class MultiRoundSession:
    """The reasoner's generation after the episode so far; :meth:`finish` returns the episode
    with the generation and the painter's conditioning of the next image."""

    def __init__(self, policy: ComposedMultiRound, context: EpisodeContext | None, stops):
        self.policy = policy
        self.context = context
        history = None if context is None else context.history
        self.inner = policy.reasoner.text_session(history, stops)

    def prefill(self, input_ids: Tensor, attention_mask: Tensor):
        return self.inner.prefill(input_ids, attention_mask)

    def decode(self, state: Any, token_ids: Tensor):
        return self.inner.decode(state, token_ids)

    def finish(self, tokens: Tensor, mask: Tensor) -> EpisodeContext:
        history = self.inner.finish(tokens, mask)
        conditions = () if self.context is None else self.context.conditions
        condition = self.policy.next_condition(history.segments)
        return EpisodeContext(history, (*conditions, (len(history.segments), condition)))


@MODELS.register_module()
class ComposedMultiRound(ComposedUnified):
    """A vision-language reasoner and an image editor as one multi-round unified policy; see
    the module docstring.

    Args: :class:`~unigrpo_kit.models.composed.ComposedUnified`'s (``reasoner`` default type
    ``"HFVisionLM"``, ``painter`` ``"FluxKontextPolicy"``), and
        edit_template: the editor's instruction after a reflection,
            ``edit_template.format(prompt=..., reflection=...)``; default ``"{reflection}"``.
        reflection_prompt: the text after an image that asks for a reflection (the reasoner's
            chat format; its image block, ``model.reasoner.image_block``, opens the turn).
    """

    default_types = {"reasoner": "HFVisionLM", "painter": "FluxKontextPolicy"}
    clamp_context = False  # the images' latents as painted (latent space is not [-1, 1])

    def __init__(
        self,
        reasoner: dict | str,
        painter: dict | str,
        *,
        template: str = "{reasoning}",
        edit_template: str = "{reflection}",
        reflection_prompt: str = REFLECTION_PROMPT,
        device: str | None = None,
        folder: str | None = None,
    ) -> None:
        edit_fields = _template_fields(edit_template, EDIT_FIELDS, "model.edit_template")
        if not isinstance(reflection_prompt, str) or not reflection_prompt:
            raise ValueError(f"model.reflection_prompt={reflection_prompt!r}: must be text")
        super().__init__(reasoner, painter, template=template, device=device, folder=folder)
        for role, method in (("reasoner", "see"), ("painter", "edit_context")):
            part = getattr(self, role)
            if not callable(getattr(part, method, None)):
                raise ValueError(
                    f"model.{role}.type={type(part).__name__!r} has no {method}(): the "
                    f"{role} of a multi-round policy must be one that "
                    + ("looks at images (HFVisionLM)" if role == "reasoner" else "edits images")
                    + f" (e.g. {self.default_types[role]})"
                )
        self.edit_template = edit_template
        self._edit_fields = edit_fields
        self.reflection_text = reflection_prompt
        self._kwargs.update(edit_template=edit_template, reflection_prompt=reflection_prompt)

    # -- text: the reasoner after the episode so far -------------------------------------------

    def text_session(
        self, context: EpisodeContext | None, stop_token_ids: Sequence[int] | None = None
    ) -> MultiRoundSession:
        """The reasoner's generation after ``context`` (None: the reasoning, from the prompt)."""
        return MultiRoundSession(self, context, stop_token_ids)

    def look(self, context: EpisodeContext, latents: Tensor) -> EpisodeContext:
        """The episode with the painted image appended: its latents [B, *latent_shape] and the
        painter's decoding of them (no gradients), what the reasoner sees."""
        return EpisodeContext(context.history.then(self._image_entry(latents)), context.conditions)

    def reflection_prompt(self, batch: int) -> tuple[Tensor, Tensor]:
        """``reflection_prompt``'s ids [batch, n] and mask (the reasoner's tokenizer)."""
        return self.reasoner.encode_text(self.reflection_text, batch)

    @torch.no_grad()
    def _image_entry(self, latents: Tensor) -> ImageEntry:
        latents = latents.detach().float()
        return ImageEntry(self.painter.decode_images(latents), latents)

    # -- the painter's conditioning ------------------------------------------------------------

    def next_condition(self, segments: Sequence[Any]) -> PainterContext:
        """The painter's conditioning of the image after ``segments`` (the episode so far,
        ending in a generated text): before any image, the template of the prompt and the
        reasoning (text-to-image); after one, the edit of the last image by the last text (the
        reflection) through ``edit_template``."""
        prompt = segments[0]
        images = [s for s in segments if s.kind == "pixels"]
        said = segments[-1]
        if not images:
            return self.condition(prompt.ids, prompt.mask, said.ids, said.mask)
        reflections = self.reasoner.decode_text(said.ids, said.mask)
        prompts = [""] * len(reflections)
        if "prompt" in self._edit_fields:
            prompts = [self._prompt_text(key) for key in _row_keys(prompt.ids, prompt.mask)]
        texts = [
            self.edit_template.format(prompt=p, reflection=r) for p, r in zip(prompts, reflections)
        ]
        return PainterContext(self.painter.edit_context(texts, images[-1].latents), tuple(texts))

    # -- the recomputation ---------------------------------------------------------------------

    def forward_episode(self, segments: Sequence[Any], context: None = None) -> EpisodeForward:
        """One pass over a whole episode: text segments (``TextSegment``) and images
        (``ImageSegment``, their latents as painted). The reasoner reads it all at once
        (each image decoded by the painter, as ``look`` made it) and gives the text logits; the
        context holds each image's conditioning, rebuilt from the recorded text and the
        previous image's latents (frozen encoders), keyed by the image's segment index."""
        if context is not None:
            raise ValueError("ComposedMultiRound reads an episode from its prompt: context=None")
        for segment in segments:
            if getattr(segment, "kind", None) == "condition":
                return EpisodeForward([], segment.context)  # image-only: the recorded context
        history, conditions = [], []
        for index, segment in enumerate(segments):
            if segment.kind == "image":
                conditions.append((index, self.next_condition(history)))
                history.append(self._image_entry(segment.latents))
            else:
                history.append(TextSegment(segment.ids, segment.mask))
        out = self.reasoner.forward_episode(history)
        context = EpisodeContext(VisionContext(tuple(history)), tuple(conditions))
        return EpisodeForward(out.text_logits, context)

    # -- images: the painter, the context unwrapped --------------------------------------------

    def velocity(self, context: Any, latents: Tensor, sigma: Tensor) -> Tensor:
        """The painter's velocity under the current image's conditioning."""
        return self.painter.velocity(painter_context(context), latents, sigma)

    def guided_velocity(self, context, null, latents, sigma, scale) -> Tensor:
        """The painter's classifier-free guidance under the current image's conditioning."""
        return self.painter.guided_velocity(
            painter_context(context), painter_context(null), latents, sigma, scale
        )


__all__ = ["ComposedMultiRound", "EpisodeContext", "ImageEntry"]
