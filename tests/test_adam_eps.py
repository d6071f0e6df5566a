"""``optimizer.eps_<part>``: Adam's denominator floor per parameter group.

Adam's first (bias-corrected) step is lr * g / (|g| + eps): a sign step of size lr when eps is
far below |g|, a gradient-sized step lr * g / eps when eps is far above it."""

from __future__ import annotations

import pytest
import torch


def test_each_part_gets_its_own_eps(make_trainer):
    trainer = make_trainer(
        "unified_single_round", **{"optimizer.eps_image": 1e-3, "optimizer.eps_text": 1e-6}
    )
    eps = {g["name"]: g["eps"] for g in trainer.optimizer.param_groups}
    assert eps == {"text": 1e-6, "image": 1e-3}


@pytest.mark.parametrize(
    "recipe, want",
    [
        ("image_flowgrpo", {"image": 1e-8}),  # torch's eps, from _base_/algorithm.py
        ("text_grpo", {"text": 1e-8}),
        ("unified_single_round", {"text": 1e-8, "image": 1e-3}),  # the painter's steps sized
        ("unified_multiround", {"text": 1e-8, "image": 1e-3}),  # by its gradient
    ],
)
def test_the_recipes_eps(make_trainer, recipe, want):
    trainer = make_trainer(recipe)
    assert {g["name"]: g["eps"] for g in trainer.optimizer.param_groups} == want


def test_a_large_eps_makes_the_first_step_gradient_sized(make_trainer):
    trainer = make_trainer("unified_single_round", **{"optimizer.eps_image": 1e-2})
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    image, text = groups["image"], groups["text"]
    generator = torch.Generator().manual_seed(0)
    before, grads = {}, {}
    for group in (image, text):
        for p in group["params"][:3]:
            grads[p] = 1e-3 * torch.randn(p.shape, generator=generator)
            before[p] = p.detach().clone()
    trainer.optimizer.zero_grad(set_to_none=True)
    for p, g in grads.items():
        p.grad = g.clone()
    trainer.optimizer.step()
    for group, eps in ((image, 1e-2), (text, 1e-8)):
        for p in group["params"][:3]:
            g = grads[p]
            # Adam's first step, written out: m_hat = g, v_hat = g^2 (bias corrections cancel)
            want = before[p] - group["lr"] * g / (g.abs() + eps)
            torch.testing.assert_close(p.detach(), want, rtol=1e-4, atol=1e-9)

    # |g| is about 8e-4 on average: the image step, lr * g / eps, is about 0.07 lr on average;
    # the text group's (eps 1e-8) is Adam's sign step, lr on every entry
    def mean_move(group):
        return torch.cat([(p.detach() - before[p]).abs().flatten() for p in group["params"][:3]])

    assert mean_move(image).mean() < 0.15 * image["lr"]
    assert mean_move(text).mean() > 0.99 * text["lr"]
