"""CLIPScore: reference-free image-text alignment from a CLIP model's embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput

from .common import ClipTower, check_batch_size, prompt_texts


def check_template(template: Any, name: str) -> str:
    """``reward.template`` as a format string whose only field is ``{prompt}``."""
    try:
        if not isinstance(template, str):
            raise TypeError(type(template).__name__)
        template.format(prompt="")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as error:
        raise ValueError(
            f"{name} reward.template={template!r} must be a format string whose only field is "
            f"{{prompt}} ({error!r})"
        ) from None
    return template


@REWARDS.register_module()
class CLIPScore(Reward):
    """CLIP-S of Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image
    Captioning" (EMNLP 2021, arXiv 2104.08718), eq. 1:

        CLIP-S(c, v) = w * max(cos(E_img(v), E_txt(c)), 0),     w = 2.5 in the paper

    with E_img = ``CLIPModel.get_image_features`` of the image as the model's processor prepares
    it, E_txt = ``get_text_features`` of ``template.format(prompt=prompt text)`` (truncated to
    the text tower's 77 positions). The paper prefixes captions with "A photo depicts"
    (``template="A photo depicts {prompt}"``); the default scores the prompt as written.
    torchmetrics' CLIPScore is ``w=100``. Flow-GRPO's CLIPScore reward uses
    ``openai/clip-vit-large-patch14``.

    Args:
        path: a folder (``CLIPModel`` + processor, ``save_pretrained`` layout) or a hub id.
        w: the scale of the clipped cosine.
        template: the text scored against each image.
        batch_size: images (and distinct texts) per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: the model's dtype, ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``;
            scores are float32 either way.

    Scores ``[N]`` float32; metric ``clipscore/cosine`` ``[N]``: the unclipped cosine.
    """

    needs = frozenset({"images"})

    def __init__(
        self,
        path: str,
        w: float = 2.5,
        *,
        template: str = "{prompt}",
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        name = type(self).__name__
        self.w = float(w)
        self.template = check_template(template, name)
        self.batch_size = check_batch_size(batch_size, name)
        self.tower = ClipTower(path, name=name, device=device, dtype=dtype)

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        captions = [self.template.format(prompt=t) for t in prompt_texts(prompts, "CLIPScore")]
        cosine = self.tower.cosines(captions, images, self.batch_size)
        return RewardOutput(self.w * cosine.clamp(min=0), {"clipscore/cosine": cosine})
