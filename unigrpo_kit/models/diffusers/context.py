"""The conditioning of a diffusers policy: :class:`PromptEmbeddings`, what the pipeline's
``encode_prompt`` returned for a batch of rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class PromptEmbeddings:
    """The conditioning of B rows: what the pipeline's ``encode_prompt`` returned.

    prompt_embeds: [B, L, D] the text tokens' encodings (SD3: CLIP-L, CLIP-G padded to T5's
        width, then T5; Flux: T5), the transformer's ``encoder_hidden_states``.
    pooled_projections: [B, P] the pooled CLIP encodings (SD3: both CLIPs' concatenated).
    text_ids: [L, 3] Flux's text position ids (zeros), shared by every row; None for SD3.

    It does not grow with the episode: :meth:`prefix` returns it unchanged.
    """

    prompt_embeds: Tensor
    pooled_projections: Tensor
    text_ids: Tensor | None = None

    def __len__(self) -> int:
        return self.prompt_embeds.shape[0]

    def select(self, rows: Tensor) -> PromptEmbeddings:
        """The rows ``rows`` [b] (an index tensor, on any device)."""
        rows = rows.to(self.prompt_embeds.device)
        return PromptEmbeddings(
            self.prompt_embeds[rows], self.pooled_projections[rows], self.text_ids
        )

    def repeat_interleave(self, repeats: int) -> PromptEmbeddings:
        """Each row ``repeats`` times, copies adjacent."""
        return PromptEmbeddings(
            self.prompt_embeds.repeat_interleave(repeats, 0),
            self.pooled_projections.repeat_interleave(repeats, 0),
            self.text_ids,
        )

    def prefix(self, num_segments: int) -> PromptEmbeddings:
        """The conditioning of every image of the episode: itself."""
        return self

    @staticmethod
    def cat(first: PromptEmbeddings, second: PromptEmbeddings) -> PromptEmbeddings:
        """``first``'s rows, then ``second``'s (the batched call of classifier-free guidance)."""
        return PromptEmbeddings(
            torch.cat([first.prompt_embeds, second.prompt_embeds]),
            torch.cat([first.pooled_projections, second.pooled_projections]),
            first.text_ids,
        )


@dataclass(frozen=True, eq=False)
class EditEmbeddings(PromptEmbeddings):
    """The conditioning of an image editor's B rows: the prompt encodings and the reference
    image the edit starts from.

    image_latents: [B, L_ref, C] the reference image's packed latents (FLUX.1 Kontext: the
        pipeline's ``prepare_latents`` of the reference), appended to the noisy latents as
        extra image tokens; None: no reference (text-to-image).
    image_ids: [L_ref, 3] their position ids (the pipeline's, first axis 1), shared by every row.
    """

    image_latents: Tensor | None = None
    image_ids: Tensor | None = None

    def select(self, rows: Tensor) -> EditEmbeddings:
        """The rows ``rows`` [b] (an index tensor, on any device)."""
        rows = rows.to(self.prompt_embeds.device)
        image = None if self.image_latents is None else self.image_latents[rows]
        return EditEmbeddings(
            self.prompt_embeds[rows], self.pooled_projections[rows], self.text_ids,
            image, self.image_ids,
        )  # fmt: skip

    def repeat_interleave(self, repeats: int) -> EditEmbeddings:
        """Each row ``repeats`` times, copies adjacent."""
        image = self.image_latents
        return EditEmbeddings(
            self.prompt_embeds.repeat_interleave(repeats, 0),
            self.pooled_projections.repeat_interleave(repeats, 0),
            self.text_ids,
            None if image is None else image.repeat_interleave(repeats, 0),
            self.image_ids,
        )

    def prefix(self, num_segments: int) -> EditEmbeddings:
        """The conditioning of the edited image: itself."""
        return self

    @staticmethod
    def cat(first: PromptEmbeddings, second: PromptEmbeddings) -> EditEmbeddings:
        """``first``'s rows, then ``second``'s; both with a reference or neither."""
        images = [getattr(e, "image_latents", None) for e in (first, second)]
        if (images[0] is None) != (images[1] is None):
            raise ValueError("EditEmbeddings.cat: one side has a reference image, one has not")
        return EditEmbeddings(
            torch.cat([first.prompt_embeds, second.prompt_embeds]),
            torch.cat([first.pooled_projections, second.pooled_projections]),
            first.text_ids,
            None if images[0] is None else torch.cat(images),
            getattr(first, "image_ids", None),
        )
