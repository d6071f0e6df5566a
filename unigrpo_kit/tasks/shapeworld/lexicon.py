"""The words of ShapeWorld's prompts: carrier templates per category and split, riddle atoms.

Split rule (reproducible, no randomness involved): every category has three disjoint sets of
carrier templates. ``"pretrain"`` is what the shipped base model was supervised on (with the
canonical reasoning), ``"train"`` is what RL samples its prompts from, ``"eval"`` is held out
from both. As SD3 had never seen GenEval-style training prompts before Flow-GRPO trained on
them, the RL prompts are sentences the base model was never taught: the same prefixes ("draw",
"show me", "a picture of", "there is", ...) and bodies, in combinations pretraining did not
use. The eval templates are other combinations again. The *knowledge* -- the riddle atoms
below (grass -> green, "three corners" -> triangle, "one more than two" -> 3, "where you start
reading" -> left of) and the plain words -- is shared by all splits. Train and eval templates
use only words that the pretraining text (prompts, reasoning, edit instructions) also uses, so
the base model has seen every word it is asked about (tests check it).

Template fields, by object (1 or 2): ``k`` kind, ``ks`` plural kind, ``S`` riddle shape
phrase, ``c`` colour, ``C`` riddle colour phrase, ``n`` number word, ``N`` riddle count; and
for the relation from object 1 to object 2: ``rel`` plain, ``R`` riddle clause.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "single_object",
    "two_objects",
    "counting",
    "colors",
    "position",
    "attribute_binding",
    "riddle",
)

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "single_object": {
        "pretrain": ("a {k1}", "draw a {k1}", "a picture of a {k1}", "there is a {k1}"),
        "train": (
            "draw a picture of a {k1}",
            "show me a picture of a {k1}",
        ),
        "eval": ("show me a {k1}", "a picture with a {k1}"),
    },
    "two_objects": {
        "pretrain": (
            "a {k1} and a {k2}",
            "draw a {k1} and a {k2}",
            "a picture with a {k1} and a {k2}",
        ),
        "train": (
            "a picture of a {k1} and a {k2}",
            "draw a picture with a {k1} and a {k2}",
        ),
        "eval": ("show me a {k1} and a {k2}", "there is a {k1} and a {k2}"),
    },
    "counting": {
        "pretrain": ("{n1} {ks1}", "draw {n1} {ks1}", "a picture of {n1} {ks1}"),
        "train": (
            "there is {n1} {ks1}",
            "draw a picture of {n1} {ks1}",
            "show me a picture of {n1} {ks1}",
        ),
        "eval": ("show me {n1} {ks1}", "a picture with {n1} {ks1}"),
    },
    "colors": {
        "pretrain": (
            "a {c1} {k1}",
            "draw a {c1} {k1}",
            "a {k1} that is {c1}",
            "show me a {c1} {k1}",
        ),
        "train": (
            "a picture with a {c1} {k1}",
            "draw a {k1} that is {c1}",
            "show me a {k1} that is {c1}",
        ),
        "eval": ("a picture of a {c1} {k1}", "there is a {c1} {k1}"),
    },
    "position": {
        "pretrain": (
            "a {k1} {rel} a {k2}",
            "draw a {k1} {rel} a {k2}",
            "a picture of a {k1} {rel} a {k2}",
        ),
        "train": (
            "a picture with a {k1} {rel} a {k2}",
            "draw a picture of a {k1} {rel} a {k2}",
            "show me a picture of a {k1} {rel} a {k2}",
        ),
        "eval": ("show me a {k1} {rel} a {k2}", "there is a {k1} {rel} a {k2}"),
    },
    "attribute_binding": {
        "pretrain": (
            "a {c1} {k1} and a {c2} {k2}",
            "draw a {c1} {k1} and a {c2} {k2}",
            "a picture with a {c1} {k1} and a {c2} {k2}",
        ),
        "train": (
            "a picture of a {c1} {k1} and a {c2} {k2}",
            "there is a {c1} {k1} and a {c2} {k2}",
            "a {k1} that is {c1} and a {c2} {k2}",
            "a {c1} {k1} and a {k2} that is {c2}",
        ),
        "eval": (
            "show me a {c1} {k1} and a {c2} {k2}",
            "a {k1} that is {c1} and a {k2} that is {c2}",
        ),
    },
    "riddle": {
        "pretrain": (
            "a {k1} {C1}",
            "a {k1} that is {C1}",
            "draw a shape {C1}",
            "a {S1}",
            "draw a {c1} {S1}",
            "a {S1} , {C1}",
            "{N1} {ks1}",
            "draw {N1} {ks1} {C1}",
            "a {k1} and a {k2} , the {k1} {R}",
            "a {k1} {C1} and a {k2} {C2}",
        ),
        "train": (
            "there is a {k1} {C1}",
            "a picture with a {S1}",
            "show me {N1} {ks1}",
            "a {S1} and a {k2}",
            "a {k1} and a {S2}",
            "a picture of a {k1} and a {k2} , the {k1} {R}",
            "there is a {k1} {C1} and a {k2} {C2}",
            "draw a {S1} that is {C1}",
        ),
        "eval": (
            "show me a {k1} {C1}",
            "a picture of a {S1}",
            "there is a {S1} that is {C1}",
            "a picture of {N1} {ks1}",
            "draw a {S1} and a {S2}",
            "show me a {k1} and a {k2} , the {k1} {R}",
        ),
    },
}

NUMBERS: dict[int, str] = {2: "two", 3: "three"}

# Riddle atoms, shared by both splits. Colours named by world knowledge ("the colour of X").
COLOR_THINGS: dict[str, tuple[str, ...]] = {
    "red": ("a tomato", "a strawberry"),
    "green": ("grass", "a leaf"),
    "blue": ("the sky", "the sea"),
    "yellow": ("a ripe banana", "a lemon"),
    "purple": ("a plum", "a grape"),
    "orange": ("a carrot", "a pumpkin"),
}
COLOR_PHRASE = "the colour of {thing}"

# Kinds named by their properties; each phrase reads after "a".
SHAPE_PHRASES: dict[str, tuple[str, ...]] = {
    "triangle": ("shape with three corners", "shape with three sides"),
    "square": ("shape with four equal sides", "shape with four corners"),
    "circle": ("shape with no corners", "round shape"),
}

# Counts by arithmetic.
COUNT_PHRASES: dict[int, tuple[str, ...]] = {
    2: ("one plus one", "one more than one", "three minus one", "one less than three"),
    3: ("two plus one", "one more than two", "four minus one", "one less than four"),
}

# Relations by description; each clause says where object 1 is relative to object 2.
RELATION_CLAUSES: dict[str, tuple[str, ...]] = {
    "left of": ("where you start reading", "where reading starts"),
    "right of": ("where you stop reading", "where reading ends"),
    "above": ("nearer the sky", "closer to the sky"),
    "below": ("nearer the ground", "closer to the ground"),
}


def with_articles(text: str) -> str:
    """Turn ``"a"`` into ``"an"`` before a vowel sound ("an orange circle")."""
    words = text.split()
    for i, word in enumerate(words[:-1]):
        following = words[i + 1]
        if word == "a" and following[0] in "aeiou" and not following.startswith("one"):
            words[i] = "an"
    return " ".join(words)
