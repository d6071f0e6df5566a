"""Tiny random diffusers pipelines of the real classes, for tests and ``--dry-run``.

Nothing here downloads anything. Every part is built from its own config class with a few
thousand random float32 weights, the tokenizers are made in memory (CLIP's byte-level BPE
trained with the ``tokenizers`` library, T5's unigram vocabulary from a word list), and the
pipeline is written with ``save_pretrained``, so that the folder loads exactly as a user's
pipeline folder does: ``StableDiffusion3Pipeline.from_pretrained(folder)`` /
``FluxPipeline.from_pretrained(folder)`` (or ``DiffusionPipeline``) read it with no kit code and
``pipe(prompt, height=32, width=32)`` runs.

- :func:`save_tiny_sd3`: ``SD3Transformer2DModel`` (1 joint block, 4 heads of width 8, patch 2),
  two ``CLIPTextModelWithProjection`` (width 16, projection 32: the pooled conditioning is their
  concatenation, 64), a ``T5EncoderModel`` (width 32, the joint attention width: the two CLIP
  widths, concatenated to 32, are padded to it as SD3 does), an ``AutoencoderKL`` (4 latent
  channels, two blocks: 2x downsampling) and ``FlowMatchEulerDiscreteScheduler(shift=3.0)``.
- :func:`save_tiny_flux`: ``FluxTransformer2DModel`` (1 double and 1 single block, 2 heads of
  width 16, guidance embedding; in_channels = 4 x the VAE's latent channels, the 2x2 packing), a
  ``CLIPTextModel`` (its pooled output), a ``T5EncoderModel``, an ``AutoencoderKL`` with FLUX's
  scaling and shift factors, and the scheduler with FLUX.1-dev's dynamic (resolution-dependent)
  shifting. :func:`save_tiny_flux_kontext`: the same parts as a ``FluxKontextPipeline``.

The default resolution of both is 32 px (latents 4 x 16 x 16: 64 image tokens).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from string import ascii_letters, digits
from typing import Any

import torch

# Words every tiny tokenizer knows as one token (any text still encodes: CLIP's BPE has the 256
# byte symbols, T5's unigram the letters and digits, and <unk>).
DEFAULT_WORDS = (
    "a an the and or of with in on at to is are that this there one two three four five "
    "picture image photo draw show me paint make add remove left right top bottom middle "
    "centre center above below next near far big small large tiny red green blue yellow "
    "purple orange black white grey gray pink brown circle circles square squares triangle "
    "triangles star shape shapes cat dog house tree sky sun moon car apple banana grape leaf "
    "carrot grass ground water done yes no 0 1 2 3 4 5 6 7 8 9 , ; . ! ?"
).split()

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"


def _corpus(words: Iterable[str] | None) -> list[str]:
    """Sentences to train the tokenizers on: the default words and ``words``, each alone and in
    a few short phrases (so that frequent pairs merge)."""
    vocabulary = list(dict.fromkeys([*DEFAULT_WORDS, *(words or ())]))
    lines = list(vocabulary)
    for i in range(0, len(vocabulary), 6):
        lines.append(" ".join(vocabulary[i : i + 6]))
    return lines


def tiny_clip_tokenizer(
    words: Iterable[str] | None = None, *, vocab_size: int = 1000, model_max_length: int = 32
):
    """A ``CLIPTokenizer`` whose byte-level BPE (CLIP's normalizer, pre-tokenizer and ``</w>``
    word ends) is trained in memory on the default words and ``words`` (room for every word to
    merge into one token); ``<|startoftext|>`` is bos, ``<|endoftext|>`` eos, pad and unk.
    ``model_max_length`` is the text length the pipelines pad to (the text encoder's
    positions)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    backend = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=CLIP_EOS))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[CLIP_BOS, CLIP_EOS],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(words), trainer)
    model = json.loads(backend.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    # every byte symbol, word-inside and word-final, so that any text encodes without <unk>
    for symbol in sorted(alphabet):
        for token in (symbol, symbol + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_t5_tokenizer(words: Iterable[str] | None = None):
    """A ``T5Tokenizer`` (the unigram model T5's tokenizer is) over the default words and
    ``words``: ``<pad>`` 0, ``</s>`` 1 (appended to every text), ``<unk>`` 2, then one piece per
    word (``▁word`` at a word's start, ``word`` inside one) and the single characters, so that
    a known word is one token and any other text still encodes; no sentinel tokens. The
    unigram scores favour whole words (a word's piece scores more than its characters)."""
    from transformers import T5Tokenizer

    vocabulary = list(dict.fromkeys([*DEFAULT_WORDS, *(words or ())]))
    characters = sorted({c for word in vocabulary for c in word} | set(ascii_letters + digits))
    scores = {T5_PAD: 0.0, T5_EOS: 0.0, T5_UNK: 0.0, "▁": -3.0}
    for piece, score in [
        *(("▁" + word, -5.0) for word in vocabulary),
        *((word, -6.0) for word in vocabulary),
        *((c, -8.0) for c in characters),
    ]:
        scores.setdefault(piece, score)
    return T5Tokenizer(vocab=list(scores.items()), extra_ids=0)


def _clip_config(tokenizer, *, hidden_size: int, projection_dim: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        projection_dim=projection_dim,
        num_hidden_layers=2,  # SD3 reads the penultimate hidden state
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5_encoder(tokenizer, d_model: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _vae(latent_channels: int, scaling_factor: float, shift_factor: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=2,  # 4 and 8 channels per group, as a real VAE has a few per group
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _save(pipe, folder: str | Path) -> Path:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    return folder


def tiny_sd3_pipeline(seed: int = 0, *, words: Iterable[str] | None = None, **transformer: Any):
    """A random float32 ``StableDiffusion3Pipeline`` in memory (see the module docstring),
    initialised under ``torch.manual_seed(seed)`` without touching the global random state;
    ``words`` join the tokenizers' training text; ``transformer`` overrides the
    ``SD3Transformer2DModel`` config (``patch_size``, ``num_layers``, ``sample_size``...)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    clip_tokenizer = tiny_clip_tokenizer(words)
    t5_tokenizer = tiny_t5_tokenizer(words)
    settings = dict(
        sample_size=16,  # latent pixels (the pipeline's default height is this x 2)
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,  # = heads x head width, as in SD3
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
    )
    settings.update(transformer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = _clip_config(clip_tokenizer, hidden_size=16, projection_dim=32)
        pipe = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**settings),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=_vae(settings["in_channels"], scaling_factor=1.5305, shift_factor=0.0609),
            text_encoder=CLIPTextModelWithProjection(clip),
            tokenizer=clip_tokenizer,
            text_encoder_2=CLIPTextModelWithProjection(clip),
            tokenizer_2=clip_tokenizer,
            text_encoder_3=_t5_encoder(t5_tokenizer, settings["joint_attention_dim"]),
            tokenizer_3=t5_tokenizer,
        )
    return pipe


def tiny_flux_pipeline(
    seed: int = 0,
    *,
    words: Iterable[str] | None = None,
    pipeline_class: str = "FluxPipeline",
    **transformer: Any,
):
    """A random float32 ``FluxPipeline`` in memory (see the module docstring), initialised under
    ``torch.manual_seed(seed)`` without touching the global random state; ``words`` join the
    tokenizers' training text; ``pipeline_class``: ``"FluxPipeline"`` or
    ``"FluxKontextPipeline"`` (the same parts); ``transformer`` overrides the
    ``FluxTransformer2DModel`` config."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    clip_tokenizer = tiny_clip_tokenizer(words)
    t5_tokenizer = tiny_t5_tokenizer(words)
    settings = dict(
        patch_size=1,
        in_channels=16,  # 2x2 patches of the VAE's 4 latent channels, packed
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    settings.update(transformer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = getattr(diffusers, pipeline_class)(
            transformer=FluxTransformer2DModel(**settings),
            # FLUX.1-dev's scheduler config: resolution-dependent (dynamic) shifting
            scheduler=FlowMatchEulerDiscreteScheduler(
                shift=3.0,
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
            vae=_vae(settings["in_channels"] // 4, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=CLIPTextModel(
                _clip_config(
                    clip_tokenizer,
                    hidden_size=settings["pooled_projection_dim"],
                    projection_dim=settings["pooled_projection_dim"],
                )
            ),
            tokenizer=clip_tokenizer,
            text_encoder_2=_t5_encoder(t5_tokenizer, settings["joint_attention_dim"]),
            tokenizer_2=t5_tokenizer,
        )
    return pipe


def save_tiny_sd3(folder: str | Path, seed: int = 0, **kw: Any) -> Path:
    """:func:`tiny_sd3_pipeline` written into ``folder`` with ``save_pretrained``; the folder."""
    return _save(tiny_sd3_pipeline(seed, **kw), folder)


def save_tiny_flux(folder: str | Path, seed: int = 0, **kw: Any) -> Path:
    """:func:`tiny_flux_pipeline` written into ``folder`` with ``save_pretrained``; the
    folder."""
    return _save(tiny_flux_pipeline(seed, **kw), folder)


def save_tiny_flux_kontext(folder: str | Path, seed: int = 0, **kw: Any) -> Path:
    """:func:`tiny_flux_pipeline` as a ``FluxKontextPipeline`` (the same parts: FLUX.1 Kontext
    is FLUX.1's architecture) written into ``folder`` with ``save_pretrained``; the folder."""
    return _save(tiny_flux_pipeline(seed, pipeline_class="FluxKontextPipeline", **kw), folder)


__all__ = [
    "save_tiny_flux_kontext",
    "save_tiny_flux",
    "save_tiny_sd3",
    "tiny_clip_tokenizer",
    "tiny_flux_pipeline",
    "tiny_sd3_pipeline",
    "tiny_t5_tokenizer",
]
