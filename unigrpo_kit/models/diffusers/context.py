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
