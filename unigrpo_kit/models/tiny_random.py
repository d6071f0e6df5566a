"""Tiny random models of the real Hugging Face classes, for tests and ``--dry-run``.

Nothing here downloads anything. :func:`tiny_tokenizer` trains a byte-level BPE in memory with
the ``tokenizers`` library and gives it a ChatML chat template; :func:`tiny_causal_lm` builds a
``Qwen2ForCausalLM`` or ``LlamaForCausalLM`` from its config class with a few thousand random
float32 weights; :func:`save_tiny_causal_lm` writes both with ``save_pretrained``, so that the
folder is read back exactly as a user's model folder is (``AutoModelForCausalLM`` /
``AutoTokenizer``). :func:`shrunk_config` keeps a real model's config (its ``model_type``, its
vocabulary) and shrinks its widths and depth, for a dry run of a real recipe on a small machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

UNK, EOS, IM_START, IM_END = "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# ChatML, as Qwen2 instruct models write it: one block per message, then the assistant's header.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DEFAULT_TEXTS = (
    "the cat sat on the mat",
    "a red circle and a blue square",
    "how many apples are there? there are three apples.",
    "what is 12 + 7? 12 + 7 = 19",
    "what is 3 * 4? 3 * 4 = 12",
    "20 - 8 = 12, 9 / 3 = 3, 5 + 5 = 10",
    "yes no maybe done answer: 0 1 2 3 4 5 6 7 8 9",
    "hello world, think step by step.",
)

FAMILIES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
}


def tiny_tokenizer(
    texts: Sequence[str] = DEFAULT_TEXTS,
    *,
    vocab_size: int = 320,
    bos_token: str | None = None,
    chat_template: bool = True,
    extra_special: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory on ``texts`` (any text encodes: the 256
    byte symbols are always in the vocabulary), with ``<unk>``, ``<|endoftext|>`` (eos and pad),
    ``<|im_start|>``, ``<|im_end|>``, an optional ``bos_token``, and (``chat_template=True``) a
    ChatML chat template; ``extra_special`` are more special tokens (a vision model's image
    tokens). ``vocab_size`` is an upper bound: the merges stop when ``texts`` run
    out of pairs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = [UNK, EOS, IM_START, IM_END, *extra_special] + ([bos_token] if bos_token else [])
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        eos_token=EOS,
        pad_token=EOS,
        bos_token=bos_token,
        additional_special_tokens=[IM_START, IM_END, *extra_special],
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_causal_lm(
    family: str = "qwen2",
    vocab_size: int | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    seed: int = 0,
    **overrides: Any,
) -> PreTrainedModel:
    """A random float32 ``Qwen2ForCausalLM`` (``family="qwen2"``) or ``LlamaForCausalLM``
    (``"llama"``) built from its config class, initialised under ``torch.manual_seed(seed)``
    without touching the global random state.

    ``tokenizer`` (when given) sets ``vocab_size`` and the bos / eos / pad ids; else pass
    ``vocab_size`` (the ids are then those of :func:`tiny_tokenizer`'s special tokens).
    ``overrides`` go to the config (e.g. ``num_key_value_heads=1``, ``initializer_range=0.2``).
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {', '.join(FAMILIES)}")
    if tokenizer is not None:
        vocab_size = len(tokenizer)
        ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    elif vocab_size is None:
        raise ValueError("tiny_causal_lm needs vocab_size or a tokenizer")
    else:
        ids = {"bos_token_id": None, "eos_token_id": 1, "pad_token_id": 1}
    config_class, model_class = FAMILIES[family]
    settings: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        **ids,
    }
    settings.update(overrides)
    config = config_class(**settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.float().eval()


def save_tiny_causal_lm(
    folder: str | Path,
    family: str = "qwen2",
    texts: Sequence[str] | None = None,
    *,
    chat_template: bool = True,
    **kw: Any,
) -> Path:
    """Build :func:`tiny_tokenizer` and :func:`tiny_causal_lm` and ``save_pretrained`` both into
    ``folder`` (created), which then loads like any model folder. The llama family's tokenizer
    gets a ``<s>`` bos token. With a chat template, the generation config stops on
    ``<|im_end|>`` as well as on eos, as instruct models' ``generation_config.json`` do.
    ``kw`` goes to :func:`tiny_causal_lm`. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(
        DEFAULT_TEXTS if texts is None else texts,
        bos_token="<s>" if family == "llama" else None,
        chat_template=chat_template,
    )
    model = tiny_causal_lm(family, tokenizer=tokenizer, **kw)
    if chat_template:
        im_end = tokenizer.convert_tokens_to_ids(IM_END)
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, im_end]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def tiny_vision_lm(tokenizer: PreTrainedTokenizerBase, *, seed: int = 0) -> PreTrainedModel:
    """A random float32 ``Qwen2_5_VLForConditionalGeneration`` built from its config class: a
    2-layer language model of width 32 (M-RoPE sections 2 + 3 + 3) and a 2-block vision tower
    of width 16 (patch 4, 2x2 merge, window attention in block 0, full in block 1), its token
    ids those of ``tokenizer``'s :data:`VISION_TOKENS`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    start, end, image, video = tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            patch_size=4,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=16,
            fullatt_block_indexes=[1],
            out_hidden_size=32,
            in_channels=3,
        ),
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.float().eval()


