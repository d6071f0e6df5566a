"""Attention backends: PyTorch SDPA, xformers' memory-efficient attention, and a math reference.

All three compute softmax(q k^T / sqrt(d) + bias) v over a boolean mask where True means
"may attend". Shapes: q [B, H, Lq, D], k and v [B, H, Lk, D], mask [B, 1 or H, Lq, Lk].

``select_backend("auto")`` picks xformers when its memory-efficient kernel runs on this CUDA
device (probed once with a tiny call shaped as the models call it: float32, a tensor bias),
else SDPA, and logs its choice once, with the reason when xformers is installed but cannot run
(an xformers build for another torch or CUDA loads without its kernels).

Every query row must allow at least one key (the models let padded queries attend to
themselves), so no backend ever sees an all-masked row.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F

logger = logging.getLogger("unigrpo_kit")

BACKENDS = ("auto", "sdpa", "xformers", "math")
_logged: set[str] = set()


@functools.cache
def xformers_unusable_reason() -> str | None:
    """None when xformers' attention runs here; else one line that says why not.

    Importing is not enough: an xformers wheel built for another torch or CUDA imports, warns
    that its C++/CUDA extensions did not load, and then finds no kernel for float32 inputs with
    a tensor bias. So the probe makes one tiny call as the models make it.
    """
    if not torch.cuda.is_available():
        return "no CUDA device (xformers runs only on CUDA)"
    try:
        import xformers.ops  # noqa: F401
    except Exception as error:
        return f"xformers does not import ({type(error).__name__}: {error})"
    try:
        q = torch.zeros(1, 1, 2, 16, device="cuda")
        xformers_attention(q, q, q, torch.ones(1, 1, 2, 2, dtype=torch.bool, device="cuda"))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"xformers is installed but its attention does not run here ({first})"
    return None


def xformers_available() -> bool:
    """True when xformers' memory-efficient attention runs on this machine's CUDA device."""
    return xformers_unusable_reason() is None


def select_backend(name: str = "auto", device: torch.device | str | None = None) -> str:
    """Resolve ``name`` ("auto", "sdpa", "xformers" or "math") to the backend that will run."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is unknown; use one of {', '.join(BACKENDS)}")
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if name == "auto":
        resolved = "xformers" if on_cuda and xformers_available() else "sdpa"
        if on_cuda and resolved == "sdpa" and "auto->sdpa" not in _logged:
            _logged.add("auto->sdpa")
            logger.warning("attention: SDPA, not xformers: %s", xformers_unusable_reason())
    elif name == "xformers" and not (on_cuda and xformers_available()):
        reason = "the model is not on CUDA" if not on_cuda else xformers_unusable_reason()
        raise ValueError(
            f"attention backend 'xformers' cannot run: {reason}; use 'sdpa' or 'auto' "
            "(pip install 'unigrpo-kit[xformers]' with an xformers built for your torch)"
        )
    else:
        resolved = name
    if resolved not in _logged:
        _logged.add(resolved)
        logger.info("attention backend: %s (requested %s)", resolved, name)
    return resolved


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The reference: explicit scores, -inf where ``mask`` is False, softmax, weighted sum."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """PyTorch's fused scaled-dot-product attention with a boolean mask."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def xformers_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """xformers' memory-efficient attention; the boolean mask becomes an additive bias.

    xformers wants [B, L, H, D] layouts and a bias whose last dimension is padded to a
    multiple of 8 in memory, so the bias is allocated padded and then sliced.
    """
    import xformers.ops as xops

    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    padded = (k_len + 7) // 8 * 8
    bias = torch.zeros(batch, heads, q_len, padded, dtype=q.dtype, device=q.device)
    bias = bias[..., :k_len]
    bias.masked_fill_(~mask.expand(batch, heads, q_len, k_len), float("-inf"))
    out = xops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias
    )
    return out.transpose(1, 2)


ATTENTION_FUNCTIONS = {
    "sdpa": sdpa_attention,
    "xformers": xformers_attention,
    "math": math_attention,
}


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, backend: str = "sdpa"
) -> torch.Tensor:
    """Masked attention with a resolved backend name (see :func:`select_backend`)."""
    return ATTENTION_FUNCTIONS[backend](q, k, v, mask)
