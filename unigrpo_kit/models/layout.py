"""Segments, spans, the key/value cache and the attention mask of the unified model.

A unified sequence is a list of segments, each text or image, the same layout for every row of
a batch (text segments are right-padded within themselves, so segment boundaries line up across
rows). The attention rule:

- text is causal: a text token sees earlier tokens of its segment and itself;
- an image is bidirectional within itself;
- everything sees every earlier segment, except a *noisy* image, which later tokens never see
  (what comes after an image conditions on its clean version only);
- padding is invisible as a key; a padded query may also attend to itself, so that no row of
  the mask is empty (its output is never used).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TextSegment:
    """Token ids [B, n] with mask [B, n] (True on real tokens, right padding after them)."""

    ids: torch.Tensor
    mask: torch.Tensor

    kind = "text"
    noisy = False

    @property
    def length(self) -> int:
        return self.ids.shape[1]


@dataclass
class ImageSegment:
    """Latents [B, C, H, W] in [-1, 1] at noise level ``sigma`` [B] (0 for a clean image).

    ``noisy=True`` marks an image whose velocity the model predicts; later segments never see it.
    """

    latents: torch.Tensor
    sigma: torch.Tensor
    noisy: bool = False
    num_tokens: int = 0

    kind = "image"

    @property
    def length(self) -> int:
        return self.num_tokens


@dataclass
class Span:
    """Where a segment sits among the new columns of one forward pass."""

    start: int
    end: int
    kind: str
    noisy: bool


@dataclass
class KVCache:
    """Per-layer keys and values [B, H, L, Dh] of the visible context, and its bookkeeping.

    ``valid`` [B, L] marks real (non-padding) columns, ``next_pos`` [B] is the text position
    the next token gets, ``ends`` lists the column where each cached segment ends.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor
    next_pos: torch.Tensor
    ends: list[int] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.valid.shape[1]

    def prefix(self, num_segments: int) -> KVCache:
        """The cache of the first ``num_segments`` segments (views, no copy)."""
        cols = self.ends[num_segments - 1] if num_segments > 0 else 0
        return KVCache(
            [k[:, :, :cols] for k in self.keys],
            [v[:, :, :cols] for v in self.values],
            self.valid[:, :cols],
            self.next_pos,
            self.ends[:num_segments],
        )

    def repeat_interleave(self, repeats: int) -> KVCache:
        """Each row repeated ``repeats`` times (rows of one episode stay adjacent)."""
        if repeats == 1:
            return self
        rep = lambda t: t.repeat_interleave(repeats, dim=0)  # noqa: E731
        return KVCache(
            [rep(k) for k in self.keys],
            [rep(v) for v in self.values],
            rep(self.valid),
            rep(self.next_pos),
            list(self.ends),
        )

    def select(self, rows: torch.Tensor) -> KVCache:
        """The cache of the given rows [b] (an index tensor)."""
        return KVCache(
            [k[rows] for k in self.keys],
            [v[rows] for v in self.values],
            self.valid[rows],
            self.next_pos[rows],
            list(self.ends),
        )


def empty_cache(batch: int, num_layers: int, device: torch.device) -> KVCache:
    """A cache with no columns, for a forward pass that starts from nothing."""
    return KVCache(
        [None] * num_layers,
        [None] * num_layers,  # type: ignore[list-item]
        torch.zeros(batch, 0, dtype=torch.bool, device=device),
        torch.zeros(batch, dtype=torch.long, device=device),
    )


def spans_of(lengths: list[int], kinds: list[str], noisy: list[bool]) -> list[Span]:
    """Consecutive spans for segments of the given lengths."""
    spans, start = [], 0
    for length, kind, is_noisy in zip(lengths, kinds, noisy):
        spans.append(Span(start, start + length, kind, is_noisy))
        start += length
    return spans


def build_mask(
    spans: list[Span], new_valid: torch.Tensor, past_valid: torch.Tensor
) -> torch.Tensor:
    """Boolean attention mask [B, 1, Ln, Lc + Ln] for new columns over cache + new columns.

    ``new_valid`` [B, Ln] marks real new columns, ``past_valid`` [B, Lc] real cached columns.
    """
    device = new_valid.device
    batch, n_new = new_valid.shape
    seg = torch.empty(n_new, dtype=torch.long, device=device)
    for i, span in enumerate(spans):
        seg[span.start : span.end] = i
    is_image = torch.tensor([s.kind == "image" for s in spans], device=device)[seg]
    visible = torch.tensor([not s.noisy for s in spans], device=device)[seg]
    col = torch.arange(n_new, device=device)
    same = seg[:, None] == seg[None, :]
    earlier = seg[None, :] < seg[:, None]
    causal = col[None, :] <= col[:, None]
    structural = (earlier & visible[None, :]) | (same & (is_image[:, None] | causal))
    new_part = structural[None] & new_valid[:, None, :]
    new_part = new_part | torch.eye(n_new, dtype=torch.bool, device=device)[None]
    past_part = past_valid[:, None, :].expand(batch, n_new, past_valid.shape[1])
    return torch.cat([past_part, new_part], dim=2)[:, None]
