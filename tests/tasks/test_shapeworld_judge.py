from __future__ import annotations

import random

import pytest
import torch

from unigrpo_kit.tasks.shapeworld.edits import perturb
from unigrpo_kit.tasks.shapeworld.judge import parse_image, parse_scene, score, score_batch
from unigrpo_kit.tasks.shapeworld.renderer import render, render_batch
from unigrpo_kit.tasks.shapeworld.scene import BACKGROUND, Obj, Scene
from unigrpo_kit.tasks.shapeworld.spec import Rel, Req, Spec, satisfies
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld

PROMPTS = ShapeWorld().sample_prompts(100, "eval", generator=5)
SPECS = [p.spec for p in PROMPTS]


@pytest.mark.parametrize("resolution", [32, 64])
def test_exact_renders_score_one(resolution: int) -> None:
    images = render_batch([p.scene for p in PROMPTS], resolution, jitter_rng=random.Random(0))
    strict, partial = score_batch(images, SPECS)
    assert strict.tolist() == [1.0] * len(PROMPTS) and partial.min() == 1.0


def test_parse_scene_recovers_jittered_scenes() -> None:
    rng = random.Random(1)
    for prompt in PROMPTS[:40]:
        assert parse_scene(render(prompt.scene, jitter_rng=rng)) == prompt.scene


def test_wrong_spec_renders_score_zero() -> None:
    rng = random.Random(2)
    wrong_scenes = []
    for prompt in PROMPTS:
        wrong, _ = perturb(prompt.scene, rng)
        while satisfies(wrong, prompt.spec):
            wrong, _ = perturb(prompt.scene, rng)
        wrong_scenes.append(wrong)
    strict, partial = score_batch(render_batch(wrong_scenes, jitter_rng=rng), SPECS)
    assert strict.sum() == 0 and partial.max() < 1


def test_noisy_renders_still_score() -> None:
    generator = torch.Generator().manual_seed(0)
    images = render_batch([p.scene for p in PROMPTS], jitter_rng=random.Random(3))
    noisy = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    strict, _ = score_batch(noisy, SPECS)
    assert strict.mean() >= 0.95


@pytest.mark.parametrize("kind", ["circle", "square", "triangle"])
@pytest.mark.parametrize("axis", [1, 2])
def test_shape_split_by_a_line_is_one_object(kind: str, axis: int) -> None:
    image = render(Scene((Obj("green", kind, 3),)))
    image.select(axis, 24)[:] = torch.tensor(BACKGROUND).view(3, 1)  # through the middle
    (found,) = parse_image(image)
    assert (found.color, found.kind, found.slot) == ("green", kind, 3)


@pytest.mark.parametrize("kind", ["circle", "square", "triangle"])
def test_ragged_boundary_keeps_the_kind(kind: str) -> None:
    image = render(Scene((Obj("purple", kind, 0),)))
    mask = (image - torch.tensor(BACKGROUND).view(3, 1, 1)).abs().sum(0) > 0
    inside = mask.nonzero()
    ys, xs = inside[:, 0], inside[:, 1]
    boundary = inside[(ys == ys.min()) | (ys == ys.max()) | (xs == xs.min()) | (xs == xs.max())]
    for y, x in boundary[:: max(1, len(boundary) // 4)][:4]:  # flip 4 boundary pixels off
        image[:, y, x] = torch.tensor(BACKGROUND)
    image[:, ys.max() + 1, int(xs.float().mean())] = image[:, ys.max(), int(xs.float().mean())]
    (found,) = parse_image(image)
    assert (found.color, found.kind, found.slot) == ("purple", kind, 0)


def test_neighbouring_same_colour_objects_stay_separate() -> None:
    scene = Scene(tuple(Obj("red", "square", s) for s in range(3)))
    for seed in range(10):
        found = parse_image(render(scene, jitter_rng=random.Random(seed)))
        assert sorted(d.slot for d in found) == [0, 1, 2]
    assert score(render(scene), Spec((Req(None, "square", 3),))) == (1.0, 1.0)
    # presence holds; the exact count and "nothing extra" (3 objects > 2 asked) fail
    assert score(render(scene), Spec((Req(None, "square", 2),))) == pytest.approx((0.0, 1 / 3))


def test_specks_and_off_palette_pixels_are_ignored() -> None:
    image = render(Scene((Obj("blue", "circle", 0),)))
    image[:, 20:23, 20:22] = torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)  # 6 px: under min area
    image[:, 2:14, 18:30] = 0.5  # grey: off-palette
    (found,) = parse_image(image)
    assert (found.color, found.kind) == ("blue", "circle")


def test_relations_and_partial_credit() -> None:
    image = render(Scene((Obj("red", "circle", 2), Obj("blue", "square", 3))))
    circle, square = Req(None, "circle"), Req(None, "square")
    assert score(image, Spec((circle, square), (Rel(0, "left of", 1),))) == (1.0, 1.0)
    right_of = Spec((circle, square), (Rel(0, "right of", 1),))
    assert score(image, right_of) == pytest.approx((0.0, 3 / 4))  # only the relation fails
    # same row: neither above nor below within the margin
    assert score(image, Spec((circle, square), (Rel(0, "above", 1),)))[0] == 0.0
    assert score(image, Spec((circle, square), (Rel(0, "below", 1),)))[0] == 0.0
    stacked = render(Scene((Obj("red", "circle", 1), Obj("blue", "square", 3))))
    assert score(stacked, Spec((circle, square), (Rel(0, "above", 1),))) == (1.0, 1.0)
    colours = Spec((Req("red", "circle"), Req("green", "square")))
    assert score(image, colours) == pytest.approx((0.0, 2 / 3))  # the green square is missing


def test_bad_image_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        parse_image(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="N specs"):
        score_batch(torch.zeros(2, 3, 32, 32), SPECS[:1])
