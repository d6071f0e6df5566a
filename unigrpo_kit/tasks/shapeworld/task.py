"""The ShapeWorld task: one object that hands a trainer prompts, renders, edits and the judge."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from unigrpo_kit.registry import TASKS
from unigrpo_kit.tasks.random_source import as_rng
from unigrpo_kit.tasks.shapeworld import edits, judge, prompts, renderer
from unigrpo_kit.tasks.shapeworld import scene as scene_text
from unigrpo_kit.tasks.shapeworld import spec as spec_check
from unigrpo_kit.tasks.shapeworld.lexicon import CATEGORIES
from unigrpo_kit.tasks.shapeworld.prompts import Prompt
from unigrpo_kit.tasks.shapeworld.quality_metric import quality as image_quality
from unigrpo_kit.tasks.shapeworld.scene import Scene
from unigrpo_kit.tasks.shapeworld.spec import Spec

DEFAULT_EVAL_SIZE = 140  # 20 prompts per category
# Draws per eval prompt to find a text not yet in the eval set before accepting a repeat
# (small categories such as single_object have only a handful of distinct eval texts).
DISTINCT_TEXT_TRIES = 50


@TASKS.register_module()
class ShapeWorld:
    """ShapeWorld: 1-3 flat shapes in a 2x2 grid, GenEval-style and riddle prompts, a judge.

    Args:
        resolution: image side in pixels, 32 (default) or 64.
        jitter: most pixels (at 32 px) an object moves from its slot centre when rendering with
            a ``jitter_rng``; 0 renders every object exactly centred.
        riddle_weight: sampling weight of the ``riddle`` category; the six GenEval categories
            weigh 1 each.
        seed: seeds the generator that ``sample_prompts`` uses when given none.
    """

    categories: tuple[str, ...] = CATEGORIES

    def __init__(
        self, resolution: int = 32, jitter: int = 1, riddle_weight: float = 1.0, seed: int = 0
    ) -> None:
        renderer.check_resolution(resolution)
        if jitter < 0:
            raise ValueError(f"jitter must be a non-negative int of pixels, got {jitter!r}")
        if riddle_weight < 0:
            raise ValueError(f"riddle_weight must be >= 0, got {riddle_weight!r}")
        self.resolution = resolution
        self.jitter = jitter
        self.riddle_weight = riddle_weight
        self.rng = random.Random(seed)

    # Prompts -------------------------------------------------------------------------------

    def sample_prompts(
        self,
        n: int,
        split: str | Sequence[str] = "train",
        generator: random.Random | int | None = None,
        categories: Sequence[str] | None = None,
    ) -> list[Prompt]:
        """``n`` random prompts of ``split``; categories drawn with weight 1 (riddle:
        ``riddle_weight``), restricted to ``categories`` when given. ``split`` may name several
        splits: each prompt then draws its split uniformly (one split draws as before)."""
        rng = as_rng(generator, self.rng)
        chosen = tuple(categories) if categories is not None else self.categories
        unknown = [c for c in chosen if c not in self.categories]
        if unknown or not chosen:
            raise ValueError(
                f"categories {unknown or chosen} invalid; choose from {self.categories}"
            )
        weights = [self.riddle_weight if c == "riddle" else 1.0 for c in chosen]
        if sum(weights) <= 0:
            raise ValueError(f"categories {chosen} have zero total weight (riddle_weight=0?)")
        picks = rng.choices(chosen, weights=weights, k=n)
        if isinstance(split, str):
            return [prompts.sample_prompt(category, split, rng) for category in picks]
        splits = tuple(split)
        if not splits:
            raise ValueError("sample_prompts: split names no split; e.g. ('train', 'pretrain')")
        return [prompts.sample_prompt(c, rng.choice(splits), rng) for c in picks]

    def eval_prompts(
        self, n: int = DEFAULT_EVAL_SIZE, seed: int = 0, split: str = "eval"
    ) -> list[Prompt]:
        """A fixed set of ``split``'s prompts (the eval split by default; ``"train"`` asks how a
        policy does on the phrasings it was trained on): ``n`` prompts stratified over the 7
        categories (the first ``n % 7`` categories get one more), distinct texts where the
        category allows."""
        if split not in prompts.SPLITS:
            choices = ", ".join(prompts.SPLITS)
            raise ValueError(f"evaluation.split {split!r} is not a split; choose from {choices}")
        rng = random.Random(seed)
        result: list[Prompt] = []
        for index, category in enumerate(self.categories):
            quota = n // len(self.categories) + (index < n % len(self.categories))
            texts: set[str] = set()
            for _ in range(quota):
                for _ in range(DISTINCT_TEXT_TRIES):
                    prompt = prompts.sample_prompt(category, split, rng)
                    if prompt.text not in texts:
                        break
                texts.add(prompt.text)
                result.append(prompt)
        return result

    def vocabulary(self) -> list[str]:
        """Sorted words (whitespace tokens) of every prompt, reasoning and edit instruction."""
        words = prompts.vocabulary_words() | set(scene_text.COLORS) | set(scene_text.KINDS)
        words |= set(" ".join(scene_text.SLOTS).split())
        words |= {scene_text.CLAUSE_SEPARATOR.strip(), "an"}
        for template in edits.INSTRUCTION_TEMPLATES:
            words |= {w for w in template.split() if not w.startswith("{")}
        return sorted(words)

    # Scenes, reasoning and edits ----------------------------------------------------------

    @staticmethod
    def describe(scene: Scene) -> str:
        """Reasoning text of a scene (see ``scene.describe``)."""
        return scene_text.describe(scene)

    @staticmethod
    def parse_reasoning(text: str) -> Scene | None:
        """The scene a reasoning text describes, or None (see ``scene.parse_reasoning``)."""
        return scene_text.parse_reasoning(text)

    @staticmethod
    def satisfies(scene: Scene, spec: Spec) -> bool:
        """Whether the scene meets every constraint of the spec (symbolic judge)."""
        return spec_check.satisfies(scene, spec)

    @staticmethod
    def constraints_met(scene: Scene, spec: Spec) -> tuple[int, int]:
        """``(met, total)`` constraints of the spec that the scene meets."""
        return spec_check.constraints_met(scene, spec)

    @staticmethod
    def apply_edit(scene: Scene, instruction: str) -> Scene:
        """The scene after one edit instruction (ValueError if it does not parse or apply)."""
        return edits.apply_edit(scene, instruction)

    @staticmethod
    def edit_instruction(prompt: Prompt, scene: Scene) -> str:
        """The one instruction moving the scene toward ``prompt.spec``; ``"done"`` if met."""
        return edits.edit_instruction(prompt, scene)

    @staticmethod
    def perturb(scene: Scene, rng: random.Random) -> tuple[Scene, str]:
        """``(wrong_scene, instruction_that_fixes_it)`` with one attribute changed."""
        return edits.perturb(scene, rng)

    @staticmethod
    def ends_episode(reflection: str) -> bool:
        """Whether a reflection ends a multi-round episode: the model said ``done``."""
        return reflection == "done"

    def evaluate(self, engine, *, num_prompts: int, seed: int, split: str) -> dict[str, float]:
        """The judge's scores of an evaluation engine's episodes (``evaluation`` module)."""
        from unigrpo_kit.tasks.shapeworld.evaluation import evaluate

        return evaluate(self, engine, num_prompts=num_prompts, seed=seed, split=split)

    # Images ---------------------------------------------------------------------------------

    def render(self, scene: Scene, jitter_rng: random.Random | None = None) -> torch.Tensor:
        """Float32 image ``[3, R, R]`` in [0, 1]; jittered when ``jitter_rng`` is given."""
        return renderer.render(scene, self.resolution, jitter_rng, jitter=self.jitter)

    def render_batch(
        self, scenes: list[Scene], jitter_rng: random.Random | None = None
    ) -> torch.Tensor:
        """Float32 images ``[N, 3, R, R]`` in [0, 1]."""
        return renderer.render_batch(scenes, self.resolution, jitter_rng, jitter=self.jitter)

    @staticmethod
    def parse_image(image: torch.Tensor) -> list[judge.Detected]:
        """Objects the judge finds in one image ``[3, H, W]``."""
        return judge.parse_image(image)

    @staticmethod
    def parse_scene(image: torch.Tensor) -> Scene:
        """The image as a Scene, detections snapped to slots."""
        return judge.parse_scene(image)

    @staticmethod
    def score(image: torch.Tensor, spec: Spec) -> tuple[float, float]:
        """GenEval-style ``(strict, partial)`` of one image against a spec."""
        return judge.score(image, spec)

    @staticmethod
    def quality(image: torch.Tensor) -> float:
        """Quality in [0, 1] of one image (1 for clean renders)."""
        return image_quality(image)
