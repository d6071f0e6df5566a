"""Mean brightness: a sanity-check reward whose direction anyone can see in the samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput


@REWARDS.register_module()
class Brightness(Reward):
    """The images' mean pixel value, or its negative:

        score_i = sign * mean_{c, h, w} image_i[c, h, w],   images in [0, 1]

    Not a goal but a probe: it depends on the whole picture, so a policy gradient that works
    at all moves it within a few dozen steps, and ``sign=-1`` checks the other direction. If an
    image recipe cannot raise it, the trouble is in the optimization (a regularizer, the rate),
    not in how hard the real reward is (docs/training.md, image-only section). ``log``: a
    reward config (e.g. the judge) whose metrics are logged beside it. Metric
    ``brightness`` ``[N]``.
    """

    needs = frozenset({"images"})

    def __init__(self, sign: float = 1.0, log: dict | Reward | None = None) -> None:
        if sign not in (1, -1):
            raise ValueError(f"Brightness sign must be 1 or -1, got {sign!r}")
        self.sign = float(sign)
        self.log = log if log is None or isinstance(log, Reward) else REWARDS.build(log)
        if self.log is not None:
            self.needs = self.needs | self.log.needs

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        brightness = images.float().mean(dim=tuple(range(1, images.dim())))
        metrics = {"brightness": brightness}
        if self.log is not None:
            metrics = {**self.log(prompts=prompts, images=images, texts=texts).metrics, **metrics}
        return RewardOutput(self.sign * brightness, metrics)
