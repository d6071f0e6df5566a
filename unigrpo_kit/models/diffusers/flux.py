"""FLUX.1 as an image policy: :class:`FluxPolicy`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ...registry import MODELS
from .base import DiffusersFlowPolicy
from .context import PromptEmbeddings


@MODELS.register_module(name="FluxPolicy")
class FluxPolicy(DiffusersFlowPolicy):
    """FLUX.1 (``FluxPipeline``, Black Forest Labs, github.com/black-forest-labs/flux): an
    MM-DiT (double- then single-stream blocks) over *packed* latents, conditioned on T5 token
    encodings and CLIP's pooled output, with 3-axis rotary position ids and, in FLUX.1-dev, a
    distilled guidance embedding in place of CFG.

    - latents: packed, [(H/2s)(W/2s), 4C]: the VAE's [C, H/s, W/s] latent cut into 2x2 patches,
      each one token of 4C channels (``FluxPipeline._pack_latents``); ``decode_images`` unpacks
      them (``_unpack_latents``). The resolution is a multiple of 2s (s the VAE scale, 8);
    - velocity: ``transformer(hidden_states=x, timestep=sigma, guidance=model.guidance,
      pooled_projections, encoder_hidden_states, txt_ids, img_ids).sample``, as the pipeline
      calls it (``timestep = t / 1000`` with ``t = sigma * num_train_timesteps``; ``img_ids``
      from ``_prepare_latent_image_ids``);
    - schedule: ``linspace(1, 1/N, N)`` through the scheduler with
      ``mu = calculate_shift(image tokens)`` (resolution-dependent shifting);
    - CFG: none by default (the distilled guidance does its work); a recipe's
      ``guidance_scale`` > 1 is the pipeline's true CFG against ``model.negative_prompt``.
    """

    pipeline_class_name = "FluxPipeline"
    default_resolution_hint = 1024
    _img_ids: Tensor | None = None  # [tokens, 3], made at the first call

    def _resolution_step(self, vae_scale: int, transformer: dict) -> tuple[int, str]:
        return vae_scale * 2, f"VAE scale {vae_scale} x 2, the 2x2 packing"

    def _latent_side(self) -> int:
        # as FluxPipeline.prepare_latents: 2 * (int(height) // (vae_scale_factor * 2))
        return 2 * (self.resolution // (self.vae_scale_factor * 2))

    def latent_shape(self) -> tuple[int, int]:
        """(tokens, channels) = ((H/2s)(W/2s), 4C): the packed latents."""
        side = self._latent_side()
        return ((side // 2) * (side // 2), int(self.pipe.transformer.config.in_channels))

    def _schedule_kwargs(self, scheduler, num_steps: int) -> dict:
        import numpy as np

        # as FluxPipeline.__call__: its default sigmas, and mu from the image's token count
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        mu = self._pipeline_module.calculate_shift(
            self.latent_shape()[0],
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.15),
        )
        return {"sigmas": sigmas, "mu": mu}

    def _image_ids(self) -> Tensor:
        side = self._latent_side()
        return self.pipe._prepare_latent_image_ids(
            1, side // 2, side // 2, self._device, torch.float32
        )

    def _encode_prompt(self, texts: list[str]):
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=texts,
            prompt_2=None,
            device=self._device,
            max_sequence_length=self.max_sequence_length,
        )
        return embeds, pooled, text_ids

    def _transformer(self, context: PromptEmbeddings, latents: Tensor, sigma: Tensor) -> Tensor:
        timestep = sigma * self.pipe.scheduler.config.num_train_timesteps
        guidance = None
        if self.module.config.guidance_embeds:
            guidance = torch.full_like(sigma, self.guidance)
        if self._img_ids is None:
            self._img_ids = self._image_ids()
        hidden, img_ids = self._hidden_states(context, latents)
        out = self.module(
            hidden_states=hidden,
            timestep=timestep / 1000,
            guidance=guidance,
            pooled_projections=context.pooled_projections,
            encoder_hidden_states=context.prompt_embeds,
            txt_ids=context.text_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return out[:, : latents.shape[1]]

    def _hidden_states(self, context: PromptEmbeddings, latents: Tensor) -> tuple[Tensor, Tensor]:
        """The image tokens the transformer reads and their ids: the latents alone (an editor
        appends its reference image's tokens, :class:`~.kontext.FluxKontextPolicy`)."""
        return latents, self._img_ids

    def _unpack(self, latents: Tensor) -> Tensor:
        return self.pipe._unpack_latents(
            latents, self.resolution, self.resolution, self.vae_scale_factor
        )

    @classmethod
    def _save_tiny(cls, folder: Path, words: Sequence[str] | None) -> Path:
        from ..tiny_diffusers import save_tiny_flux

        return save_tiny_flux(folder, words=words)
