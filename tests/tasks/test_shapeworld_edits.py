from __future__ import annotations

import random

import pytest

from unigrpo_kit.tasks.shapeworld.edits import MAX_PLAN_DEPTH, apply_edit, edit_instruction, perturb
from unigrpo_kit.tasks.shapeworld.scene import COLORS, KINDS, Obj, Scene
from unigrpo_kit.tasks.shapeworld.spec import satisfies
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld

SCENE = Scene((Obj("red", "circle", 0), Obj("blue", "square", 3)))


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        ("make the top left shape green", (Obj("green", "circle", 0), Obj("blue", "square", 3))),
        ("make the top left shape a triangle", (Obj("red", "triangle", 0), SCENE.objects[1])),
        ("move the top left shape to top right", (Obj("red", "circle", 1), SCENE.objects[1])),
        ("add an orange square at bottom left", SCENE.objects + (Obj("orange", "square", 2),)),
        ("remove the bottom right shape", SCENE.objects[:1]),
        ("done", SCENE.objects),
    ],
)
def test_apply_edit(instruction: str, expected: tuple[Obj, ...]) -> None:
    assert apply_edit(SCENE, instruction) == Scene(expected)


@pytest.mark.parametrize(
    ("instruction", "message"),
    [
        ("make it red", "does not parse"),
        ("make the top right shape red", "empty top right"),
        ("move the top left shape to bottom right", "filled bottom right"),
        ("add a red circle at top left", "filled top left"),
        ("make the top left shape pink", "does not parse"),
    ],
)
def test_bad_edits_raise(instruction: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_edit(SCENE, instruction)


def test_instruction_is_done_only_when_satisfied_and_reaches_done_within_the_plan_depth() -> None:
    """Every instruction makes progress: "done" within MAX_PLAN_DEPTH edits (removing extra
    objects, then fixing colour and kind, can take four single-attribute edits)."""
    world = ShapeWorld()
    rng = random.Random(0)
    prompts = world.sample_prompts(150, generator=1) + world.eval_prompts(70)
    most_steps = 0
    for prompt in prompts:
        assert edit_instruction(prompt, prompt.scene) == "done"
        slots = rng.sample(range(4), rng.randint(0, 3))
        scene = Scene(tuple(Obj(rng.choice(COLORS), rng.choice(KINDS), s) for s in slots))
        steps = 0
        while (instruction := edit_instruction(prompt, scene)) != "done":
            assert not satisfies(scene, prompt.spec)
            scene = apply_edit(scene, instruction)
            steps += 1
            assert steps <= MAX_PLAN_DEPTH, (prompt.text, scene)
        assert satisfies(scene, prompt.spec)
        most_steps = max(most_steps, steps)
    assert most_steps >= 3  # some random scenes need three edits or more


def test_instruction_prefers_the_smallest_fix() -> None:
    prompt = ShapeWorld().sample_prompts(1, categories=["colors"], generator=0)[0]
    (obj,) = prompt.scene.objects
    wrong = Scene((Obj(next(c for c in COLORS if c != obj.color), obj.kind, obj.slot),))
    assert edit_instruction(prompt, wrong).split()[:2] == ["make", "the"]
    assert satisfies(apply_edit(wrong, edit_instruction(prompt, wrong)), prompt.spec)


def test_perturb_changes_one_thing_and_its_fix_restores() -> None:
    rng = random.Random(0)
    kinds_of_change = set()
    for prompt in ShapeWorld().sample_prompts(200, generator=2):
        wrong, fix = perturb(prompt.scene, rng)
        assert wrong != prompt.scene and 1 <= len(wrong.objects) <= 3
        assert apply_edit(wrong, fix) == prompt.scene
        kinds_of_change.add(fix.split()[0] + (" colour" if fix.split()[-1] in COLORS else ""))
    assert kinds_of_change == {"make colour", "make", "move", "add", "remove"}
