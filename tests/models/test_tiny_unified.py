"""TinyUnified: the cache path equals the full forward, and the masking rules hold in the model."""

from __future__ import annotations

import pytest
import torch

from unigrpo_kit.models.layout import ImageSegment, TextSegment
from unigrpo_kit.models.tiny_unified import BANNED_LOGIT, TinyUnified, TinyUnifiedConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = TinyUnifiedConfig(
        vocab_size=40,
        d_model=32,
        n_layers=2,
        n_heads=2,
        image_size=8,
        patch_size=4,
        banned_token_ids=(0, 2),
    )
    m = TinyUnified(config, attention_backend="sdpa").eval()
    with torch.no_grad():  # the adaLN-Zero heads start at zero; give them weights to test
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    return m


def batch(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (b, 6), generator=g)
    mask = torch.ones(b, 6, dtype=torch.bool)
    mask[1, 4:] = False
    ids2 = torch.randint(3, 40, (b, 3), generator=g)
    image = torch.randn(b, 3, 8, 8, generator=g)
    noisy = torch.randn(b, 3, 8, 8, generator=g)
    sigma = torch.rand(b, generator=g)
    return ids, mask, ids2, image, noisy, sigma


def full(model, ids, mask, ids2, image, noisy, sigma):
    b = ids.shape[0]
    return model(
        [
            TextSegment(ids, mask),
            ImageSegment(image, torch.zeros(b)),
            TextSegment(ids2, torch.ones_like(ids2, dtype=torch.bool)),
            ImageSegment(noisy, sigma, noisy=True),
        ]
    )


@torch.no_grad()
def test_cached_pieces_equal_the_full_forward(model):
    ids, mask, ids2, image, noisy, sigma = batch()
    out = full(model, ids, mask, ids2, image, noisy, sigma)
    logits_a, cache = model.extend_text(None, ids[:, :2], mask[:, :2])
    logits_b, cache = model.extend_text(cache, ids[:, 2:], mask[:, 2:])
    cache = model.extend_image(cache, image)
    logits_c, cache = model.extend_text(cache, ids2, torch.ones_like(ids2, dtype=torch.bool))
    velocity = model.velocity(cache, noisy, sigma)
    text = torch.cat([logits_a, logits_b], 1)
    torch.testing.assert_close(text[mask], out.text_logits[0][mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_c, out.text_logits[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(velocity, out.velocities[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_text_is_causal_and_noisy_images_are_invisible(model):
    ids, mask, ids2, image, noisy, sigma = batch()
    base = full(model, ids, mask, ids2, image, noisy, sigma)
    later = ids.clone()
    later[:, 5] = 7
    changed = full(model, later, mask, ids2, image, noisy, sigma)
    torch.testing.assert_close(changed.text_logits[0][:, :5], base.text_logits[0][:, :5])
    # a noisy image in the middle: what follows must not change when it does
    b = ids.shape[0]

    def segs(n):
        return [
            TextSegment(ids, mask),
            ImageSegment(n, sigma, noisy=True),
            ImageSegment(image, torch.zeros(b)),
            TextSegment(ids2, ids2 > 0),
        ]

    one, two = model(segs(noisy)), model(segs(noisy * 3))
    torch.testing.assert_close(one.text_logits[1], two.text_logits[1])
    assert not torch.allclose(one.velocities[0], two.velocities[0])


@torch.no_grad()
def test_image_is_bidirectional_and_sees_earlier_text(model):
    ids, mask, ids2, image, noisy, sigma = batch()
    base = full(model, ids, mask, ids2, image, noisy, sigma)
    corner = noisy.clone()
    corner[:, :, 4:, 4:] += 1.0  # the last patch
    changed = full(model, ids, mask, ids2, image, corner, sigma)
    assert (
        changed.velocities[0][:, :, :4, :4] - base.velocities[0][:, :, :4, :4]
    ).abs().max() > 1e-4
    other_text = full(model, ids, mask, (ids2 + 1) % 37 + 3, image, noisy, sigma)
    assert (other_text.velocities[0] - base.velocities[0]).abs().max() > 1e-4


@torch.no_grad()
def test_padding_does_not_change_a_row(model):
    ids, mask, ids2, image, noisy, sigma = batch()
    out = full(model, ids, mask, ids2, image, noisy, sigma)
    alone = full(model, ids[1:2, :4], mask[1:2, :4], ids2[1:2], image[1:2], noisy[1:2], sigma[1:2])
    torch.testing.assert_close(out.velocities[0][1:2], alone.velocities[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.text_logits[1][1:2], alone.text_logits[1], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_banned_tokens_are_never_proposed(model):
    ids, mask, *_ = batch()
    logits, _ = model.extend_text(None, ids, mask)
    assert (logits[..., [0, 2]] == BANNED_LOGIT).all()
    assert torch.isfinite(logits.log_softmax(-1)).all()


def test_gradients_reach_both_experts(model):
    ids, mask, ids2, image, noisy, sigma = batch()
    model.zero_grad()
    out = full(model, ids, mask, ids2, image, noisy, sigma)
    (out.velocities[0].pow(2).mean() + out.text_logits[0].logsumexp(-1).mean()).backward()
    block = model.blocks[0]
    assert block.text.qkv.weight.grad.abs().sum() > 0
    assert block.image.qkv.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_image_size_must_divide_into_patches():
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        TinyUnified(TinyUnifiedConfig(vocab_size=10, image_size=30, patch_size=4))
