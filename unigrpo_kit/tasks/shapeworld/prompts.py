"""Prompts: a sentence, the spec the judge checks, and the canonical reasoning scene.

A prompt is drawn by picking a carrier template of its category and split (see
``lexicon.py`` for the split rule), filling its fields with random kinds, colours, counts,
relations or riddle atoms, and deriving the :class:`Spec` from the fields the template uses.
Its ``scene`` is a random minimal scene that satisfies the spec: one object per required
object, free colours and kinds drawn at random, related objects placed in one row (left of /
right of) or one column (above / below). ``reasoning`` is that scene described.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from string import Formatter

from unigrpo_kit.tasks.shapeworld.lexicon import (
    CATEGORIES,
    COLOR_PHRASE,
    COLOR_THINGS,
    COUNT_PHRASES,
    NUMBERS,
    RELATION_CLAUSES,
    SHAPE_PHRASES,
    TEMPLATES,
    with_articles,
)
from unigrpo_kit.tasks.shapeworld.scene import (
    COLORS,
    KINDS,
    PLURALS,
    SLOTS,
    Obj,
    Scene,
    describe,
    slot_row_col,
)
from unigrpo_kit.tasks.shapeworld.spec import RELATIONS, Rel, Req, Spec, satisfies

SPLITS: tuple[str, ...] = ("pretrain", "train", "eval")
HORIZONTAL = ("left of", "right of")
# A count that comes with a colour is at most 2: three objects each needing a new colour and
# kind could take more than three single-attribute edits to fix (see edits.edit_instruction).
MAX_COLORED_COUNT = 2


@dataclass(frozen=True)
class Prompt:
    """A prompt with its judge spec and its canonical reasoning.

    ``reasoning`` is ``describe(scene)``; ``scene`` satisfies ``spec``; ``split`` is
    ``"pretrain"``, ``"train"`` or ``"eval"``; ``category`` is one of ``lexicon.CATEGORIES``.
    """

    text: str
    category: str
    spec: Spec
    reasoning: str
    scene: Scene
    split: str


def template_fields(template: str) -> set[str]:
    """Names of the ``{fields}`` a template uses."""
    return {name for _, name, _, _ in Formatter().parse(template) if name}


def _aligned(scene_slots: list[int], first_of_req: list[int], spec: Spec) -> bool:
    """Whether every related pair shares a row (left/right) or a column (above/below)."""
    for rel in spec.rels:
        row_a, col_a = slot_row_col(scene_slots[first_of_req[rel.a]])
        row_b, col_b = slot_row_col(scene_slots[first_of_req[rel.b]])
        if (row_a != row_b) if rel.relation in HORIZONTAL else (col_a != col_b):
            return False
    return True


def random_scene(spec: Spec, rng: random.Random) -> Scene:
    """A random minimal scene satisfying ``spec`` (see the module docstring)."""
    for _ in range(100):
        looks: list[tuple[str, str]] = []
        first_of_req: list[int] = []
        for req in spec.reqs:
            first_of_req.append(len(looks))
            for _ in range(req.count or 1):
                looks.append((req.color or rng.choice(COLORS), req.kind or rng.choice(KINDS)))
        if len(looks) > len(SLOTS):
            break
        placements = list(itertools.permutations(range(len(SLOTS)), len(looks)))
        rng.shuffle(placements)
        valid = []
        for slots in placements:
            scene = Scene(tuple(Obj(c, k, s) for (c, k), s in zip(looks, slots, strict=True)))
            if satisfies(scene, spec):
                valid.append((scene, _aligned(list(slots), first_of_req, spec)))
        if valid:
            return next((scene for scene, aligned in valid if aligned), valid[0][0])
    raise ValueError(f"no scene of at most {len(SLOTS)} objects satisfies {spec}")


def fill_template(template: str, rng: random.Random) -> tuple[str, Spec]:
    """Fill a template's fields at random; return its text and the spec the fields imply.

    Objects named in one prompt get different kinds and different colours (GenEval's
    two-object and attribute-binding prompts do the same).
    """
    fields = template_fields(template)
    n_objects = 2 if any(name.endswith("2") for name in fields) else 1
    kinds = rng.sample(KINDS, n_objects)
    colors = rng.sample(COLORS, n_objects)
    values: dict[str, str] = {}
    reqs = []
    for index, (kind, color) in enumerate(zip(kinds, colors, strict=True), start=1):
        names = {name for name in fields if name.endswith(str(index))}
        has_kind = bool(names & {f"k{index}", f"ks{index}", f"S{index}"})
        has_color = bool(names & {f"c{index}", f"C{index}"})
        count = None
        if names & {f"n{index}", f"N{index}"}:
            count = MAX_COLORED_COUNT if has_color else rng.choice(tuple(NUMBERS))
            values[f"n{index}"] = NUMBERS[count]
            values[f"N{index}"] = rng.choice(COUNT_PHRASES[count])
        values[f"k{index}"] = kind
        values[f"ks{index}"] = PLURALS[kind]
        values[f"S{index}"] = rng.choice(SHAPE_PHRASES[kind])
        values[f"c{index}"] = color
        values[f"C{index}"] = COLOR_PHRASE.format(thing=rng.choice(COLOR_THINGS[color]))
        reqs.append(Req(color if has_color else None, kind if has_kind else None, count))
    rels: tuple[Rel, ...] = ()
    if fields & {"rel", "R"}:
        relation = rng.choice(RELATIONS)
        values["rel"] = relation
        values["R"] = rng.choice(RELATION_CLAUSES[relation])
        rels = (Rel(0, relation, 1),)
    return with_articles(template.format(**values)), Spec(tuple(reqs), rels)


def sample_prompt(category: str, split: str, rng: random.Random) -> Prompt:
    """One random prompt of ``category`` from ``split``'s templates."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    text, spec = fill_template(rng.choice(TEMPLATES[category][split]), rng)
    scene = random_scene(spec, rng)
    return Prompt(text, category, spec, describe(scene), scene, split)


def vocabulary_words() -> set[str]:
    """Every word a prompt of either split can contain."""
    words = set(PLURALS.values()) | set(KINDS) | set(COLORS) | {"an"}
    for phrases in (NUMBERS.values(), RELATIONS, COLOR_PHRASE.format(thing="").split()):
        words.update(" ".join(phrases).split())
    for table in (COLOR_THINGS, SHAPE_PHRASES, COUNT_PHRASES, RELATION_CLAUSES):
        for phrases in table.values():
            words.update(" ".join(phrases).split())
    for by_split in TEMPLATES.values():
        for template in itertools.chain(*by_split.values()):
            for literal, _, _, _ in Formatter().parse(template):
                words.update(literal.split())
    return words
