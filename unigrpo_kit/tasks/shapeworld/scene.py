"""ShapeWorld's objects and scenes, and the reasoning text that spells a scene out.

A scene puts 0-4 flat shapes into the four fixed slots of a 2x2 grid, at most one per slot
(the world itself samples 1-3). The canonical *reasoning* for a prompt is the scene written
out one object per clause, in slot order, clauses joined by ``" ; "``::

    "red circle top left ; blue square bottom right"
"""

from __future__ import annotations

from dataclasses import dataclass

# Flat RGB colours in [0, 1]. Pairwise distances are >= 0.39 and every colour is >= 0.7 from
# the background, so Gaussian pixel noise of std 0.05 almost never moves a pixel to a
# different nearest colour (half the closest gap is ~4 std).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.10),
    "green": (0.10, 0.60, 0.15),
    "blue": (0.10, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.50, 0.15, 0.65),
    "orange": (0.95, 0.45, 0.00),
}
BACKGROUND: tuple[float, float, float] = (0.94, 0.94, 0.94)
COLORS: tuple[str, ...] = tuple(PALETTE)
KINDS: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {kind: kind + "s" for kind in KINDS}
# Slot i sits in row i // 2 and column i % 2 of the 2x2 grid.
SLOTS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
MAX_OBJECTS = 3  # most objects a prompt asks for, and most a reasoning text may describe
CLAUSE_SEPARATOR = " ; "


def slot_row_col(slot: int) -> tuple[int, int]:
    """Row (0 top, 1 bottom) and column (0 left, 1 right) of a slot index 0..3."""
    return slot // 2, slot % 2


def slot_center(slot: int) -> tuple[float, float]:
    """Centre ``(x, y)`` of a slot as fractions of the image width and height."""
    row, col = slot_row_col(slot)
    return (col + 0.5) / 2, (row + 0.5) / 2


@dataclass(frozen=True)
class Obj:
    """One flat shape: a palette colour name, a kind, and a slot index 0..3."""

    color: str
    kind: str
    slot: int

    def __post_init__(self) -> None:
        if self.color not in PALETTE:
            raise ValueError(f"Obj color {self.color!r} is not one of {', '.join(COLORS)}")
        if self.kind not in KINDS:
            raise ValueError(f"Obj kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.slot not in range(len(SLOTS)):
            raise ValueError(f"Obj slot {self.slot!r} must be an int in 0..{len(SLOTS) - 1}")


@dataclass(frozen=True)
class Scene:
    """Objects in distinct slots, stored sorted by slot so that equal scenes compare equal."""

    objects: tuple[Obj, ...] = ()

    def __post_init__(self) -> None:
        objects = tuple(sorted(self.objects, key=lambda obj: obj.slot))
        slots = [obj.slot for obj in objects]
        if len(set(slots)) != len(slots):
            raise ValueError(f"Scene has two objects in one slot (slots {slots}); one per slot")
        object.__setattr__(self, "objects", objects)

    def at(self, slot: int) -> Obj | None:
        """The object in ``slot``, or None when the slot is empty."""
        return next((obj for obj in self.objects if obj.slot == slot), None)

    def empty_slots(self) -> list[int]:
        """Slot indices with no object, ascending."""
        taken = {obj.slot for obj in self.objects}
        return [slot for slot in range(len(SLOTS)) if slot not in taken]


def describe(scene: Scene) -> str:
    """The reasoning text of a scene: ``"<color> <kind> <slot>"`` clauses in slot order."""
    return CLAUSE_SEPARATOR.join(f"{o.color} {o.kind} {SLOTS[o.slot]}" for o in scene.objects)


def parse_reasoning(text: str) -> Scene | None:
    """The scene a reasoning text describes, or None when it is not a valid scene.

    Invalid: an unknown word, a clause not of the form ``color kind slot``, two objects in
    one slot, or fewer than 1 or more than ``MAX_OBJECTS`` objects. Clause order is free.
    """
    words = text.split()
    if not words:
        return None
    clauses: list[list[str]] = [[]]
    for word in words:
        if word == CLAUSE_SEPARATOR.strip():
            clauses.append([])
        else:
            clauses[-1].append(word)
    if len(clauses) > MAX_OBJECTS:
        return None
    objects = []
    for clause in clauses:
        if len(clause) != 4:
            return None
        color, kind, slot_name = clause[0], clause[1], " ".join(clause[2:])
        if color not in PALETTE or kind not in KINDS or slot_name not in SLOTS:
            return None
        objects.append(Obj(color, kind, SLOTS.index(slot_name)))
    if len({obj.slot for obj in objects}) != len(objects):
        return None
    return Scene(tuple(objects))
