"""Stable Diffusion 3 / 3.5 as an image policy: :class:`SD3Policy`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from ...registry import MODELS
from .base import DiffusersFlowPolicy
from .context import PromptEmbeddings


@MODELS.register_module(name="SD3Policy")
class SD3Policy(DiffusersFlowPolicy):
    """Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``, Esser et al., arXiv 2403.03206):
    an MM-DiT over latent patches, conditioned on CLIP-L + CLIP-G + T5 token encodings and the
    two CLIPs' pooled projections.

    - latents: [C, H/s, W/s] with s the VAE scale (8 in SD3), C the transformer's
      ``in_channels`` (16); the resolution is a multiple of s x ``patch_size``;
    - velocity: ``transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=
      prompt_embeds, pooled_projections=pooled).sample`` (``timestep`` as the pipeline passes
      the scheduler's ``sigma * num_train_timesteps``);
    - schedule: the scheduler's ``set_timesteps(N)``: N sigmas evenly spaced from its largest
      to its smallest training sigma, shifted by ``sigma' = shift sigma / (1 + (shift - 1)
      sigma)`` (SD3: ``shift=3.0`` in the scheduler config; ``mu`` instead under dynamic
      shifting), then 0;
    - CFG: the negative prompt ``""`` (the pipeline's default), ``guidance_scale`` 4.5-7 in
      practice.
    """

    pipeline_class_name = "StableDiffusion3Pipeline"
    default_resolution_hint = 1024

    def _resolution_step(self, vae_scale: int, transformer: dict) -> tuple[int, str]:
        patch = int(transformer.get("patch_size", 2))
        return vae_scale * patch, f"VAE scale {vae_scale} x patch size {patch}"

    def _max_resolution(self, vae_scale: int, transformer: dict) -> int | None:
        limit = transformer.get("pos_embed_max_size")
        if limit is None:
            return None
        return int(limit) * int(transformer.get("patch_size", 2)) * vae_scale

    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H / s, W / s): the VAE's latent image."""
        side = self.resolution // self.vae_scale_factor
        return (int(self.pipe.transformer.config.in_channels), side, side)

    def _schedule_kwargs(self, scheduler, num_steps: int) -> dict:
        # as StableDiffusion3Pipeline.__call__: mu only under dynamic shifting
        if not scheduler.config.get("use_dynamic_shifting", None):
            return {}
        _, height, width = self.latent_shape()
        patch = self.pipe.transformer.config.patch_size
        mu = self._pipeline_module.calculate_shift(
            (height // patch) * (width // patch),
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.16),
        )
        return {"mu": mu}

    def _encode_prompt(self, texts: list[str]):
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=texts,
            prompt_2=None,
            prompt_3=None,
            device=self._device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return embeds, pooled, None

    def _transformer(self, context: PromptEmbeddings, latents: Tensor, sigma: Tensor) -> Tensor:
        timestep = sigma * self.pipe.scheduler.config.num_train_timesteps
        return self.module(
            hidden_states=latents,
            timestep=timestep,
            encoder_hidden_states=context.prompt_embeds,
            pooled_projections=context.pooled_projections,
            return_dict=False,
        )[0]

    @classmethod
    def _save_tiny(cls, folder: Path, words: Sequence[str] | None) -> Path:
        from ..tiny_diffusers import save_tiny_sd3

        return save_tiny_sd3(folder, words=words)
