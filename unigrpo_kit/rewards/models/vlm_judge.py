"""A vision-language model as a judge: VQAScore-style P("Yes") that an image shows its prompt."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput

from .common import (
    check_batch_size,
    check_dtype,
    chunks,
    load_or_fail,
    local_or_hub,
    pil_images,
    pretrained,
    prompt_texts,
    quiet_transformers,
    resolve_reward_device,
)

DEFAULT_QUESTION = "Does this image show: {prompt}? Answer yes or no."


def first_token_ids(tokenizer: Any, words: Sequence[str], key: str, name: str) -> list[int]:
    """The first token id of each word as the tokenizer encodes it alone
    (``tokenizer(word, add_special_tokens=False)["input_ids"][0]``), duplicates removed."""
    if isinstance(words, str) or not words or not all(isinstance(w, str) and w for w in words):
        raise ValueError(f"{name} {key}={words!r} must be a non-empty list of non-empty words")
    ids: list[int] = []
    for word in words:
        encoded = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not encoded:
            raise ValueError(f"{name} {key}: the tokenizer encodes {word!r} as no token")
        token = int(encoded[0])
        if token not in ids:
            ids.append(token)
    return ids


@REWARDS.register_module()
class VLMJudge(Reward):
    """VQAScore-style judge (Lin et al., "Evaluating Text-to-Visual Generation with
    Image-to-Text Generation", ECCV 2024, arXiv 2404.01291): ask an image-text-to-text model
    whether the image shows the prompt and read the answer's first-token probabilities.

    The model sees, through its processor's chat template with the generation prompt, one user
    turn ``[image, question.format(prompt=prompt text)]``. At the answer position a (the
    logits after the last prompt token, as ``generate`` would sample its first token) the
    score is a softmax over the yes / no tokens only (the default ``question`` is this kit's;
    VQAScore's is given below):

        score = sum_{y in Y} exp(l_a[y]) / (sum_{y in Y} exp(l_a[y]) + sum_{n in M} exp(l_a[n]))

    Y = the first token of each of ``yes_words`` (default "Yes", "yes") and M of ``no_words``
    ("No", "no"), each encoded alone by the processor's tokenizer
    (``tokenizer(word, add_special_tokens=False).input_ids[0]``; duplicates counted once;
    :attr:`yes_ids` / :attr:`no_ids`). The word alone is meant to give the token a model
    starts its answer with: a SentencePiece tokenizer with a dummy prefix (LLaMA's, in
    LLaVA-1.5) gives "▁Yes", as after "ASSISTANT:"; a byte-level one (Qwen2-VL's) gives "Yes",
    as after "assistant\\n". Check ``yes_ids`` against a tokenizer that does neither. With
    ``yes_words=["Yes"]`` and ``no_words=["No"]`` the score is the two-logit softmax.
    VQAScore itself is P(answer "Yes") under the softmax over
    the whole vocabulary, with the question 'Does this figure show "{prompt}"? Please answer
    yes or no.'; that probability is the metric ``vlmjudge/p_yes_vocab`` (the vocabulary
    softmax's mass on Y).

    Batches are right-padded (``padding_side="right"``), so every row's tokens sit
    at the positions they have alone; only the answer positions' logits are computed
    (``logits_to_keep``) when the model's forward takes it.

    Args:
        path: a folder or hub id that ``AutoModelForImageTextToText`` and ``AutoProcessor``
            load, whose processor has a chat template and takes one image per text as
            ``processor(images=[...], text=[...])`` (tested with LLaVA,
            ``LlavaForConditionalGeneration``; other families are untested here).
        question: the user's question, a format string with a ``{prompt}`` field.
        yes_words, no_words: the answers whose first tokens are compared.
        batch_size: images per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``; the softmax is float32.

    Scores ``[N]`` float32 in [0, 1]; metric ``vlmjudge/p_yes_vocab`` ``[N]``.
    """

    needs = frozenset({"images"})

    def __init__(
        self,
        path: str,
        question: str = DEFAULT_QUESTION,
        *,
        yes_words: Sequence[str] = ("Yes", "yes"),
        no_words: Sequence[str] = ("No", "no"),
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        name = type(self).__name__
        quiet_transformers()
        try:
            if not isinstance(question, str) or "{prompt}" not in question:
                raise ValueError("no {prompt} field")
            question.format(prompt="")
        except (KeyError, IndexError, ValueError, AttributeError) as error:
            raise ValueError(
                f"{name} reward.question={question!r} must be a format string whose only field "
                f"is {{prompt}} ({error!r})"
            ) from None
        self.question = question
        self.batch_size = check_batch_size(batch_size, name)
        self.device = resolve_reward_device(device, name)
        self.dtype = check_dtype(dtype, name)
        path = local_or_hub(path, "reward.path", name)
        self.model = load_or_fail(
            lambda p: pretrained(AutoModelForImageTextToText, p, self.dtype),
            path,
            "reward.path",
            name,
            "an image-text-to-text model (AutoModelForImageTextToText)",
        )
        self.processor = load_or_fail(
            AutoProcessor.from_pretrained, path, "reward.path", name, "a processor"
        )
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or not getattr(self.processor, "chat_template", None):
            raise ValueError(
                f"{name} reward.path={path!r} has no processor with a tokenizer and a chat "
                "template; VLMJudge asks its question through the chat template"
            )
        tokenizer.padding_side = "right"
        self.yes_ids = first_token_ids(tokenizer, yes_words, "reward.yes_words", name)
        self.no_ids = first_token_ids(tokenizer, no_words, "reward.no_words", name)
        shared = set(self.yes_ids) & set(self.no_ids)
        if shared:
            raise ValueError(
                f"{name} reward.yes_words={list(yes_words)!r} and reward.no_words="
                f"{list(no_words)!r} share first tokens {sorted(shared)}; choose words that "
                "the tokenizer starts differently"
            )
        self.model.to(self.device).eval().requires_grad_(False)
        forward = inspect.signature(type(self.model).forward).parameters
        self._keeps_logits = "logits_to_keep" in forward

    def inputs(self, images: list[Any], questions: Sequence[str]) -> Any:
        """The processor's batch (right-padded tensors) for PIL ``images`` and ``questions``:
        one chat per image, ``[image, question]`` in a user turn, the generation prompt
        after."""
        chats = [
            self.processor.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": question}],
                    }
                ],
                add_generation_prompt=True,
                tokenize=False,
            )
            for question in questions
        ]
        return self.processor(
            images=images, text=chats, padding=True, padding_side="right", return_tensors="pt"
        )

    @torch.no_grad()
    def answer_logits(self, images: list[Any], questions: Sequence[str]) -> torch.Tensor:
        """float32 logits [B, V] at each row's answer position (after its last real token)."""
        batch = self.inputs(images, questions)
        mask = batch["attention_mask"]
        width = mask.shape[1]
        last = width - 1 - mask.flip(1).long().argmax(1)  # the last visible column of each row
        kwargs = {
            key: (
                value.to(self.device, self.dtype)
                if torch.is_floating_point(value)
                else value.to(self.device)
            )
            for key, value in batch.items()
            if isinstance(value, torch.Tensor)
        }
        if self._keeps_logits:
            columns, which = torch.unique(last, return_inverse=True)
            logits = self.model(**kwargs, logits_to_keep=columns.to(self.device)).logits
            rows, columns = torch.arange(len(last), device=self.device), which.to(self.device)
            return logits[rows, columns].float().cpu()
        logits = self.model(**kwargs).logits
        rows = torch.arange(len(last), device=self.device)
        return logits[rows, last.to(self.device)].float().cpu()

    def compute(
        self, *, prompts: Sequence[Any], images: torch.Tensor, texts: Sequence[str] | None
    ) -> RewardOutput:
        pictures = pil_images(images)
        questions = [self.question.format(prompt=t) for t in prompt_texts(prompts, "VLMJudge")]
        logits = torch.cat(
            [
                self.answer_logits(pictures[part], questions[part])
                for part in chunks(len(pictures), self.batch_size)
            ]
        )
        yes = logits[:, self.yes_ids].logsumexp(-1)
        no = logits[:, self.no_ids].logsumexp(-1)
        p_yes = torch.sigmoid(yes - no)  # = e^yes / (e^yes + e^no)
        p_yes_vocab = (yes - logits.logsumexp(-1)).exp()
        return RewardOutput(p_yes, {"vlmjudge/p_yes_vocab": p_yes_vocab})
