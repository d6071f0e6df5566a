"""Attention backends agree with an independent float64 softmax on every mask the model uses."""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.models.attention import (
    attention,
    math_attention,
    sdpa_attention,
    select_backend,
    xformers_available,
)
from unigrpo_kit.models.layout import build_mask, spans_of


def reference(q, k, v, mask):
    """Softmax attention in float64, written out element by element over keys."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    weights = torch.where(mask, scores.exp(), torch.zeros_like(scores))
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("bhqk,bhkd->bhqd", weights, v)


def model_masks():
    """(name, mask) for each layout the model builds: text, image, both, cache, noisy, padding."""
    gen = torch.Generator().manual_seed(0)
    valid = lambda b, n: torch.rand(b, n, generator=gen) > 0.3  # noqa: E731
    b = 3
    out = []
    text = spans_of([6], ["text"], [False])
    out.append(
        (
            "causal text",
            build_mask(
                text, torch.ones(b, 6, dtype=torch.bool), torch.zeros(b, 0, dtype=torch.bool)
            ),
        )
    )
    image = spans_of([5], ["image"], [True])
    out.append(
        (
            "noisy image over cache",
            build_mask(image, torch.ones(b, 5, dtype=torch.bool), valid(b, 7)),
        )
    )
    layout = spans_of([4, 5, 3, 5], ["text", "image", "text", "image"], [False, False, False, True])
    new_valid = torch.ones(b, 17, dtype=torch.bool)
    new_valid[:, :4] = valid(b, 4)
    new_valid[:, 9:12] = valid(b, 3)
    out.append(
        (
            "interleaved with padding",
            build_mask(layout, new_valid, torch.zeros(b, 0, dtype=torch.bool)),
        )
    )
    pretrain = spans_of(
        [4, 5, 5, 3, 5],
        ["text", "image", "image", "text", "image"],
        [False, True, False, False, True],
    )
    out.append(
        (
            "noisy and clean copies",
            build_mask(pretrain, torch.ones(b, 22, dtype=torch.bool), valid(b, 2)),
        )
    )
    return out


@pytest.mark.parametrize("name,mask", model_masks(), ids=[n for n, _ in model_masks()])
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_backend_matches_float64_reference(name, mask, backend):
    gen = torch.Generator().manual_seed(1)
    b, _, lq, lk = mask.shape
    q, k, v = (torch.randn(b, 2, n, 8, generator=gen) for n in (lq, lk, lk))
    out = attention(q, k, v, mask, backend)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask), atol=2e-6, rtol=1e-5)


def test_sdpa_equals_math_on_cpu():
    gen = torch.Generator().manual_seed(2)
    _, mask = model_masks()[2]
    b, _, lq, lk = mask.shape
    q, k, v = (torch.randn(b, 4, n, 16, generator=gen) for n in (lq, lk, lk))
    torch.testing.assert_close(
        sdpa_attention(q, k, v, mask), math_attention(q, k, v, mask), atol=1e-6, rtol=1e-5
    )


def test_mask_rules():
    # columns: [cached, t0, t1, noisy0, noisy1, clean0, clean1]; rows: the six new tokens
    layout = spans_of([2, 2, 2], ["text", "image", "image"], [False, True, False])
    mask = build_mask(
        layout, torch.ones(1, 6, dtype=torch.bool), torch.ones(1, 1, dtype=torch.bool)
    )[0, 0]
    assert mask[:, 0].all()  # the cached column is context for everyone
    assert not mask[0, 2] and mask[1, 1]  # text is causal
    assert mask[2, 4] and mask[3, 3] and mask[2, 1] and mask[2, 2]  # image: bidirectional + text
    assert not mask[4:, 3:5].any()  # later tokens never see the noisy image
    assert mask[4, 6] and mask[5, 5] and mask[4, 1]  # the clean image sees itself and the text


def test_padded_key_is_invisible_and_padded_query_row_is_not_empty():
    layout = spans_of([3], ["text"], [False])
    valid = torch.tensor([[True, False, True]])
    mask = build_mask(layout, valid, torch.zeros(1, 0, dtype=torch.bool))[0, 0]
    assert not mask[2, 1]
    assert mask[2].tolist() == [True, False, True]
    assert mask[1, 1]  # a padded query keeps a key, so softmax never sees an empty row


def test_auto_backend_on_cpu_is_sdpa():
    assert select_backend("auto", "cpu") == "sdpa"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown; use one of"):
        select_backend("flash")


def test_auto_falls_back_to_sdpa_when_xformers_cannot_run(monkeypatch):
    import unigrpo_kit.models.attention as attention_module

    reason = "xformers is installed but its attention does not run here (No operator found)"
    monkeypatch.setattr(attention_module, "xformers_unusable_reason", lambda: reason)
    assert select_backend("auto", "cuda") == "sdpa"
    with pytest.raises(ValueError, match=r"cannot run: xformers is installed but .*use 'sdpa'"):
        select_backend("xformers", "cuda")


def test_xformers_is_unusable_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert not xformers_available()
    with pytest.raises(ValueError, match="cannot run: the model is not on CUDA"):
        select_backend("xformers", "cpu")


@pytest.mark.skipif(
    not xformers_available(), reason="xformers' attention does not run here (needs CUDA)"
)
def test_xformers_matches_reference_on_cuda():
    _, mask = model_masks()[2]
    gen = torch.Generator().manual_seed(3)
    b, _, lq, lk = mask.shape
    q, k, v = (torch.randn(b, 4, n, 16, generator=gen).cuda() for n in (lq, lk, lk))
    out = attention(q, k, v, mask.cuda(), "xformers")
    torch.testing.assert_close(
        out.double().cpu(), reference(q.cpu(), k.cpu(), v.cpu(), mask), atol=1e-4, rtol=1e-3
    )
