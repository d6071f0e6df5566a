from __future__ import annotations

import random

import pytest

from unigrpo_kit.tasks.shapeworld.edits import perturb
from unigrpo_kit.tasks.shapeworld.lexicon import CATEGORIES, TEMPLATES
from unigrpo_kit.tasks.shapeworld.scene import Obj, Scene, describe, parse_reasoning
from unigrpo_kit.tasks.shapeworld.spec import satisfies
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld

WORLD = ShapeWorld()
PRETRAIN = WORLD.sample_prompts(3000, "pretrain", generator=3)
TRAIN = WORLD.sample_prompts(3000, "train", generator=1)
EVAL = WORLD.sample_prompts(700, "eval", generator=2) + WORLD.eval_prompts()


def test_eval_texts_never_appear_in_pretraining_or_training() -> None:
    assert not {p.text for p in EVAL} & {p.text for p in TRAIN + PRETRAIN}
    assert {p.split for p in PRETRAIN} == {"pretrain"} and {p.split for p in TRAIN} == {"train"}
    for category, by_split in TEMPLATES.items():
        assert set(by_split) == {"pretrain", "train", "eval"}, category
        pretrain, train, held_out = (set(by_split[s]) for s in ("pretrain", "train", "eval"))
        assert not pretrain & train and not pretrain & held_out and not train & held_out, category


def test_every_train_and_eval_word_is_in_the_pretraining_text() -> None:
    rng = random.Random(0)
    pretrained = set()
    for prompt in PRETRAIN:
        _, fix = perturb(prompt.scene, rng)
        pretrained |= set(f"{prompt.text} {prompt.reasoning} {fix} done".split())
    asked = {word for p in EVAL + TRAIN for word in p.text.split()}
    assert asked <= pretrained, asked - pretrained


def test_texts_are_short_lowercase_vocabulary_words() -> None:
    vocabulary = WORLD.vocabulary()
    assert vocabulary == sorted(set(vocabulary))
    for prompt in PRETRAIN + TRAIN + EVAL:
        for text in (prompt.text, prompt.reasoning):
            assert " ".join(text.split()) == text and text == text.lower()
            assert set(text.split()) <= set(vocabulary)
        assert len(prompt.text.split()) <= 18


def test_colour_knowledge_is_taught_by_several_train_templates() -> None:
    assert sum("{C1}" in t for t in TEMPLATES["riddle"]["pretrain"]) >= 4
    things = {
        p.text.split("colour of ")[1].split()[:3][-1] for p in PRETRAIN if "colour of" in p.text
    }
    assert len(things) >= 10


def test_canonical_scene_satisfies_spec_and_reasoning_round_trips() -> None:
    for prompt in PRETRAIN + TRAIN + EVAL:
        assert satisfies(prompt.scene, prompt.spec), prompt
        assert parse_reasoning(prompt.reasoning) == prompt.scene
        assert describe(prompt.scene) == prompt.reasoning
        assert 1 <= len(prompt.scene.objects) <= 3


RIDDLE_FACTS = {
    "colour of grass": ("color", "green"),
    "colour of the sky": ("color", "blue"),
    "colour of a ripe banana": ("color", "yellow"),
    "colour of a tomato": ("color", "red"),
    "colour of a plum": ("color", "purple"),
    "colour of a carrot": ("color", "orange"),
    "three corners": ("kind", "triangle"),
    "four equal sides": ("kind", "square"),
    "no corners": ("kind", "circle"),
    "one more than two": ("count", 3),
    "one less than three": ("count", 2),
}


def test_riddles_resolve_to_the_right_attributes() -> None:
    riddles = [p for p in TRAIN + EVAL if p.category == "riddle"]
    seen = set()
    for prompt in riddles:
        for phrase, (field, value) in RIDDLE_FACTS.items():
            if phrase in prompt.text:
                seen.add(phrase)
                assert any(getattr(req, field) == value for req in prompt.spec.reqs), prompt
        if "where you start reading" in prompt.text:
            seen.add("left")
            assert prompt.spec.rels[0].relation == "left of"
            left, right = (prompt.spec.reqs[i].kind for i in (0, 1))
            kinds_by_column = {obj.kind: obj.slot % 2 for obj in prompt.scene.objects}
            assert kinds_by_column[left] == 0 and kinds_by_column[right] == 1
    assert seen == set(RIDDLE_FACTS) | {"left"}


def test_categories_mix_and_restrict() -> None:
    counts = {c: sum(p.category == c for p in TRAIN) for c in CATEGORIES}
    assert min(counts.values()) > 3000 / 7 * 0.8
    only = WORLD.sample_prompts(50, categories=["counting"], generator=3)
    assert {p.category for p in only} == {"counting"}
    assert all(req.count in (2, 3) for p in only for req in p.spec.reqs)
    no_riddles = ShapeWorld(riddle_weight=0.0).sample_prompts(200, generator=4)
    assert all(p.category != "riddle" for p in no_riddles)
    assert WORLD.sample_prompts(5, generator=9) == WORLD.sample_prompts(5, generator=9)
    with pytest.raises(ValueError, match="choose from"):
        WORLD.sample_prompts(1, categories=["colours"])
    with pytest.raises(ValueError, match="split"):
        WORLD.sample_prompts(1, split="test")


def test_eval_set_is_fixed_and_stratified() -> None:
    prompts = WORLD.eval_prompts(n=70, seed=0)
    assert [sum(p.category == c for p in prompts) for c in CATEGORIES] == [10] * 7
    assert prompts == ShapeWorld(seed=123).eval_prompts(n=70, seed=0)
    assert prompts != WORLD.eval_prompts(n=70, seed=1)
    assert {p.split for p in prompts} == {"eval"}


def test_a_fixed_stratified_set_of_the_training_phrasings_on_request() -> None:
    prompts = WORLD.eval_prompts(n=70, seed=0, split="train")
    assert [sum(p.category == c for p in prompts) for c in CATEGORIES] == [10] * 7
    assert {p.split for p in prompts} == {"train"}
    assert prompts == WORLD.eval_prompts(n=70, seed=0, split="train")
    with pytest.raises(ValueError, match="evaluation.split 'test' is not a split; choose from"):
        WORLD.eval_prompts(n=7, split="test")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "red circle",
        "red circle top middle",
        "pink circle top left",
        "red circle top left ; blue square top left",
        "red circle top left ; blue square top right ; red square bottom left ; red circle "
        "bottom right",
        "red circle top left ;",
        "red circle top left blue square top right",
    ],
)
def test_invalid_reasoning_is_rejected(text: str) -> None:
    assert parse_reasoning(text) is None


def test_reasoning_parse_is_order_free() -> None:
    scene = parse_reasoning("blue square bottom right ; red circle top left")
    assert scene == Scene((Obj("red", "circle", 0), Obj("blue", "square", 3)))
    assert describe(scene) == "red circle top left ; blue square bottom right"


def test_prompts_drawn_from_several_splits_use_each_and_only_those() -> None:
    mixed = WORLD.sample_prompts(200, ("train", "pretrain"), generator=4)
    assert {p.split for p in mixed} == {"train", "pretrain"}
    assert 60 < sum(p.split == "train" for p in mixed) < 140
    assert {p.split for p in WORLD.sample_prompts(20, ("train",), generator=5)} == {"train"}
    with pytest.raises(ValueError, match="names no split"):
        WORLD.sample_prompts(2, (), generator=0)
