from __future__ import annotations

import random

import pytest
import torch

from unigrpo_kit.tasks.shapeworld.renderer import render, render_batch
from unigrpo_kit.tasks.shapeworld.scene import BACKGROUND, PALETTE, Obj, Scene


def _mask(image: torch.Tensor) -> torch.Tensor:
    """Pixels that are not background, [H, W]."""
    return (image - torch.tensor(BACKGROUND).view(3, 1, 1)).abs().sum(0) > 1e-6


@pytest.mark.parametrize("resolution", [32, 64])
def test_flat_colours_and_background(resolution: int) -> None:
    image = render(Scene((Obj("purple", "circle", 0), Obj("orange", "square", 3))), resolution)
    assert image.shape == (3, resolution, resolution) and image.dtype == torch.float32
    pixels = image[:, _mask(image)].T.tolist()
    colours = {tuple(round(v, 4) for v in pixel) for pixel in pixels}
    expected = {tuple(round(v, 4) for v in PALETTE[c]) for c in ("purple", "orange")}
    assert colours == expected
    assert torch.allclose(image[:, 0, 0], torch.tensor(BACKGROUND))


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("slot", range(4))
def test_object_sits_in_its_slot(resolution: int, slot: int) -> None:
    mask = _mask(render(Scene((Obj("red", "square", slot),)), resolution))
    ys, xs = mask.nonzero(as_tuple=True)
    half = resolution // 2
    assert (ys >= half).all() == (slot >= 2) and (ys < half).all() == (slot < 2)
    assert (xs >= half).all() == (slot % 2 == 1) and (xs < half).all() == (slot % 2 == 0)


@pytest.mark.parametrize(("resolution", "square_side"), [(32, 11), (64, 22)])
def test_kinds_have_their_geometry(resolution: int, square_side: int) -> None:
    areas = {}
    for kind in ("circle", "square", "triangle"):
        mask = _mask(render(Scene((Obj("blue", kind, 0),)), resolution))
        areas[kind] = int(mask.sum())
        rows = mask.any(1).nonzero().flatten()
        widths = mask[rows].sum(1)
        if kind == "triangle":  # points up: one narrow apex, widest at the base
            assert widths[0] <= 2 and widths[-1] == widths.max() >= square_side - 1
        if kind == "square":
            assert (widths == square_side).all() and len(rows) == square_side
    assert areas["square"] == square_side**2
    # circle ~ pi/4 of the square, triangle ~ 1/2 of it
    assert 0.75 < areas["circle"] / areas["square"] < 0.84
    assert 0.45 < areas["triangle"] / areas["square"] < 0.56


def test_jitter_moves_by_at_most_one_pixel_and_is_reproducible() -> None:
    scene = Scene((Obj("green", "square", 1),))
    centred = _mask(render(scene)).nonzero().float().mean(0)
    shifts = set()
    for seed in range(20):
        jittered = _mask(render(scene, jitter_rng=random.Random(seed))).nonzero().float().mean(0)
        shift = tuple((jittered - centred).round().int().tolist())
        assert max(abs(s) for s in shift) <= 1
        shifts.add(shift)
    assert len(shifts) > 3
    first = render(scene, jitter_rng=random.Random(7))
    assert torch.equal(first, render(scene, jitter_rng=random.Random(7)))
    assert torch.equal(render(scene, jitter=0, jitter_rng=random.Random(7)), render(scene))


def test_render_batch_and_bad_resolution() -> None:
    scenes = [Scene((Obj("red", "circle", s),)) for s in range(3)]
    batch = render_batch(scenes, 64)
    assert batch.shape == (3, 3, 64, 64)
    assert torch.equal(batch[2], render(scenes[2], 64))
    with pytest.raises(ValueError, match="multiple of 32"):
        render(scenes[0], 48)
