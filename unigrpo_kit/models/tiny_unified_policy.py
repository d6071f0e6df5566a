"""TinyUnified behind the policy protocol: the built-in model as a :class:`UnifiedPolicy`.

The sequence grammar of the built-in world lives here, not in the engine::

    <bos> prompt <think> reasoning </think> [image 1] <look> reflection </look> [image 2] ...

``</think>`` ends a reasoning and ``</look>`` a reflection (the stop tokens of the two text
roles); image-only training paints after ``<bos> prompt <think> </think>``; the null context of
classifier-free guidance is ``<bos> <think> </think>``. The context is TinyUnified's
:class:`~unigrpo_kit.models.layout.KVCache`, which already has the protocol's row operations.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..devices import resolve_device
from ..guard import require_finite_weights
from ..registry import MODELS
from ..rollout.episode import TextSegmentRecord
from ..samplers.schedules import shifted_sigmas
from .checkpoint import (
    POLICY_FILE,
    checkpoint_folder,
    load_model,
    load_weights,
    save_model,
    write_model_files,
)
from .layout import KVCache, TextSegment
from .protocol import TEXT_ROLES, EpisodeForward, completion_ids
from .tiny_unified import TinyUnified
from .tokenizer import WordTokenizer


def prompt_ids(tokenizer: WordTokenizer, texts: Sequence[str], suffix: Sequence[int]):
    """Left-padded ids [B, n] and mask of ``<bos> text`` followed by ``suffix``."""
    rows = [[tokenizer.bos_id, *tokenizer.encode(t), *suffix] for t in texts]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = True
    return ids, mask


class TinyUnifiedSession:
    """A :class:`~unigrpo_kit.models.protocol.TextSession` over TinyUnified after a cached
    context.

    ``prefill`` appends the left-padded given ids to ``context`` (None: start from nothing),
    ``decode`` appends one token per row. A row fed the pad token (it has finished) adds an
    invisible column, so what follows sees exactly the tokens the row generated. The sampler
    never feeds back its last token, so :meth:`finish` appends it and returns the cache of the
    whole text.
    """

    def __init__(self, model: TinyUnified, context: KVCache | None, pad_token_id: int):
        self.model = model
        self.context = context
        self.pad_token_id = pad_token_id

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        logits, cache = self.model.extend_text(self.context, input_ids, attention_mask.bool())
        self.cache = cache
        return logits[:, -1], cache

    def decode(self, state: KVCache, token_ids: torch.Tensor):
        ids = token_ids[:, None]
        logits, cache = self.model.extend_text(state, ids, ids != self.pad_token_id)
        self.cache = cache
        return logits[:, 0], cache

    def finish(self, tokens: torch.Tensor, mask: torch.Tensor) -> KVCache:
        """The cache after the whole generation, from the sample's ``tokens``, ``mask`` [B, T]."""
        last = tokens[:, -1:]
        return self.model.extend_text(self.cache, last, mask[:, -1:])[1]