def save_tiny_vision_lm(
    folder: str | Path, texts: Sequence[str] | None = None, *, seed: int = 0
) -> Path:
    """A tiny random Qwen2.5-VL (:func:`tiny_vision_lm`), its ChatML tokenizer with the vision
    tokens (:func:`tiny_tokenizer`) and Qwen2-VL's image processor (patch 4, 2x2 merge, images
    of 16-64 px kept at their size) written with ``save_pretrained`` into ``folder``, which
    ``AutoModelForImageTextToText`` / ``AutoTokenizer`` / ``AutoImageProcessor`` then read as a
    user's model folder. The generation config stops on ``<|im_end|>`` and eos. Returns the
    folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(
        DEFAULT_TEXTS if texts is None else texts, extra_special=VISION_TOKENS
    )
    model = tiny_vision_lm(tokenizer, seed=seed)
    model.generation_config.eos_token_id = [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids(IM_END),
    ]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _tiny_image_processor().save_pretrained(folder)
    return folder


def _tiny_image_processor():
    """Qwen2-VL's image processor (the torchvision one where torchvision is installed, else the
    PIL one) with the tiny vision tower's patching."""
    settings = dict(
        patch_size=4, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=64 * 64
    )
    try:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

        return Qwen2VLImageProcessor(**settings)
    except ImportError:  # no torchvision
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        return Qwen2VLImageProcessorPil(**settings)


# What a shrunk config keeps small; keys a config lacks are left alone.
_SHRUNK = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "head_dim": 16,
    "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 64,
}


def shrunk_config(config: PretrainedConfig) -> PretrainedConfig:
    """A copy of a real model's ``config`` (same class and ``model_type``, same vocabulary, so
    the real tokenizer still fits) with hidden size 32, 2 layers, 2 attention and key/value
    heads of 16 dimensions and intermediate size 64: a random model of that architecture small
    enough for a dry run on a CPU. Per-layer lists (``layer_types``) are cut to 2 layers and
    mixture-of-experts configs keep at most 4 experts, 2 per token."""
    values = config.to_dict()
    for key, value in _SHRUNK.items():
        if key in values:
            values[key] = value
    if isinstance(values.get("layer_types"), list):
        values["layer_types"] = values["layer_types"][: _SHRUNK["num_hidden_layers"]]
    for key, most in (("num_experts", 4), ("num_local_experts", 4), ("num_experts_per_tok", 2)):
        if isinstance(values.get(key), int):
            values[key] = min(values[key], most)
    if "max_window_layers" in values:
        values["max_window_layers"] = min(values["max_window_layers"], 2)
    return type(config).from_dict(values)
