"""verdict.py names the constraints the judge failed, agrees with the judge's score, and sample
grids carry the verdict with a green or red bar."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from unigrpo_kit.tasks.shapeworld.judge import score_batch
from unigrpo_kit.tasks.shapeworld.renderer import render
from unigrpo_kit.tasks.shapeworld.scene import Obj, Scene
from unigrpo_kit.tasks.shapeworld.spec import Rel, Req, Spec
from unigrpo_kit.tasks.shapeworld.verdict import constraint_names, verdicts
from unigrpo_kit.visualize import MARK_COLORS, grid

THREE_GREEN_TRIANGLES = Spec((Req("green", "triangle", 3),))


def test_constraint_names_follow_the_judges_order():
    spec = Spec((Req("red", "circle"), Req(kind="square", count=2)), (Rel(0, "left of", 1),))
    assert constraint_names(spec) == [
        "a red circle",
        "a square",
        "exactly 2 squares",
        "red circle left of square",
        "nothing extra (at most 3 shapes)",
    ]


def test_one_green_and_one_red_triangle_fail_the_count():
    image = render(Scene((Obj("green", "triangle", 0), Obj("red", "triangle", 3))))
    (verdict,) = verdicts(image.unsqueeze(0), [THREE_GREEN_TRIANGLES])
    assert verdict.failed == ("exactly 3 green triangles",)
    assert sorted(verdict.seen) == ["green triangle", "red triangle"]
    assert verdict.line() == (
        "verdict: FAIL 2/3: exactly 3 green triangles (saw green triangle, red triangle)"
    )


def test_verdicts_agree_with_the_judges_scores():
    scenes = [
        Scene(
            (Obj("green", "triangle", 0), Obj("green", "triangle", 1), Obj("green", "triangle", 2))
        ),
        Scene((Obj("green", "triangle", 0),)),
        Scene((Obj("blue", "square", 0), Obj("green", "triangle", 1))),
        Scene(()),
    ]
    images = torch.stack([render(scene) for scene in scenes])
    specs = [THREE_GREEN_TRIANGLES] * len(scenes)
    strict, partial = score_batch(images, specs)
    for verdict, s, p in zip(verdicts(images, specs), strict.tolist(), partial.tolist()):
        assert verdict.passed == bool(s)
        assert (verdict.total - len(verdict.failed)) / verdict.total == pytest.approx(p)


def test_grid_rows_carry_a_pass_or_fail_bar(tmp_path):
    image = torch.zeros(3, 8, 8)
    rows = [
        {"lines": ["prompt: a", "verdict: pass (2/2)"], "images": [image], "passed": True},
        {"lines": ["prompt: b", "verdict: FAIL 1/2: a"], "images": [image], "passed": False},
        {"lines": ["prompt: c"], "images": [image]},
    ]
    path = grid(rows, tmp_path / "g.png")
    with Image.open(path) as picture:
        rgb = picture.convert("RGB")
        assert rgb.getpixel((1, 10)) == MARK_COLORS[True]
        assert rgb.getpixel((1, 136 + 10)) == MARK_COLORS[False]
        assert rgb.getpixel((1, 2 * 136 + 10)) == (255, 255, 255)
