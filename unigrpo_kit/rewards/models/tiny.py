"""Tiny random reward models of the real Hugging Face classes, for tests and speed checks.

Nothing here downloads anything: every model is built from its ``transformers`` config class
with random float32 weights (``torch.manual_seed(seed)``, the global random state untouched),
every tokenizer and processor is built in memory, and each ``save_*`` function writes them with
``save_pretrained`` so that the folder loads exactly as a user's model folder does
(``AutoProcessor`` / ``CLIPModel`` / ``AutoModelForImageTextToText`` / ``AutoModel``):

- :func:`save_tiny_clip`: ``CLIPModel`` (vision 32x32 pixels in 8x8 patches, width 32) with a
  ``CLIPProcessor`` (``CLIPImageProcessor`` + a byte-level ``CLIPTokenizer``): CLIPScore,
  PickScore and the CLIP tower of Aesthetic;
- :func:`save_tiny_aesthetic_head`: a LAION aesthetic-predictor head state dict (``.pth`` or
  ``.safetensors``) whose input width is the CLIP projection width;
- :func:`save_tiny_llava`: ``LlavaForConditionalGeneration`` (a tiny ``CLIPVisionConfig`` tower,
  a tiny ``LlamaConfig`` language model) with a ``LlavaProcessor`` whose tokenizer has an
  ``<image>`` token and whose chat template puts the image before the question: VLMJudge;
- :func:`save_tiny_bert`: ``BertModel`` with a WordPiece ``BertTokenizer``: TextSimilarity.

They measure code paths and speed of the code around the model, never what a real model scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

# The byte-level CLIP tokenizer's special tokens, as OpenAI's CLIP names them.
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"

# The tiny VLM's chat template: ChatML, with each image of a message written as "<image>\n"
# before its text (the content-list format of processor.apply_chat_template).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Texts the tiny VLM tokenizer is trained on: "Yes", "yes", "No", "no" become single tokens.
VLM_TEXTS = (
    "Yes", "yes", "No", "no", "Yes.", "No.", "yes or no", "Answer yes or no.",
    "Does this image show: a red circle? Answer yes or no.",
    "a blue square left of a green triangle", "a photo of a cat on a mat",
)  # fmt: skip

BERT_WORDS = (
    "a an the of on in and or is are was to with for at by from this that it its "
    "cat dog sat mat red blue green circle square triangle photo image picture man woman "
    "child runs walks eats food park street city car house tree sky sun rain water happy sad "
    "big small quick brown fox jumps over lazy answer question yes no one two three"
).split()


def _seeded(build, seed: int):
    from .common import quiet_transformers

    quiet_transformers()  # no "Writing model shards" bars
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().float().eval()


def tiny_clip_tokenizer():
    """A ``CLIPTokenizer`` with no merges: the 256 byte-level symbols, each also with the
    end-of-word suffix ``</w>``, and ``<|startoftext|>`` (id 0) / ``<|endoftext|>`` (id 1, eos
    and pad, as OpenAI CLIP pads). Any text encodes, one token per byte."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {CLIP_BOS: 0, CLIP_EOS: 1}
    for symbol in alphabet + [f"{symbol}</w>" for symbol in alphabet]:
        vocab[symbol] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_clip_processor(image_size: int = 32):
    """A ``CLIPProcessor``: OpenAI CLIP's image processing (resize the short side, centre crop,
    its mean / std) at ``image_size`` pixels, and :func:`tiny_clip_tokenizer`."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tiny_clip_tokenizer())


def tiny_clip(*, projection_dim: int = 16, image_size: int = 32, seed: int = 0):
    """A random ``CLIPModel``: text and vision width 32, 2 layers, 2 heads, 77 text positions,
    ``image_size`` pixels in 8x8 patches, the vocabulary of :func:`tiny_clip_tokenizer` (eos id
    1, so the text is pooled at its first eos), projection width ``projection_dim``."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = tiny_clip_tokenizer()
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **common,
        ),
        vision_config=dict(image_size=image_size, patch_size=8, **common),
        projection_dim=projection_dim,
    )
    return _seeded(lambda: CLIPModel(config), seed)