@MODELS.register_module(name="TinyUnified")
class TinyUnifiedPolicy:
    """A small Bagel-style mixture-of-transformers over text tokens and image patches.

    The built-in unified policy: reasons, paints 32x32 RGB images in pixel space, looks at them
    and reflects. Built from a checkpoint (``checkpoint``: a shipped name such as
    ``"tiny-base"``, a checkpoint folder or a run's work dir) onto ``device`` ("auto", "cpu",
    "cuda", "cuda:N"), or from a model and tokenizer in memory (:meth:`from_parts`).
    """

    def __init__(
        self,
        checkpoint: str = "tiny-base",
        attention_backend: str = "auto",
        device: str = "auto",
    ):
        folder = checkpoint_folder(checkpoint)
        model, tokenizer = load_model(
            folder, device=resolve_device(device), attention_backend=attention_backend
        )
        self._setup(model, tokenizer)
        self.init_kwargs = {"attention_backend": attention_backend, "device": device}

    @classmethod
    def dry_run_spec(cls, model_cfg: dict, task, folder: Path) -> dict:
        """``--dry-run``: a random TinyUnified (d_model 32, one layer) over ``task``'s
        vocabulary saved into ``folder``; ``model_cfg`` pointed at it."""
        from .tiny_unified import TinyUnifiedConfig

        tokenizer = WordTokenizer(task.vocabulary())
        config = TinyUnifiedConfig(
            vocab_size=len(tokenizer),
            d_model=32,
            n_layers=1,
            n_heads=2,
            image_size=getattr(task, "resolution", 32),
            patch_size=8,
            banned_token_ids=tokenizer.never_generated_ids,
        )
        save_model(TinyUnified(config), tokenizer, folder)
        return {**model_cfg, "checkpoint": str(folder)}

    @classmethod
    def from_parts(cls, model: TinyUnified, tokenizer: WordTokenizer) -> TinyUnifiedPolicy:
        """The policy of a model and tokenizer already in memory (tests, tools)."""
        policy = cls.__new__(cls)
        policy._setup(model, tokenizer)
        policy.init_kwargs = {"attention_backend": model.attention_backend, "device": "auto"}
        return policy

    def _setup(self, model: TinyUnified, tokenizer: WordTokenizer) -> None:
        self.module = model
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_id
        self._reference: TinyUnifiedPolicy | None = None

    @property
    def config(self):
        return self.module.config

    @property
    def device(self) -> torch.device:
        return self.module.token_embedding.weight.device

    # ----------------------------------------------------------------- text
    def encode_prompts(self, texts: Sequence[str], *, reasoning: bool = True):
        tok = self.tokenizer
        suffix = [tok.think_id] if reasoning else [tok.think_id, tok.end_think_id]
        ids, mask = prompt_ids(tok, texts, suffix)
        return ids.to(self.device), mask.to(self.device)

    def stop_token_ids(self, role: str) -> tuple[int, ...]:
        if role not in TEXT_ROLES:
            raise ValueError(f"text role {role!r} is not one of {', '.join(TEXT_ROLES)}")
        tok = self.tokenizer
        return (tok.end_think_id,) if role == "reasoning" else (tok.end_look_id,)

    def decode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row[m]) for row, m in zip(ids, mask)]

    def encode_completion(self, texts: Sequence[str], role: str = "reasoning"):
        """Right-padded ids [B, L] and mask of each text followed by the role's stop token (a
        reference reasoning or reflection, as this model would write it)."""
        stop = self.stop_token_ids(role)[0]
        rows = [self.tokenizer.encode(text) for text in texts]
        return completion_ids(rows, stop, self.pad_token_id, self.device)

    def text_session(self, context: KVCache | None, stop_token_ids=None) -> TinyUnifiedSession:
        """A session after ``context``; finished rows are those fed the pad token, which this
        tokenizer never generates, so the stop tokens are not needed."""
        return TinyUnifiedSession(self.module, context, self.pad_token_id)

    def forward_episode(self, segments, context: KVCache | None = None) -> EpisodeForward:
        out = self.module(list(segments), context)
        return EpisodeForward(out.text_logits, out.cache)

    # ----------------------------------------------------------------- images
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.module.config
        return (cfg.channels, cfg.image_size, cfg.image_size)

    def velocity(self, context: KVCache, latents: torch.Tensor, sigma: torch.Tensor):
        return self.module.velocity(context, latents, sigma)

    def guided_velocity(self, context, null, latents, sigma, scale: float) -> torch.Tensor:
        v_cond = self.module.velocity(context, latents, sigma)
        v_null = self.module.velocity(null, latents, sigma)
        return v_null + scale * (v_cond - v_null)

    def sigma_schedule(self, num_steps: int, shift: float) -> torch.Tensor:
        """The recipe's ``rollout.shift`` on a linear grid (as in pretraining)."""
        return shifted_sigmas(num_steps, shift)

    def prompt_context(self, texts: Sequence[str]):
        """``<bos> prompt <think> </think>``: the prompt with an empty reasoning."""
        ids, mask = self.encode_prompts(texts, reasoning=False)
        context = self.forward_episode([TextSegment(ids, mask)]).context
        return [TextSegmentRecord(ids, mask)], context

    def null_context(self, batch: int) -> KVCache:
        tok = self.tokenizer
        ids = torch.tensor([[tok.bos_id, tok.think_id, tok.end_think_id]], device=self.device)
        ids = ids.expand(batch, 3)
        return self.module.extend_text(None, ids, torch.ones_like(ids, dtype=torch.bool))[1]

    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixel space: latents in [-1, 1] are the image; clamped and mapped to [0, 1]."""
        return (latents.clamp(-1, 1) + 1) / 2

    def look(self, context: KVCache, latents: torch.Tensor) -> KVCache:
        return self.module.extend_image(context, latents)

    def reflection_prompt(self, batch: int):
        look = torch.full((batch, 1), self.tokenizer.look_id, dtype=torch.long, device=self.device)
        return look, torch.ones_like(look, dtype=torch.bool)

    # ----------------------------------------------------------------- training surface
    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return self.module.expert_parameters()

    def reference(self) -> TinyUnifiedPolicy:
        """A frozen copy of the policy as it is now, made once."""
        if self._reference is None:
            frozen = copy.deepcopy(self.module).eval().requires_grad_(False)
            self._reference = TinyUnifiedPolicy.from_parts(frozen, self.tokenizer)
            self._reference.init_kwargs = dict(self.init_kwargs)
        return self._reference

    def train(self, mode: bool = True) -> TinyUnifiedPolicy:
        self.module.train(mode)
        return self

    def eval(self) -> TinyUnifiedPolicy:
        return self.train(False)

    def save(self, folder: Path, extra: dict | None = None) -> None:
        """``model.safetensors``, ``config.json`` and ``tokenizer.json`` (the kit's own layout),
        and ``unigrpo_policy.json``; ``extra`` joins ``config.json``."""
        require_finite_weights(self.module, f"save {folder}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)  # e.g. a part's sub-folder of a composition
        write_model_files(self.module, self.tokenizer, folder, extra)
        meta = {"type": "TinyUnified", "kwargs": {"checkpoint": ".", **self.init_kwargs}}
        (folder / POLICY_FILE).write_text(json.dumps(meta, indent=2))

    def load_weights(self, folder: Path) -> None:
        load_weights(self.module, Path(folder) / "model.safetensors")
