"""The base of the diffusers flow-matching policies (see the package docstring):
:class:`DiffusersFlowPolicy`, which each family subclasses (:mod:`.sd3`, :mod:`.flux`)."""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...registry import MODELS
from ...rollout.episode import ConditionRecord
from ..checkpoint import POLICY_FILE
from ..protocol import PARTS, EpisodeForward
from .checkpoints import (
    LORA_FILE,
    TRANSFORMER_DIR,
    _import_peft,
    _load_lora,
    _load_pipeline,
    _load_transformer,
    _local_config,
    _one_line,
    _pipeline_class_name,
    _save_lora,
    _saved_lora_config,
    _transformer_folder,
)
from .context import PromptEmbeddings

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
ATTENTION_BACKENDS = ("auto", "sdpa", "xformers")
# What diffusers' LoRA training scripts target when no target_modules are given.
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# Distinct prompt texts whose encodings are kept (a group's G rows share one; a step has a few).
PROMPT_CACHE_SIZE = 64
# Images decoded per VAE call (a 1024 px decode is memory-hungry).
DECODE_CHUNK = 8


def _quiet_progress_bars() -> None:
    """No diffusers / transformers progress bars (loading parts, denoising): the run has its
    own."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def _family_of(path: str) -> type[DiffusersFlowPolicy]:
    """The policy class of the pipeline at ``path`` (by its ``_class_name``)."""
    from . import FAMILIES  # the families subclass DiffusersFlowPolicy: imported at call time

    name = _pipeline_class_name(path)
    if name not in FAMILIES:
        raise ValueError(
            f"model.path={path!r} holds a {name}, which no policy supports; supported "
            f"pipelines: {', '.join(FAMILIES)}"
        )
    return FAMILIES[name]


@MODELS.register_module(name="DiffusersFlowPolicy")
class DiffusersFlowPolicy:
    """A diffusers flow-matching pipeline as an image policy; see the package docstring
    (:mod:`unigrpo_kit.models.diffusers`).

    **Convention.** Flow matching (Lipman et al., arXiv 2210.02747) as rectified flow in SD3
    (Esser et al., arXiv 2403.03206): ``x_sigma = (1 - sigma) x0 + sigma noise`` and the
    transformer predicts ``v = noise - x0``; diffusers' ``FlowMatchEulerDiscreteScheduler``
    steps ``x_next = x + (sigma_next - sigma) v``, which is the kit's
    :class:`~unigrpo_kit.samplers.flow.FlowODE`, so :meth:`velocity` is the transformer's output
    as it is (no sign flip, no rescaling). The sigma schedule is the pipeline's
    (:meth:`sigma_schedule`).

    **Classifier-free guidance** (Ho & Salimans, arXiv 2207.12598), as the pipelines compute it:
    ``v = v_u + w (v_c - v_u)``, v_u from the negative prompt's encodings
    (:meth:`null_context`), with one batched transformer call over [null; cond]. Guidance is the
    recipe's ``rollout.guidance_scale`` (1: none).

    Args (the recipe's ``model.*`` keys):
        path: a diffusers pipeline folder (``save_pretrained`` layout), or a hub id.
        resolution: the image side in pixels; a multiple of what the VAE and the patching take
            (SD3: VAE scale x patch size; Flux: VAE scale x 2, the 2x2 packing).
        lora: None (full fine-tuning of the transformer) or ``peft.LoraConfig`` arguments
            (``r``, ``lora_alpha``, ``target_modules`` (default: the attention projections
            ``to_q``, ``to_k``, ``to_v``, ``to_out.0``), ``lora_dropout``...).
        adapter: a folder holding a LoRA in diffusers' format (``pytorch_lora_weights.safetensors``,
            what :meth:`save` writes under LoRA) to load, trainable, over ``path``; exclusive
            with ``lora``.
        transformer: a fully trained transformer to use instead of ``path``'s: a folder in the
            ``save_pretrained`` layout, or a folder with such a ``transformer/`` sub-folder
            (what :meth:`save` writes without LoRA); exclusive with ``lora`` and ``adapter``.
        dtype: ``"float32"``, or ``"bfloat16"``: the transformer runs under bfloat16 autocast
            (float32 master weights; encoders and VAE stay float32).
        gradient_checkpointing: ``transformer.enable_gradient_checkpointing()`` (non-reentrant).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        max_sequence_length: T5 tokens of a prompt (None: the pipeline's default, 256 for SD3,
            512 for Flux).
        guidance: Flux's distilled guidance (the embedding FLUX.1-dev takes, the pipeline's
            ``guidance_scale``); unused by SD3 and by a transformer without ``guidance_embeds``.
        negative_prompt: the text of the null context (SD3's and Flux's true CFG negative).
        attention_backend: ``"auto"`` (xformers' memory-efficient attention on CUDA when it
            runs, else PyTorch SDPA; always SDPA on the CPU), ``"sdpa"`` or ``"xformers"``
            (an error if it cannot run). :attr:`attention_backend_used` says which runs.
    """

    pipeline_class_name: str = ""  # set by each family
    default_resolution_hint = 512

    def __new__(cls, path: Any = None, *args: Any, **kwargs: Any):
        # type="DiffusersFlowPolicy": the family of the folder (copies call __new__(cls) bare).
        if cls is DiffusersFlowPolicy and path is not None:
            cls = _family_of(str(path))
        return super().__new__(cls)

    def __init__(
        self,
        path: str,
        *,
        resolution: int = 512,
        lora: dict | None = None,
        adapter: str | None = None,
        transformer: str | None = None,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        device: str = "auto",
        max_sequence_length: int | None = None,
        guidance: float = 3.5,
        negative_prompt: str = "",
        attention_backend: str = "auto",
    ) -> None:
        from ...devices import resolve_device
        from . import FAMILIES

        _quiet_progress_bars()
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ValueError(
                f"model.path={path!r} is empty; set it to a diffusers pipeline folder "
                "(model_index.json and one sub-folder per part) or a hub id"
            )
        if dtype not in DTYPES:
            raise ValueError(f"model.dtype={dtype!r} is not supported; use float32 or bfloat16")
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"model.attention_backend={attention_backend!r} is unknown; use one of "
                f"{', '.join(ATTENTION_BACKENDS)}"
            )
        choices = {"lora": lora, "adapter": adapter, "transformer": transformer}
        given = [key for key, value in choices.items() if value is not None]
        if len(given) > 1:
            raise ValueError(
                f"model.{given[0]} and model.{given[1]} are exclusive: a LoRA (model.lora, or a "
                "saved one in model.adapter) or a fully trained transformer (model.transformer)"
            )
        if lora is not None and not isinstance(lora, dict):
            raise ValueError(
                f"model.lora must be None or a dict of LoraConfig arguments, got {lora!r}"
            )
        path = str(path)
        if Path(path).expanduser().is_dir():
            path = str(Path(path).expanduser().resolve())
        name = _pipeline_class_name(path)
        if name != self.pipeline_class_name:
            hint = (
                f"use type='{FAMILIES[name].__name__}' or 'DiffusersFlowPolicy'"
                if name in FAMILIES
                else f"supported pipelines: {', '.join(FAMILIES)}"
            )
            raise ValueError(
                f"model.path={path!r} holds a {name}, not the {self.pipeline_class_name} that "
                f"{type(self).__name__} trains; {hint}"
            )
        peft = _import_peft() if lora is not None or adapter is not None else None
        lora_file = None
        if adapter is not None:
            lora_file = Path(adapter).expanduser() / LORA_FILE
            if not lora_file.is_file():
                raise ValueError(
                    f"model.adapter={adapter!r} holds no {LORA_FILE}; point it at a folder "
                    "written by a LoRA policy's save() (diffusers' LoRA format)"
                )
        transformer_dir = None
        if transformer is not None:
            transformer_dir = _transformer_folder(transformer)

        self._kwargs = dict(
            path=path,
            resolution=resolution,
            lora=lora,
            adapter=adapter,
            transformer=transformer,
            dtype=dtype,
            gradient_checkpointing=gradient_checkpointing,
            device=device,
            max_sequence_length=max_sequence_length,
            guidance=guidance,
            negative_prompt=negative_prompt,
            attention_backend=attention_backend,
        )
        self._device = resolve_device(device)
        self._autocast_dtype = DTYPES[dtype]
        self.guidance = float(guidance)
        self.negative_prompt = negative_prompt
        self._precheck_resolution(path, transformer_dir)
        self.pipe = _load_pipeline(self._pipeline_class(), path, transformer_dir, transformer)
        self.pipe.set_progress_bar_config(disable=True)
        self._pipeline_module = sys.modules[type(self.pipe).__module__]
        self.resolution = self._check_resolution(
            resolution, self.vae_scale_factor, self.pipe.transformer.config
        )
        call = inspect.signature(type(self.pipe).__call__).parameters
        self.max_sequence_length = int(
            max_sequence_length
            if max_sequence_length is not None
            else call["max_sequence_length"].default
        )

        # The frozen parts: every component but the transformer, in eval mode, on the device.
        for part in self.pipe.components.values():
            if isinstance(part, torch.nn.Module):
                part.requires_grad_(False).eval()
        self.pipe.to(self._device)
        self.module: torch.nn.Module = self.pipe.transformer
        self._prompt_cache: OrderedDict[str, tuple[Tensor, Tensor, Tensor | None]] = OrderedDict()
        self._frozen = False
        self._adapter_disabled = False
        self._reference: DiffusersFlowPolicy | None = None
        self.attention_backend_used = self._select_attention(attention_backend)
        if gradient_checkpointing:
            self.module.enable_gradient_checkpointing()
        self._peft = lora is not None or adapter is not None
        if lora is not None:
            settings = {"target_modules": list(DEFAULT_LORA_TARGETS), **lora}
            try:
                config = peft.LoraConfig(**settings)
                self.module.add_adapter(config)
            except (TypeError, ValueError) as error:
                raise ValueError(f"model.lora={lora!r}: {_one_line(error)}") from None
        elif adapter is not None:
            try:
                self.module.add_adapter(_saved_lora_config(peft, lora_file))
                _load_lora(self.module, lora_file)
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(f"model.adapter={adapter!r}: {_one_line(error)}") from None
        else:
            self.module.requires_grad_(True)
        self.module.train(False)

    # -- loading -------------------------------------------------------------------------------

    def _pipeline_class(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def _resolution_step(self, vae_scale: int, transformer: dict) -> tuple[int, str]:
        """The multiple the resolution must be of, and why (for the error), given the VAE's
        scale and the transformer's config."""
        raise NotImplementedError

    def _max_resolution(self, vae_scale: int, transformer: dict) -> int | None:
        """The largest resolution the transformer takes (None: no limit)."""
        return None

    def _check_resolution(self, resolution: Any, vae_scale: int, transformer: dict) -> int:
        step, why = self._resolution_step(vae_scale, transformer)
        largest = self._max_resolution(vae_scale, transformer)
        fits = isinstance(resolution, int) and resolution >= step and resolution % step == 0
        if fits and (largest is None or resolution <= largest):
            return resolution
        if not isinstance(resolution, int) or resolution < step:
            near = f"e.g. {step}, {2 * step} or {self.default_resolution_hint}"
        elif largest is not None and resolution > largest:
            near = f"at most {largest} (the transformer's position embeddings)"
        else:
            low = resolution // step * step
            near = f"the nearest are {low} and {low + step}" if low else f"e.g. {step}"
        raise ValueError(
            f"model.resolution={resolution!r} does not fit the pipeline at "
            f"model.path={self._kwargs['path']!r}: it must be a multiple of {step} ({why}); {near}"
        )

    def _precheck_resolution(self, path: str, transformer_dir: Path | None) -> None:
        """The resolution check before the (long) load, from a local folder's configs (the
        pipelines' ``vae_scale_factor``: 2 ** (VAE blocks - 1)); skipped for a hub id."""
        vae = _local_config(Path(path) / "vae")
        transformer = _local_config(transformer_dir or Path(path) / "transformer")
        if vae is None or transformer is None:
            return
        scale = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
        self._check_resolution(self._kwargs["resolution"], scale, transformer)

    def _select_attention(self, requested: str) -> str:
        """xformers' memory-efficient attention on CUDA when asked (or "auto") and a probe
        call of the transformer runs with it; else PyTorch SDPA (diffusers' default)."""
        if requested == "sdpa":
            return "sdpa"
        if self._device.type != "cuda":
            if requested == "xformers":
                raise ValueError(
                    "model.attention_backend='xformers' cannot run on the CPU; use 'sdpa' or 'auto'"
                )
            return "sdpa"
        try:
            self.pipe.enable_xformers_memory_efficient_attention()
            with torch.no_grad():  # the kernel may only fail when it runs
                probe = torch.zeros((1, *self.latent_shape()), device=self._device)
                self.velocity(self.null_context(1), probe, torch.ones(1, device=self._device))
        except Exception as error:  # ModuleNotFoundError, ValueError, RuntimeError, NotImplemented
            with contextlib.suppress(Exception):
                self.pipe.disable_xformers_memory_efficient_attention()
            if requested == "xformers":
                raise ValueError(
                    f"model.attention_backend='xformers' cannot run ({_one_line(error)}); "
                    "use 'sdpa' or 'auto'"
                ) from None
            return "sdpa"
        return "xformers"

    # -- what the model is ---------------------------------------------------------------------

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype of the forward passes' autocast (``model.dtype``), None for float32:
        FSDP2 may gather the parameters in it (``distributed.param_dtype``)."""
        return self._autocast_dtype

    @property
    def device(self) -> torch.device:
        """The device of every part of the pipeline."""
        return self._device

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (the pipeline's ``vae_scale_factor``)."""
        return int(self.pipe.vae_scale_factor)

    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one image's latents, the initial noise's (see the family)."""
        raise NotImplementedError

    def _schedule_kwargs(self, scheduler, num_steps: int) -> dict:
        """``retrieve_timesteps``' extra arguments for this family (``sigmas``, ``mu``), as its
        pipeline's ``__call__`` passes them."""
        raise NotImplementedError

    def sigma_schedule(self, num_steps: int, shift: float) -> Tensor:
        """The pipeline's noise levels for ``num_steps`` steps: exactly what ``pipe(...,
        num_inference_steps=num_steps)`` steps through (its scheduler's ``set_timesteps``, with
        the family's shift: SD3's fixed ``shift`` from the scheduler config, or its ``mu``
        under dynamic shifting; Flux's resolution-dependent ``mu`` over
        ``linspace(1, 1/N, N)``), ending in 0; float32 [num_steps + 1] on the CPU. The
        recipe's ``shift`` is ignored: the model's scheduler config decides."""
        scheduler = copy.deepcopy(self.pipe.scheduler)  # the pipe's own is left as it was
        self._pipeline_module.retrieve_timesteps(
            scheduler, num_steps, "cpu", **self._schedule_kwargs(scheduler, num_steps)
        )
        return scheduler.sigmas.detach().float().cpu()

    # -- conditioning --------------------------------------------------------------------------

    def _encode_prompt(self, texts: list[str]) -> tuple[Tensor, Tensor, Tensor | None]:
        """The pipeline's ``encode_prompt`` of ``texts``: (embeds [B, L, D], pooled [B, P],
        text ids [L, 3] or None)."""
        raise NotImplementedError

    @torch.no_grad()
    def _encode(self, texts: Sequence[str]) -> PromptEmbeddings:
        """The encodings of ``texts``, each distinct text encoded once (and kept for later
        steps, up to ``PROMPT_CACHE_SIZE`` texts)."""
        texts = list(texts)
        missing = [text for text in dict.fromkeys(texts) if text not in self._prompt_cache]
        if missing:
            embeds, pooled, text_ids = self._encode_prompt(missing)
            text_ids = None if text_ids is None else text_ids.float()
            for i, text in enumerate(missing):
                # the ids with each entry: the reference shares the cache, not this policy's state
                self._prompt_cache[text] = (embeds[i].float(), pooled[i].float(), text_ids)
        rows = [self._prompt_cache[text] for text in texts]
        for text in texts:
            self._prompt_cache.move_to_end(text)
        while len(self._prompt_cache) > max(PROMPT_CACHE_SIZE, len(set(texts))):
            self._prompt_cache.popitem(last=False)
        return PromptEmbeddings(
            torch.stack([row[0] for row in rows]),
            torch.stack([row[1] for row in rows]),
            rows[0][2] if rows else None,
        )

    def prompt_context(self, texts: Sequence[str]) -> tuple[list[Any], PromptEmbeddings]:
        """The prompts' encodings (frozen text encoders, no gradients): the episode's first
        segment record, a :class:`~unigrpo_kit.rollout.episode.ConditionRecord` that the
        recomputation reads back, and the context of the B rows."""
        context = self._encode(texts)
        return [ConditionRecord(context)], context

    def forward_episode(
        self, segments: Sequence[Any], context: PromptEmbeddings | None = None
    ) -> EpisodeForward:
        """The recomputation's pass: the conditioning recorded at rollout (the episode's
        ``ConditionRecord``), no text logits. Image segments are read from the trajectory by
        the recomputation itself, not here."""
        for segment in segments:
            if getattr(segment, "kind", None) == "condition":
                return EpisodeForward([], segment.context)
        if context is not None:
            return EpisodeForward([], context)
        raise ValueError(
            f"{type(self).__name__} paints from a prompt's encodings: the episode has no "
            "ConditionRecord (train it with rollout.reasoning=False, rollout.mode='image')"
        )

    def null_context(self, batch: int) -> PromptEmbeddings:
        """The negative prompt's encodings (``model.negative_prompt``, "" by default, as the
        pipelines' own negative) for ``batch`` rows (expanded views of one row)."""
        one = self._encode([self.negative_prompt])
        return PromptEmbeddings(
            one.prompt_embeds.expand(batch, -1, -1),
            one.pooled_projections.expand(batch, -1),
            one.text_ids,
        )

    # -- the velocity --------------------------------------------------------------------------

    def _transformer(self, context: PromptEmbeddings, latents: Tensor, sigma: Tensor) -> Tensor:
        """One transformer call as the pipeline makes it (timestep scaling, ids, guidance)."""
        raise NotImplementedError

    def _forward_context(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast when asked; for the reference also no gradients, eval mode and,
        under LoRA, the adapter disabled. Nothing for a float32 policy (the hot path)."""
        if self._autocast_dtype is None and not self._frozen:
            return contextlib.nullcontext()
        return self._adjusted_forward()

    @contextlib.contextmanager
    def _adjusted_forward(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self._autocast_dtype is not None:
                stack.enter_context(torch.autocast(self._device.type, dtype=self._autocast_dtype))
            if self._frozen:
                stack.enter_context(torch.no_grad())
                if self._adapter_disabled:
                    self.module.disable_adapters()
                    stack.callback(self.module.enable_adapters)
                if self.module.training:  # the policy's module, shared under LoRA
                    self.module.eval()
                    stack.callback(self.module.train)
            yield

    def _velocity(self, context: PromptEmbeddings, latents: Tensor, sigma: Tensor) -> Tensor:
        latents = latents.to(self._device, torch.float32)
        sigma = sigma.to(self._device, torch.float32).reshape(-1).expand(latents.shape[0])
        with self._forward_context():
            out = self._transformer(context, latents, sigma)
        return out.float()

    def velocity(self, context: PromptEmbeddings, latents: Tensor, sigma: Tensor) -> Tensor:
        """The transformer's velocity [B, *latent_shape] (float32) at noisy ``latents``
        [B, *latent_shape] and noise levels ``sigma`` [B], given the rows' ``context``; with
        gradients where enabled."""
        return self._velocity(context, latents, sigma)

    def guided_velocity(
        self,
        context: PromptEmbeddings,
        null: PromptEmbeddings,
        latents: Tensor,
        sigma: Tensor,
        scale: float,
    ) -> Tensor:
        """Classifier-free guidance as the pipelines compute it: one batched call over
        [null; cond] rows, then ``v_u + scale (v_c - v_u)``; [B, *latent_shape] float32."""
        both = PromptEmbeddings.cat(null, context)
        sigma = sigma.reshape(-1).expand(latents.shape[0])
        v = self._velocity(both, torch.cat([latents, latents]), torch.cat([sigma, sigma]))
        v_uncond, v_cond = v.chunk(2)
        return v_uncond + scale * (v_cond - v_uncond)

    # -- images --------------------------------------------------------------------------------

    def _unpack(self, latents: Tensor) -> Tensor:
        """The VAE's latent layout [B, C, h, w] of the policy's latents."""
        return latents

    @torch.no_grad()
    def decode_images(self, latents: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1], float32, from final ``latents`` [B, *latent_shape],
        as the pipeline decodes them: Flux unpacks first, then ``latents / scaling_factor +
        shift_factor``, ``vae.decode``, and the image processor's ``x / 2 + 0.5`` clamped to
        [0, 1]."""
        vae = self.pipe.vae
        scaling = vae.config.scaling_factor
        shift = vae.config.shift_factor or 0.0
        images = []
        for chunk in latents.split(DECODE_CHUNK):
            z = self._unpack(chunk.to(self._device, vae.dtype))
            z = z / scaling + shift
            decoded = vae.decode(z, return_dict=False)[0]
            images.append(self.pipe.image_processor.postprocess(decoded, output_type="pt"))
        return torch.cat(images).float()

    # -- training surface ----------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """``{"text": [], "image": [trainable transformer parameters]}``: the adapter's under
        LoRA, the whole transformer's otherwise; the encoders and the VAE never; nothing for the
        reference."""
        groups: dict[str, list[torch.nn.Parameter]] = {part: [] for part in PARTS}
        if not self._frozen:
            groups["image"] = [p for p in self.module.parameters() if p.requires_grad]
        return groups

    def reference(self) -> DiffusersFlowPolicy:
        """The frozen reference, made once: under LoRA the same transformer with its adapter
        disabled around every call (``disable_adapters`` / ``enable_adapters``, no copy);
        otherwise a frozen, eval-mode deep copy of the transformer as it is now. It shares the
        pipeline's frozen parts and prompt cache, runs without gradients and never trains."""
        if self._frozen:
            return self
        if self._reference is None:
            reference = copy.copy(self)
            reference._frozen = True
            reference._reference = None
            if self._peft:
                reference._adapter_disabled = True
            else:
                module = copy.deepcopy(self.module).requires_grad_(False).eval()
                for parameter in module.parameters():
                    parameter.grad = None
                reference.module = module
            self._reference = reference
        return self._reference

    def train(self, mode: bool = True) -> DiffusersFlowPolicy:
        """The transformer's training mode (gradient checkpointing acts in training mode); the
        frozen parts and the reference stay in eval mode. Returns the policy."""
        if not self._frozen:
            self.module.train(mode)
        return self

    def eval(self) -> DiffusersFlowPolicy:
        """``train(False)``."""
        return self.train(False)

    def save(self, folder: Path) -> None:
        """Write the policy into ``folder``, in diffusers' own layouts, and ``unigrpo_policy.json``
        (kwargs with ``"."`` for ``folder``, as ``checkpoint.policy_spec`` reads them):

        - LoRA: ``pytorch_lora_weights.safetensors`` through the pipeline class's
          ``save_lora_weights`` (keys ``transformer.*``, the LoRA config in the file's
          metadata), which a stock ``pipe.load_lora_weights(folder)`` loads; kwargs: the base
          ``path`` and ``adapter="."``;
        - full fine-tuning: ``transformer/`` (``transformer.save_pretrained``), which
          ``<Family>Transformer2DModel.from_pretrained(folder / "transformer")`` reads, to pass
          as ``from_pretrained(base, transformer=...)``; kwargs: the base ``path`` and
          ``transformer="."``.
        """
        if self._frozen:
            raise RuntimeError("the reference policy is frozen and has nothing to save")
        folder = Path(folder).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        kwargs = dict(self._kwargs)
        if self._peft:
            _save_lora(self._pipeline_class(), self.module, folder)
            kwargs.update(adapter=".", lora=None, transformer=None)
        else:
            self.module.save_pretrained(folder / TRANSFORMER_DIR)
            kwargs.update(transformer=".", adapter=None, lora=None)
        record = {"type": type(self).__name__, "kwargs": kwargs}
        (folder / POLICY_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def load_weights(self, folder: Path) -> None:
        """Copy in place (parameters keep their identity) what :meth:`save` wrote into
        ``folder``: the LoRA (``transformer.``-prefixed keys, stripped, into the adapter) or the
        transformer's safetensors (``transformer/``, one file or sharded). A one-line error if
        a file is missing or does not fit."""
        if self._frozen:
            raise RuntimeError("the reference policy is frozen: load weights into the policy")
        folder = Path(folder)
        if self._peft:
            file = folder / LORA_FILE
            if not file.is_file():
                raise FileNotFoundError(f"{file} is missing: not a LoRA policy's checkpoint")
            _load_lora(self.module, file)
            return
        _load_transformer(self.module, folder / TRANSFORMER_DIR)

    # -- --dry-run -----------------------------------------------------------------------------

    @classmethod
    def _save_tiny(cls, folder: Path, words: Sequence[str] | None) -> Path:
        raise NotImplementedError

    @classmethod
    def _dry_run_family(cls, model_cfg: dict) -> type[DiffusersFlowPolicy]:
        """The family a dry run builds: the class itself; for ``DiffusersFlowPolicy`` the
        family of ``model.path`` when it is a local pipeline folder, else SD3."""
        if cls is not DiffusersFlowPolicy:
            return cls
        path = model_cfg.get("path")
        if path and (Path(str(path)).expanduser() / "model_index.json").is_file():
            return _family_of(str(path))
        from .sd3 import SD3Policy

        return SD3Policy

    @classmethod
    def dry_run_spec(cls, model_cfg: dict, task: Any, folder: Path) -> dict:
        """``--dry-run``: a tiny random pipeline of the family
        (:mod:`~unigrpo_kit.models.tiny_diffusers`; its tokenizers know ``task``'s words) saved
        into ``folder`` with ``save_pretrained``, and ``model_cfg`` pointed at it: ``path`` the
        folder, no adapter or trained transformer, a small ``resolution`` (the task's if the tiny
        VAE takes it and it is at most 64 px, else 32); the other keys (LoRA, dtype, T5
        tokens...) as the recipe has them."""
        _quiet_progress_bars()
        family = cls._dry_run_family(model_cfg)
        vocabulary = getattr(task, "vocabulary", None)
        words = list(vocabulary()) if callable(vocabulary) else None
        family._save_tiny(Path(folder), words)
        resolution = getattr(task, "resolution", None)
        if not (isinstance(resolution, int) and 0 < resolution <= 64 and resolution % 4 == 0):
            resolution = 32
        return {
            **model_cfg,
            "path": str(folder),
            "adapter": None,
            "transformer": None,
            "resolution": resolution,
        }