def save_tiny_clip(folder: str | Path, *, projection_dim: int = 16, seed: int = 0) -> Path:
    """:func:`tiny_clip` and :func:`tiny_clip_processor` written with ``save_pretrained`` into
    ``folder`` (created). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_clip(projection_dim=projection_dim, seed=seed).save_pretrained(folder)
    tiny_clip_processor().save_pretrained(folder)
    return folder


def tiny_aesthetic_head_state(
    in_features: int, *, relu: bool = False, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights in the LAION aesthetic predictor's layout (``layers.<i>.weight/bias`` of
    Linear(in, 1024), Linear(1024, 128), Linear(128, 64), Linear(64, 16), Linear(16, 1); the
    indices of the linear MLP, or of its ReLU variant with ``relu=True``)."""
    from .aesthetic import LaionAestheticHead

    widths = [in_features, 1024, 128, 64, 16, 1]
    head = _seeded(lambda: LaionAestheticHead(widths, relu=relu), seed)
    return {name: tensor.contiguous() for name, tensor in head.state_dict().items()}


def save_tiny_aesthetic_head(
    file: str | Path, in_features: int, *, relu: bool = False, seed: int = 0
) -> Path:
    """:func:`tiny_aesthetic_head_state` saved to ``file``: ``safetensors`` when it ends in
    ``.safetensors``, else ``torch.save`` (a plain state dict, as LAION ships ``.pth``)."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    state = tiny_aesthetic_head_state(in_features, relu=relu, seed=seed)
    if file.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(file))
    else:
        torch.save(state, file)
    return file


def tiny_vlm_tokenizer(texts: Sequence[str] = VLM_TEXTS):
    """The kit's in-memory byte-level BPE (``models.tiny_random.tiny_tokenizer``) trained on
    ``texts``, plus an ``<image>`` special token."""
    from unigrpo_kit.models.tiny_random import IM_END, IM_START, tiny_tokenizer

    tokenizer = tiny_tokenizer(texts, chat_template=False)
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END, "<image>"]})
    return tokenizer


def save_tiny_llava(folder: str | Path, *, seed: int = 0) -> Path:
    """A random ``LlavaForConditionalGeneration`` and its ``LlavaProcessor`` written with
    ``save_pretrained`` into ``folder`` (created). Vision: a ``CLIPVisionConfig`` tower of width
    32 over 28x28 pixels in 14x14 patches (4 image tokens after the CLS feature is dropped, the
    "default" strategy); language: a ``LlamaConfig`` of width 32, 2 layers. The processor: a
    ``CLIPImageProcessor`` at 28 pixels, :func:`tiny_vlm_tokenizer`, ``patch_size=14``, one
    additional (CLS) image token, and :data:`LLAVA_CHAT_TEMPLATE`. Returns the folder."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_vlm_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=image_token_id,
        image_seq_length=4,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = _seeded(lambda: LlavaForConditionalGeneration(config), seed)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_bert_tokenizer(words: Sequence[str] = BERT_WORDS):
    """A lower-casing WordPiece ``BertTokenizer`` over ``words`` and the ASCII letters, digits
    and punctuation (so any English text encodes), with BERT's special tokens."""
    import string

    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    symbols = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    vocab: dict[str, int] = {}
    for token in [*specials, *symbols, *pieces, *words]:
        vocab.setdefault(token, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def save_tiny_bert(folder: str | Path, *, seed: int = 0) -> Path:
    """A random ``BertModel`` (width 32, 2 layers, 2 heads, 128 positions) and
    :func:`tiny_bert_tokenizer` written with ``save_pretrained`` into ``folder`` (created), the
    layout of a sentence-transformers model folder's transformer. Returns the folder."""
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    _seeded(lambda: BertModel(config), seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
