"""TinyUnified: a small mixture-of-transformers that writes text and paints images by flow matching.

In the spirit of Bagel (arXiv 2505.14683): one sequence holds text tokens and image patch tokens,
attention is shared across the whole sequence, and every layer has two experts with separate
weights (norms, QKV and output projections, MLPs): one for text tokens, one for image tokens.
The image expert is conditioned on the noise level ``sigma`` by adaLN-Zero (DiT, arXiv 2212.09748).
An LM head reads text positions; a velocity head reads the noisy image's positions and predicts
v = noise - x0 (the flow-matching convention x_sigma = (1 - sigma) x0 + sigma noise).

The masking rule and the cache are in :mod:`unigrpo_kit.models.layout`. Three calls serve
training and rollouts alike:

- ``forward(segments, cache)``: run new segments after a cached context; returns text logits,
  velocities of noisy images and the extended cache (which has gradients when run with them);
- ``velocity(cache, latents, sigma)``: one denoising call over a cached context;
- ``extend_image(cache, latents)``: commit a finished image as clean context.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .attention import attention, select_backend
from .layout import ImageSegment, KVCache, TextSegment, build_mask, empty_cache, spans_of

# The LM head never proposes these; a large finite negative keeps softmax and entropy finite.
BANNED_LOGIT = -1e4


@dataclass
class TinyUnifiedConfig:
    """Sizes of the model. ``banned_token_ids`` are never generated (padding, <bos>, ...)."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    max_positions: int = 256
    banned_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_config(self)

    @classmethod
    def from_file(cls, path: str | Path) -> TinyUnifiedConfig:
        """The config of a checkpoint's ``config.json`` (``{"type": ..., "config": {...}}``); a
        one-line ValueError naming the file and the field for anything that cannot build a
        model: malformed JSON, an unknown field, a size that does not fit."""
        path = Path(path)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"checkpoint config {path} is not valid JSON: {error}") from None
        fields = meta.get("config") if isinstance(meta, dict) else None
        if not isinstance(fields, dict):
            raise ValueError(f'checkpoint config {path} has no "config" object of model sizes')
        fields = dict(fields)
        if isinstance(fields.get("banned_token_ids"), list):
            fields["banned_token_ids"] = tuple(fields["banned_token_ids"])
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"checkpoint {path.parent} does not match the model: unknown config field "
                f"{unknown[0]!r} in {path.name}"
            )
        try:
            return cls(**fields)
        except (TypeError, ValueError) as error:
            raise ValueError(f"checkpoint config {path}: {error}") from None

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size**2


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config: TinyUnifiedConfig) -> None:
    """A one-line ValueError naming the first field that cannot build a model: a size that is
    not a positive int, ``n_heads`` not dividing ``d_model``, a ``d_model`` that the 2-D position
    embedding cannot split in four, an image that is not a whole number of patches, a banned id
    outside the vocabulary."""
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "image_size", "patch_size"):
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"config field {name}={value!r} must be an int >= 1")
    for name in ("channels", "max_positions"):
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"config field {name}={value!r} must be an int >= 1")
    ratio = config.mlp_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ValueError(f"config field mlp_ratio={ratio!r} must be a number > 0")
    if config.d_model % config.n_heads:
        raise ValueError(
            f"config field n_heads={config.n_heads} must divide d_model={config.d_model} "
            "(each head gets d_model / n_heads channels)"
        )
    if config.d_model % 4:
        raise ValueError(
            f"config field d_model={config.d_model} must be a multiple of 4 (the 2-D position "
            "embedding splits it into four)"
        )
    if config.image_size % config.patch_size:
        raise ValueError(
            f"config field image_size={config.image_size} is not a multiple of patch_size "
            f"{config.patch_size} (an image is a whole number of patches)"
        )
    banned = config.banned_token_ids
    if not isinstance(banned, (list, tuple)) or not all(
        _is_int(i) and 0 <= i < config.vocab_size for i in banned
    ):
        raise ValueError(
            f"config field banned_token_ids={banned!r} must be ids in [0, {config.vocab_size})"
        )


class ForwardOutput(NamedTuple):
    """``text_logits``: one [B, n, V] per text segment; ``velocities``: one [B, C, H, W] per noisy
    image segment; ``cache``: the context extended by the visible new segments."""

    text_logits: list[torch.Tensor]
    velocities: list[torch.Tensor]
    cache: KVCache


def timestep_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [B, dim] of 1000 * sigma (the DiT / SD3 frequency convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device) / half)
    angles = 1000.0 * sigma.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """[side * side, dim] embedding: half the channels encode the row, half the column."""
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter) / quarter))
    coords = torch.arange(side, dtype=torch.float32)
    rows = coords[:, None] * freqs[None]  # [side, quarter]
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)  # [side, dim / 2]
    grid_rows = row_emb[:, None].expand(side, side, dim // 2)
    grid_cols = row_emb[None, :].expand(side, side, dim // 2)
    return torch.cat([grid_rows, grid_cols], dim=-1).reshape(side * side, dim)


class Expert(nn.Module):
    """One modality's weights inside a layer: QKV, output projection and MLP."""

    def __init__(self, d_model: int, mlp_ratio: float, affine_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=affine_norm, eps=1e-6)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=affine_norm, eps=1e-6)
        hidden = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))


