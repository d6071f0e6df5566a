"""The reward protocol: every reward scores a batch of N episodes and says what it needs.

A reward is called with keywords only::

    reward(prompts=[...N prompts], images=Tensor[N, 3, H, W] or None, texts=[...N str] or None)
        -> RewardOutput(scores=Tensor[N] float32, metrics={name: Tensor[N]})

Its class attribute ``needs`` (a subset of {"images", "texts"}) tells a trainer what to pass;
a needed input that is missing, or any input whose length is not N, raises a one-line
ValueError. Subclasses implement :meth:`Reward.compute`, which receives validated inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

INPUTS = frozenset({"images", "texts"})


@dataclass
class RewardOutput:
    """Scores ``[N]`` float32 (higher is better; NaN marks an episode the reward could not
    score) and per-episode metrics, each ``[N]``.

    ``components``: for a composite reward that asks for per-reward group normalisation, each
    part's ``(weight, scores [N])``; the trainer then computes one advantage per part within
    each group and sums them with the weights (see ``advantages.group_advantages``).
    """

    scores: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    components: dict[str, tuple[float, torch.Tensor]] | None = None


class Reward:
    """Base class of rewards: validates inputs, then calls :meth:`compute`."""

    needs: frozenset[str] = frozenset()

    def __call__(
        self,
        *,
        prompts: Sequence[Any],
        images: torch.Tensor | None = None,
        texts: Sequence[str] | None = None,
    ) -> RewardOutput:
        name = type(self).__name__
        n = len(prompts)
        if "images" in self.needs and images is None:
            raise ValueError(f"{name} needs images=Tensor[N, 3, H, W]; got images=None")
        if "texts" in self.needs and texts is None:
            raise ValueError(f"{name} needs texts=[N strings]; got texts=None")
        if images is not None and (images.dim() != 4 or images.shape[:2] != (n, 3)):
            raise ValueError(
                f"{name} needs images of shape [N={n}, 3, H, W] (one per prompt); "
                f"got {tuple(images.shape)}"
            )
        if texts is not None and len(texts) != n:
            raise ValueError(f"{name} needs one text per prompt ({n}); got {len(texts)} texts")
        output = self.compute(prompts=prompts, images=images, texts=texts)
        if output.scores.shape != (n,):
            raise RuntimeError(f"{name} returned scores of shape {tuple(output.scores.shape)}")
        return output

    def compute(
        self,
        *,
        prompts: Sequence[Any],
        images: torch.Tensor | None,
        texts: Sequence[str] | None,
    ) -> RewardOutput:
        """Score validated inputs; ``scores`` must have shape ``[len(prompts)]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute()")


def specs_of(prompts: Sequence[Any], reward_name: str) -> list[Any]:
    """The ``.spec`` of each prompt; a clear error when a prompt has none."""
    missing = [i for i, prompt in enumerate(prompts) if not hasattr(prompt, "spec")]
    if missing:
        raise ValueError(
            f"{reward_name} needs prompts with a .spec (ShapeWorld Prompt); "
            f"prompt {missing[0]} is a {type(prompts[missing[0]]).__name__}"
        )
    return [prompt.spec for prompt in prompts]
