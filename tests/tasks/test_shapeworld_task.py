from __future__ import annotations

import random

import pytest

from unigrpo_kit.registry import TASKS
from unigrpo_kit.tasks.shapeworld.scene import Obj, Scene
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld


def test_built_from_registry_with_its_resolution() -> None:
    world = TASKS.build(dict(type="ShapeWorld", resolution=64, jitter=0))
    assert isinstance(world, ShapeWorld) and len(world.categories) == 7
    prompt = world.eval_prompts(n=7)[5]
    image = world.render(prompt.scene, jitter_rng=random.Random(0))
    assert image.shape == (3, 64, 64)
    assert world.score(image, prompt.spec) == (1.0, 1.0)
    assert world.parse_scene(image) == prompt.scene
    assert world.quality(image) == 1.0
    assert world.render_batch([prompt.scene] * 2).shape == (2, 3, 64, 64)


def test_symbolic_helpers_agree_with_the_scene() -> None:
    world = ShapeWorld()
    prompt = world.sample_prompts(1, categories=["attribute_binding"], generator=0)[0]
    assert world.satisfies(prompt.scene, prompt.spec)
    # two presence constraints and "nothing extra"
    assert world.constraints_met(Scene((Obj("red", "triangle", 0),)), prompt.spec)[1] == 3
    assert world.parse_reasoning(world.describe(prompt.scene)) == prompt.scene
    wrong, fix = world.perturb(prompt.scene, random.Random(0))
    assert world.apply_edit(wrong, fix) == prompt.scene
    assert world.edit_instruction(prompt, prompt.scene) == "done"
    assert {";", ",", "an", "done", "colour", "grass"} <= set(world.vocabulary())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(resolution=40), "multiple of 32"),
        (dict(jitter=-1), "jitter"),
        (dict(riddle_weight=-0.5), "riddle_weight"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShapeWorld(**kwargs)


def test_generator_argument_forms() -> None:
    world = ShapeWorld(seed=3)
    assert world.sample_prompts(4, generator=random.Random(1)) == world.sample_prompts(
        4, generator=1
    )
    assert ShapeWorld(seed=3).sample_prompts(4) == world.sample_prompts(4)
    with pytest.raises(ValueError, match="generator"):
        world.sample_prompts(2, generator="seed")