class MoTBlock(nn.Module):
    """Shared attention over all tokens; text and image tokens use their own expert weights."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float):
        super().__init__()
        self.n_heads = n_heads
        self.text = Expert(d_model, mlp_ratio, affine_norm=True)
        self.image = Expert(d_model, mlp_ratio, affine_norm=False)
        # adaLN-Zero: shift, scale, gate for attention and for the MLP, from the sigma embedding.
        self.modulation = nn.Linear(d_model, 6 * d_model)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, spans, conds, past_k, past_v, mask, backend):
        batch, length, d_model = x.shape
        mods = [
            self.modulation(F.silu(c))[:, None].chunk(6, dim=-1) if c is not None else None
            for c in conds
        ]
        qkv = []
        for span, mod in zip(spans, mods):
            h = x[:, span.start : span.end]
            if span.kind == "text":
                qkv.append(self.text.qkv(self.text.norm1(h)))
            else:
                shift, scale = mod[0], mod[1]
                qkv.append(self.image.qkv(self.image.norm1(h) * (1 + scale) + shift))
        qkv = torch.cat(qkv, dim=1) if len(qkv) > 1 else qkv[0]
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.n_heads)
        keys = k if past_k is None else torch.cat([past_k, k], dim=2)
        values = v if past_v is None else torch.cat([past_v, v], dim=2)
        out = rearrange(attention(q, keys, values, mask, backend), "b h l d -> b l (h d)")
        pieces = []
        for span, mod in zip(spans, mods):
            h, o = x[:, span.start : span.end], out[:, span.start : span.end]
            if span.kind == "text":
                h = h + self.text.proj(o)
                h = h + self.text.mlp(self.text.norm2(h))
            else:
                _, _, gate1, shift2, scale2, gate2 = mod
                h = h + gate1 * self.image.proj(o)
                h = h + gate2 * self.image.mlp(self.image.norm2(h) * (1 + scale2) + shift2)
            pieces.append(h)
        x = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        return x, keys, values


class TinyUnified(nn.Module):
    """A small mixture-of-transformers (Bagel-style) over text tokens and image patches."""

    def __init__(
        self, config: TinyUnifiedConfig | None = None, attention_backend: str = "auto", **kwargs
    ):
        super().__init__()
        config = config if config is not None else TinyUnifiedConfig(**kwargs)
        if isinstance(config, dict):
            config = TinyUnifiedConfig(**config)
        check_config(config)  # a config edited after it was made
        self.config = config
        self.attention_backend = attention_backend
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Embedding(config.max_positions, d)
        self.patch_embedding = nn.Linear(config.patch_dim, d)
        # 2-D sine-cosine positions (as DiT) as the starting point of a learned embedding, at the
        # scale of the noisy patch embedding: a small random start leaves a token at high noise
        # without a usable sense of where it is, and the model cannot place objects by slot.
        side = config.image_size // config.patch_size
        self.patch_position = nn.Parameter(sincos_2d(side, d)[None])
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(
            MoTBlock(d, config.n_heads, config.mlp_ratio) for _ in range(config.n_layers)
        )
        self.text_norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.image_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(d, 2 * d)
        self.velocity_head = nn.Linear(d, config.patch_dim)
        for layer in (self.final_modulation, self.velocity_head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        banned = torch.zeros(config.vocab_size, dtype=torch.bool)
        banned[list(config.banned_token_ids)] = True
        self.register_buffer("banned", banned, persistent=False)

    # ----------------------------------------------------------------- embeddings
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return rearrange(latents, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        p, side = self.config.patch_size, self.config.image_size // self.config.patch_size
        return rearrange(patches, "b (h w) (c p q) -> b c (h p) (w q)", h=side, w=side, p=p, q=p)

    def _embed(self, segments, next_pos):
        """Token embeddings [B, L, D], per-segment sigma conditions, validity [B, L], positions."""
        pieces, conds, valid = [], [], []
        pos = next_pos.clone()
        for seg in segments:
            if seg.kind == "text":
                step = seg.mask.long()
                positions = (pos[:, None] + step.cumsum(1) - 1).clamp(
                    0, self.config.max_positions - 1
                )
                pieces.append(self.token_embedding(seg.ids) + self.position_embedding(positions))
                conds.append(None)
                valid.append(seg.mask)
                pos = pos + step.sum(1)
            else:
                cond = self.time_mlp(timestep_embedding(seg.sigma, self.config.d_model))
                tokens = self.patch_embedding(self.patchify(seg.latents.float()))
                pieces.append(tokens + self.patch_position + cond[:, None])
                conds.append(cond)
                valid.append(torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))
                if not seg.noisy:
                    pos = pos + 1
        return torch.cat(pieces, dim=1), conds, torch.cat(valid, dim=1), pos

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        segments: list[TextSegment | ImageSegment],
        cache: KVCache | None = None,
        keep_cache: bool = True,
    ) -> ForwardOutput:
        """Run ``segments`` after the cached context (or from nothing); see the module docstring.

        ``keep_cache=False`` skips building the extended cache (a denoising step needs none)."""
        for seg in segments:
            if seg.kind == "image":
                seg.num_tokens = self.config.num_patches
        batch = (
            segments[0].ids.shape[0] if segments[0].kind == "text" else segments[0].latents.shape[0]
        )
        device = self.token_embedding.weight.device
        if cache is None:
            cache = empty_cache(batch, len(self.blocks), device)
        x, conds, new_valid, next_pos = self._embed(segments, cache.next_pos)
        spans = spans_of(
            [s.length for s in segments], [s.kind for s in segments], [s.noisy for s in segments]
        )
        mask = build_mask(spans, new_valid, cache.valid)
        backend = select_backend(self.attention_backend, device)
        # The next cache keeps the cached columns and the new ones that later segments may see
        # (all but noisy images); decided from the layout alone, so no device sync.
        keep_all = not any(s.noisy for s in spans)
        keep = visible = None
        if keep_cache and not keep_all:
            keep = torch.cat(
                [torch.full((s.end - s.start,), not s.noisy, device=device) for s in spans]
            )
            visible = torch.cat([torch.ones(cache.length, dtype=torch.bool, device=device), keep])
        keys, values = [], []
        for block, past_k, past_v in zip(self.blocks, cache.keys, cache.values):
            # the block returns the cached columns followed by the new ones: the next cache
            x, layer_keys, layer_values = block(x, spans, conds, past_k, past_v, mask, backend)
            if keep_cache:
                keys.append(layer_keys if keep_all else layer_keys[:, :, visible])
                values.append(layer_values if keep_all else layer_values[:, :, visible])

        text_logits, velocities = [], []
        for span, seg, cond in zip(spans, segments, conds):
            h = x[:, span.start : span.end]
            if seg.kind == "text":
                logits = self.lm_head(self.text_norm(h))
                text_logits.append(logits.masked_fill(self.banned, BANNED_LOGIT))
            elif seg.noisy:
                shift, scale = self.final_modulation(F.silu(cond))[:, None].chunk(2, dim=-1)
                patches = self.velocity_head(self.image_norm(h) * (1 + scale) + shift)
                velocities.append(self.unpatchify(patches))
        if not keep_cache:
            return ForwardOutput(text_logits, velocities, None)
        ends = list(cache.ends)
        col = cache.length
        for span in spans:
            if not span.noisy:
                col += span.end - span.start
                ends.append(col)
        visible_valid = new_valid if keep_all else new_valid[:, keep]
        new_cache = KVCache(
            keys, values, torch.cat([cache.valid, visible_valid], dim=1), next_pos, ends
        )
        return ForwardOutput(text_logits, velocities, new_cache)

    # ----------------------------------------------------------------- rollout helpers
    def velocity(self, cache: KVCache, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Velocity [B, C, H, W] of noisy ``latents`` at ``sigma`` [B] given a cached context."""
        seg = ImageSegment(latents, sigma, noisy=True)
        return self.forward([seg], cache, keep_cache=False).velocities[0]

    def extend_image(self, cache: KVCache, latents: torch.Tensor) -> KVCache:
        """The cache with a finished (clean) image appended as context."""
        sigma = torch.zeros(latents.shape[0], device=latents.device)
        return self.forward([ImageSegment(latents, sigma)], cache).cache

    def extend_text(
        self, cache: KVCache | None, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, KVCache]:
        """Text logits [B, n, V] of ``ids`` [B, n] and the cache with them appended."""
        out = self.forward([TextSegment(ids, mask)], cache)
        return out.text_logits[0], out.cache

    def expert_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by expert: "text" (embeddings, text experts, LM head) and "image" (the rest:
        patch and sigma embeddings, image experts, their modulation, the velocity head)."""
        text_prefixes = ("token_embedding", "position_embedding", "text_norm", "lm_head")
        groups: dict[str, list[nn.Parameter]] = {"text": [], "image": []}
        for name, param in self.named_parameters():
            is_text = name.startswith(text_prefixes) or ".text." in name
            groups["text" if is_text else "image"].append(param)
        return groups

    def config_dict(self) -> dict:
        data = asdict(self.config)
        data["banned_token_ids"] = list(self.config.banned_token_ids)
        return data
