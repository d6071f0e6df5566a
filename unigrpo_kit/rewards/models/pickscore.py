"""PickScore: a CLIP model fine-tuned on human preferences between generated images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput

from .common import ClipTower, check_batch_size, prompt_texts


@REWARDS.register_module()
class PickScore(Reward):
    """PickScore of Kirstain et al., "Pick-a-Pic: An Open Dataset of User Preferences for
    Text-to-Image Generation" (NeurIPS 2023, arXiv 2305.01569), as its model card computes it:

        score(prompt, image) = exp(logit_scale) * cos(E_img(image), E_txt(prompt)) / scale

    with E_img / E_txt = ``CLIPModel.get_image_features`` / ``get_text_features`` on the
    processor's outputs and ``logit_scale`` the CLIP model's own learned temperature. The real
    weights are ``yuvalkirstain/PickScore_v1`` (a CLIP-H/14) with the processor of
    ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (``processor_path``). The same code scores any
    CLIP-style preference model converted to ``CLIPModel`` (an HPS-v2-style reward with other
    weights).

    ``scale`` divides the score: Flow-GRPO divides PickScore by 26 ("norm to 0-1",
    ``flow_grpo/pickscore_scorer.py``), i.e. ``scale=26``; the default 1 is the paper's score.

    Args:
        path: the CLIP model: a folder (``save_pretrained`` layout) or a hub id.
        processor_path: where the processor is, if not in ``path``.
        scale: the divisor above.
        batch_size, device, dtype: as :class:`~unigrpo_kit.rewards.models.CLIPScore`.

    Scores ``[N]`` float32; metric ``pickscore/cosine`` ``[N]``.
    """

    needs = frozenset({"images"})

    def __init__(
        self,
        path: str,
        processor_path: str | None = None,
        *,
        scale: float = 1.0,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        name = type(self).__name__
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"{name} reward.scale={scale!r} must be a positive number")
        self.scale = float(scale)
        self.batch_size = check_batch_size(batch_size, name)
        self.tower = ClipTower(
            path,
            name=name,
            processor_path=processor_path,
            device=device,
            dtype=dtype,
            offers_processor_path=True,
        )
        self.logit_scale = float(self.tower.model.logit_scale.detach().float().exp())

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        cosine = self.tower.cosines(prompt_texts(prompts, "PickScore"), images, self.batch_size)
        scores = self.logit_scale * cosine / self.scale
        return RewardOutput(scores, {"pickscore/cosine": cosine})
