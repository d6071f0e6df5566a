"""ShapeWorld: the built-in task (scenes, renderer, prompts, edits) and its judge."""

from unigrpo_kit.tasks.shapeworld.edits import apply_edit, edit_instruction, perturb
from unigrpo_kit.tasks.shapeworld.judge import (
    Detected,
    parse_image,
    parse_images,
    parse_scene,
    score,
    score_batch,
)
from unigrpo_kit.tasks.shapeworld.lexicon import CATEGORIES
from unigrpo_kit.tasks.shapeworld.prompts import Prompt
from unigrpo_kit.tasks.shapeworld.quality_metric import quality, quality_batch
from unigrpo_kit.tasks.shapeworld.renderer import render, render_batch
from unigrpo_kit.tasks.shapeworld.scene import (
    COLORS,
    KINDS,
    PALETTE,
    SLOTS,
    Obj,
    Scene,
    describe,
    parse_reasoning,
)
from unigrpo_kit.tasks.shapeworld.spec import (
    RELATIONS,
    Rel,
    Req,
    Spec,
    constraints_met,
    satisfies,
)
from unigrpo_kit.tasks.shapeworld.task import ShapeWorld

__all__ = [
    "CATEGORIES",
    "COLORS",
    "KINDS",
    "PALETTE",
    "RELATIONS",
    "SLOTS",
    "Detected",
    "Obj",
    "Prompt",
    "Rel",
    "Req",
    "Scene",
    "ShapeWorld",
    "Spec",
    "apply_edit",
    "constraints_met",
    "describe",
    "edit_instruction",
    "parse_image",
    "parse_images",
    "parse_reasoning",
    "parse_scene",
    "perturb",
    "quality",
    "quality_batch",
    "render",
    "render_batch",
    "satisfies",
    "score",
    "score_batch",
]
