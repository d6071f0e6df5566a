"""Slot-addressed edit instructions for multi-round work: parse, apply, plan, perturb.

Grammar (one instruction, lower case, words separated by single spaces)::

    make the <slot> shape <color>        make the <slot> shape a <kind>
    move the <slot> shape to <slot>      add a <color> <kind> at <slot>
    remove the <slot> shape              done

``<slot>`` is one of "top left", "top right", "bottom left", "bottom right"; "a" reads "an"
before "orange".
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import replace
from functools import lru_cache

from unigrpo_kit.tasks.shapeworld.lexicon import with_articles
from unigrpo_kit.tasks.shapeworld.scene import COLORS, KINDS, MAX_OBJECTS, SLOTS, Obj, Scene
from unigrpo_kit.tasks.shapeworld.spec import Spec, satisfies

DONE = "done"
INSTRUCTION_TEMPLATES: tuple[str, ...] = (
    "make the {slot} shape {color}",
    "make the {slot} shape a {kind}",
    "move the {slot} shape to {to}",
    "add a {color} {kind} at {slot}",
    "remove the {slot} shape",
    DONE,
)
# Breadth-first planning gives up beyond this many edits; every spec that prompts.py draws is
# reachable in at most 3 from any scene of at most 3 objects.
MAX_PLAN_DEPTH = 4

_SLOT = "(top left|top right|bottom left|bottom right)"
_COLOR = f"({'|'.join(COLORS)})"
_KIND = f"({'|'.join(KINDS)})"
_PATTERNS: dict[str, re.Pattern[str]] = {
    "recolor": re.compile(f"make the {_SLOT} shape {_COLOR}"),
    "rekind": re.compile(f"make the {_SLOT} shape an? {_KIND}"),
    "move": re.compile(f"move the {_SLOT} shape to {_SLOT}"),
    "add": re.compile(f"add an? {_COLOR} {_KIND} at {_SLOT}"),
    "remove": re.compile(f"remove the {_SLOT} shape"),
}


def _occupant(scene: Scene, slot_name: str, instruction: str) -> Obj:
    obj = scene.at(SLOTS.index(slot_name))
    if obj is None:
        raise ValueError(f"edit {instruction!r} names the empty {slot_name} slot; use a filled one")
    return obj


def apply_edit(scene: Scene, instruction: str) -> Scene:
    """The scene after one instruction; ValueError if it does not parse or cannot apply."""
    text = " ".join(instruction.split())
    if text == DONE:
        return scene
    parsed = next(
        ((op, match) for op, pattern in _PATTERNS.items() if (match := pattern.fullmatch(text))),
        None,
    )
    if parsed is None:
        raise ValueError(
            f"edit {instruction!r} does not parse; expected e.g. 'make the top left shape red', "
            "'make the top left shape a circle', 'move the top left shape to bottom right', "
            "'add a red circle at top right', 'remove the top left shape' or 'done'"
        )
    op, match = parsed
    if op == "add":
        slot_name = match.group(3)
        if scene.at(SLOTS.index(slot_name)) is not None:
            raise ValueError(f"edit {instruction!r} adds to the filled {slot_name} slot")
        return Scene(scene.objects + (Obj(match.group(1), match.group(2), SLOTS.index(slot_name)),))
    obj = _occupant(scene, match.group(1), instruction)
    others = tuple(o for o in scene.objects if o is not obj)
    if op == "recolor":
        return Scene(others + (replace(obj, color=match.group(2)),))
    if op == "rekind":
        return Scene(others + (replace(obj, kind=match.group(2)),))
    if op == "move":
        target = SLOTS.index(match.group(2))
        if scene.at(target) is not None:
            raise ValueError(f"edit {instruction!r} moves onto the filled {match.group(2)} slot")
        return Scene(others + (replace(obj, slot=target),))
    return Scene(others)


def _candidate_edits(scene: Scene, spec: Spec) -> list[str]:
    """Edits worth trying toward ``spec``: recolours and re-kinds to what the spec names,
    moves to empty slots, adding a required object, removals (in this preference order)."""
    colors = [c for c in COLORS if any(req.color == c for req in spec.reqs)]
    kinds = [k for k in KINDS if any(req.kind == k for req in spec.reqs)]
    edits = []
    for obj in scene.objects:
        slot = SLOTS[obj.slot]
        edits += [f"make the {slot} shape {c}" for c in colors if c != obj.color]
        edits += [f"make the {slot} shape a {k}" for k in kinds if k != obj.kind]
    for obj in scene.objects:
        edits += [f"move the {SLOTS[obj.slot]} shape to {SLOTS[s]}" for s in scene.empty_slots()]
    for req in spec.reqs:
        # Any colour (kind) meets a requirement that leaves it free; the first one keeps the
        # plan deterministic.
        color, kind = req.color or COLORS[0], req.kind or KINDS[0]
        edits += [f"add a {color} {kind} at {SLOTS[s]}" for s in scene.empty_slots()]
    edits += [f"remove the {SLOTS[obj.slot]} shape" for obj in scene.objects]
    return [with_articles(edit) for edit in edits]


@lru_cache(maxsize=65536)
def _first_step(scene: Scene, spec: Spec) -> str:
    if satisfies(scene, spec):
        return DONE
    frontier: deque[tuple[Scene, str, int]] = deque([(scene, DONE, 0)])
    seen = {scene}
    while frontier:
        current, first, depth = frontier.popleft()
        if depth == MAX_PLAN_DEPTH:
            break
        for edit in _candidate_edits(current, spec):
            after = apply_edit(current, edit)
            if after in seen:
                continue
            step = edit if depth == 0 else first
            if satisfies(after, spec):
                return step
            seen.add(after)
            frontier.append((after, step, depth + 1))
    raise ValueError(f"no sequence of at most {MAX_PLAN_DEPTH} edits makes {scene} satisfy {spec}")


def edit_instruction(prompt: object, scene: Scene) -> str:
    """The one instruction that moves ``scene`` toward satisfying ``prompt.spec``.

    ``"done"`` iff the scene already satisfies it; otherwise the first edit of a shortest edit
    sequence (breadth-first search), so each instruction brings the scene one edit closer.
    ``prompt`` is a :class:`Prompt` or anything with a ``spec`` attribute.
    """
    spec = getattr(prompt, "spec", None)
    if not isinstance(spec, Spec):
        raise ValueError(f"edit_instruction needs a Prompt with a Spec .spec, got {prompt!r}")
    return _first_step(scene, spec)


def perturb(scene: Scene, rng: random.Random) -> tuple[Scene, str]:
    """``(wrong_scene, fix)``: ``scene`` with one thing changed, and the instruction undoing it.

    The change is drawn uniformly from those possible: a colour, a kind, a slot, a missing
    object (only when two or more remain) or an extra one (only below ``MAX_OBJECTS``), so a
    wrong scene of a 1-3 object scene has 1-3 objects too.
    """
    if not scene.objects:
        raise ValueError("perturb needs a scene with at least one object, got an empty scene")
    changes = ["color", "kind"]
    if scene.empty_slots():
        changes.append("slot")
    if len(scene.objects) >= 2:
        changes.append("missing")
    if len(scene.objects) < MAX_OBJECTS and scene.empty_slots():
        changes.append("extra")
    change = rng.choice(changes)
    obj = rng.choice(scene.objects)
    others = tuple(o for o in scene.objects if o is not obj)
    slot = SLOTS[obj.slot]
    if change == "color":
        wrong = replace(obj, color=rng.choice([c for c in COLORS if c != obj.color]))
        return Scene(others + (wrong,)), f"make the {slot} shape {obj.color}"
    if change == "kind":
        wrong = replace(obj, kind=rng.choice([k for k in KINDS if k != obj.kind]))
        return Scene(others + (wrong,)), with_articles(f"make the {slot} shape a {obj.kind}")
    if change == "slot":
        moved = replace(obj, slot=rng.choice(scene.empty_slots()))
        return Scene(others + (moved,)), f"move the {SLOTS[moved.slot]} shape to {slot}"
    if change == "missing":
        return Scene(others), with_articles(f"add a {obj.color} {obj.kind} at {slot}")
    extra = Obj(rng.choice(COLORS), rng.choice(KINDS), rng.choice(scene.empty_slots()))
    return Scene(scene.objects + (extra,)), f"remove the {SLOTS[extra.slot]} shape"
