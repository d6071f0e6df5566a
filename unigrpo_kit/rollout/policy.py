"""Adapters that let the generic samplers drive the unified model over a cached context."""

from __future__ import annotations

import torch

from ..models.layout import KVCache
from ..models.tiny_unified import TinyUnified


class UnifiedTextPolicy:
    """:class:`~unigrpo_kit.samplers.text.TextPolicy` over TinyUnified, after a cached context.

    ``prefill`` appends the left-padded prompt ids to ``context`` (None: start from nothing),
    ``decode`` appends one token per row. A row fed the pad token (it has finished) adds an
    invisible column, so what follows sees exactly the tokens the row generated. The state is
    the :class:`KVCache`. The sampler never feeds back its last token, so :meth:`finish`
    appends it and returns the cache of the whole text.
    """

    def __init__(self, model: TinyUnified, context: KVCache | None, pad_token_id: int):
        self.model = model
        self.context = context
        self.pad_token_id = pad_token_id

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        logits, cache = self.model.extend_text(self.context, input_ids, attention_mask.bool())
        self.cache = cache
        return logits[:, -1], cache

    def decode(self, state: KVCache, token_ids: torch.Tensor):
        ids = token_ids[:, None]
        logits, cache = self.model.extend_text(state, ids, ids != self.pad_token_id)
        self.cache = cache
        return logits[:, 0], cache

    def finish(self, tokens: torch.Tensor, mask: torch.Tensor) -> KVCache:
        """The cache after the whole generation, from the sample's ``tokens``, ``mask`` [B, T]."""
        last = tokens[:, -1:]
        return self.model.extend_text(self.cache, last, mask[:, -1:])[1]
