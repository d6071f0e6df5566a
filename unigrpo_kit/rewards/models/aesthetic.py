"""The LAION aesthetic predictor (v2): an MLP on a CLIP ViT-L/14 image embedding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput

from .common import ClipTower, check_batch_size, one_line, pil_images

# The indices of the Linear layers in ``layers`` (an nn.Sequential) of LAION's two MLPs:
# "linear" (sac+logos+ava1-l14-linearMSE.pth, the one DDPO and Flow-GRPO use): Linear, Dropout,
# Linear, Dropout, Linear, Dropout, Linear, Linear; "relu" (ava+logos-l14-reluMSE.pth): a ReLU
# after each Linear but the last.
LAYOUTS = {"linear": (0, 2, 4, 6, 7), "relu": (0, 3, 6, 9, 11)}
DROPOUTS = (0.2, 0.2, 0.1)


class LaionAestheticHead(nn.Module):
    """LAION's ``MLP`` (improved-aesthetic-predictor, ``simple_inference.py``) with the
    ``widths`` of its five Linear layers (LAION: 768, 1024, 128, 64, 16, 1): its ``layers``
    Sequential, so that its state dict keys are the released file's (``layers.<i>.weight``).
    ``forward``: ``x`` [N, widths[0]] -> [N]."""

    def __init__(self, widths: Sequence[int], *, relu: bool = False) -> None:
        super().__init__()
        if len(widths) != 6:
            raise ValueError(f"a LAION aesthetic head has 5 Linear layers; got widths {widths}")
        modules: list[nn.Module] = []
        for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            modules.append(nn.Linear(width_in, width_out))
            if i < 4 and relu:
                modules.append(nn.ReLU())
            if i < 3:
                modules.append(nn.Dropout(DROPOUTS[i]))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


def read_state(file: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` (safetensors) or anything else (``torch.load`` with
    ``weights_only=True``: tensors and containers only, never arbitrary pickled code). A
    Lightning checkpoint's ``state_dict`` entry is taken; no key prefix but ``layers.``."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors")
    return state


def head_from_state(state: dict[str, torch.Tensor], in_features: int) -> LaionAestheticHead:
    """The :class:`LaionAestheticHead` that ``state`` fits (the layout from its Linear indices,
    the widths from its weight shapes), loaded strictly; ValueError when it is not one."""
    indices = sorted({int(key.split(".")[1]) for key in state if key.startswith("layers.")})
    layout = next((name for name, fixed in LAYOUTS.items() if tuple(indices) == fixed), None)
    if layout is None:
        raise ValueError(
            f"its keys are not LAION's layers.{{{','.join(map(str, LAYOUTS['linear']))}}} or "
            f"layers.{{{','.join(map(str, LAYOUTS['relu']))}}} .weight/.bias "
            f"(got {sorted(state)[:4]}...)"
        )
    weights = [state.get(f"layers.{i}.weight") for i in LAYOUTS[layout]]
    if any(w is None or w.dim() != 2 for w in weights):
        raise ValueError("a Linear weight is missing or not a matrix")
    widths = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    if widths[0] != in_features or widths[-1] != 1:
        raise ValueError(
            f"the head maps {widths[0]} -> {widths[-1]} features; the CLIP model's image "
            f"embedding has {in_features} and the head must end in 1"
        )
    head = LaionAestheticHead(widths, relu=layout == "relu")
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(one_line(error)) from None
    return head


@REWARDS.register_module()
class Aesthetic(Reward):
    """The LAION aesthetic predictor v2 (Schuhmann, github.com/christophschuhmann/
    improved-aesthetic-predictor, ``simple_inference.py``), the aesthetic reward of DDPO
    (arXiv 2305.13301) and Flow-GRPO:

        score(image) = MLP(e / ||e||_2),   e = E_img(image) = CLIP ViT-L/14 image embedding

    E_img is ``CLIPModel.get_image_features`` (OpenAI CLIP's ``encode_image``) of the image as
    the CLIP processor prepares it; MLP is LAION's head, read from ``head_path`` (the released
    ``sac+logos+ava1-l14-linearMSE.pth``: Linear(768, 1024), Dropout(0.2), Linear(1024, 128),
    Dropout(0.2), Linear(128, 64), Dropout(0.1), Linear(64, 16), Linear(16, 1), no
    nonlinearity; the ReLU variant's key layout is recognised too). The head's input width is
    the CLIP model's projection width, so a tiny CLIP takes a tiny head. The scale is LAION's
    ratings, roughly 1 to 10.

    Args:
        path: the CLIP model (``openai/clip-vit-large-patch14`` for LAION's head): a folder or a
            hub id; its processor is read from the same place.
        head_path: a local ``.pth`` / ``.pt`` (``torch.load(weights_only=True)``) or
            ``.safetensors`` state dict in LAION's layout (``layers.<i>.weight/bias``).
        batch_size, device, dtype: as :class:`~unigrpo_kit.rewards.models.CLIPScore` (the head
            runs in float32).

    Scores ``[N]`` float32, the head's output; no metrics.
    """

    needs = frozenset({"images"})

    def __init__(
        self,
        path: str,
        head_path: str,
        *,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        name = type(self).__name__
        self.batch_size = check_batch_size(batch_size, name)
        if not isinstance(head_path, (str, Path)) or not Path(head_path).expanduser().is_file():
            raise ValueError(
                f"{name} reward.head_path={head_path!r} is not a file; point it at LAION's "
                "head state dict (e.g. sac+logos+ava1-l14-linearMSE.pth, or .safetensors)"
            )
        head_file = Path(head_path).expanduser()
        try:
            state = read_state(head_file)
        except Exception as error:  # a pickle with code, a corrupt file
            raise ValueError(
                f"{name} reward.head_path={str(head_path)!r} cannot be read as a state dict "
                f"of tensors ({one_line(error)})"
            ) from None
        self.tower = ClipTower(path, name=name, device=device, dtype=dtype)
        in_features = int(self.tower.model.config.projection_dim)
        try:
            head = head_from_state(state, in_features)
        except ValueError as error:
            raise ValueError(
                f"{name} reward.head_path={str(head_path)!r} is not a LAION aesthetic head for "
                f"this CLIP: {one_line(error)}"
            ) from None
        self.head = head.to(self.tower.device).eval().requires_grad_(False)

    @torch.no_grad()
    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        embeds = self.tower.image_embeddings(pil_images(images), self.batch_size)
        scores = self.head(F.normalize(embeds, dim=-1).to(self.tower.device)).float().cpu()
        return RewardOutput(scores, {})
