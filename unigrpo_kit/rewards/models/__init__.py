"""Rewards read off pretrained models, each loaded from a folder or hub id (``path=``):

- :class:`CLIPScore`: w * max(cos(E_img, E_txt), 0) of a CLIP model (Hessel et al., 2021);
- :class:`PickScore`: exp(logit_scale) * cos(E_img, E_txt) of a preference-tuned CLIP
  (Kirstain et al., 2023), optionally divided by ``scale`` (Flow-GRPO: 26);
- :class:`Aesthetic`: the LAION aesthetic predictor v2, an MLP on the L2-normalised CLIP
  ViT-L/14 image embedding;
- :class:`VLMJudge`: VQAScore-style P("yes") of an image-text-to-text model asked whether the
  image shows the prompt (Lin et al., 2024);
- :class:`TextSimilarity`: cosine of mean-pooled sentence embeddings between the text and a
  reference (all-MiniLM-L6-v2's recipe).

Each computes in batches (``batch_size``) under ``torch.no_grad()`` on ``device``, prepares
images with the model's own processor, returns float32 scores ``[N]``, and fails on a missing or
unloadable ``path`` with a one-line ValueError naming ``reward.path``. ``transformers`` is
imported when a reward is built, not when this package is. :mod:`.tiny` builds tiny random
folders of the same classes for tests and ``tools/reward_speed.py``.
"""

from .aesthetic import Aesthetic, LaionAestheticHead
from .clip_score import CLIPScore
from .pickscore import PickScore
from .text_similarity import TextSimilarity
from .vlm_judge import VLMJudge

__all__ = [
    "Aesthetic",
    "CLIPScore",
    "LaionAestheticHead",
    "PickScore",
    "TextSimilarity",
    "VLMJudge",
]
