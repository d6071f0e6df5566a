"""FLUX.1 Kontext as an image editor: :class:`FluxKontextPolicy`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ...registry import MODELS
from .context import EditEmbeddings, PromptEmbeddings
from .flux import FluxPolicy

REFERENCES = ("latents", "pixels")


@MODELS.register_module(name="FluxKontextPolicy")
class FluxKontextPolicy(FluxPolicy):
    """FLUX.1 Kontext (``FluxKontextPipeline``): FLUX.1's transformer, which edits a reference
    image by reading its packed latents as extra image tokens after the noisy ones (position ids
    with first axis 1), and denoises only the noisy ones. Everything else is
    :class:`~.flux.FluxPolicy`'s (packed latents, T5 + CLIP conditioning, the distilled guidance
    embedding, the resolution-dependent schedule); without a reference it paints from text, as
    the pipeline does with ``image=None``.

    The reference comes from :meth:`edit_context`, through the pipeline's own
    ``prepare_latents`` (the VAE encoding of a pixel image, ``(z - shift) * scale``, the
    packing, the image ids):

    - ``reference="latents"`` (default): the painter's own final latents of the previous image,
      which ``prepare_latents`` takes as they are (an image tensor with the VAE's channel
      count), so the edit starts from exactly the image that was painted;
    - ``reference="pixels"``: that image decoded (what the reward and the reasoner see), then
      ``image_processor.preprocess`` and the VAE encoding, as the pipeline treats a user's
      image (with ``_auto_resize=False``: the painter's resolution).

    Args: :class:`~.base.DiffusersFlowPolicy`'s, and ``reference`` (above).
    """

    pipeline_class_name = "FluxKontextPipeline"

    def __init__(self, path: str, *, reference: str = "latents", **kwargs) -> None:
        if reference not in REFERENCES:
            raise ValueError(f"model.reference={reference!r} is not one of {', '.join(REFERENCES)}")
        super().__init__(path, **kwargs)
        self.reference_kind = reference
        self._kwargs["reference"] = reference

    def _hidden_states(self, context: PromptEmbeddings, latents: Tensor) -> tuple[Tensor, Tensor]:
        image = getattr(context, "image_latents", None)
        if image is None:
            return latents, self._img_ids
        hidden = torch.cat([latents, image.to(latents.dtype)], dim=1)
        return hidden, torch.cat([self._img_ids, context.image_ids])

    @torch.no_grad()
    def reference_latents(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The reference's packed latents [B, L_ref, C] and ids [L_ref, 3] through the
        pipeline's ``prepare_latents``: ``images`` are the painter's latents [B, *latent_shape]
        (``reference="latents"``: unpacked and taken as they are; ``"pixels"``: decoded,
        preprocessed and VAE-encoded)."""
        images = images.to(self._device, torch.float32)
        if self.reference_kind == "pixels":
            pixels = self.decode_images(images)
            image = self.pipe.image_processor.preprocess(pixels, self.resolution, self.resolution)
        else:
            image = self._unpack(images)
        channels = self.pipe.transformer.config.in_channels // 4
        dummy = torch.zeros((images.shape[0], *self.latent_shape()), device=self._device)
        _, latents, _, ids = self.pipe.prepare_latents(
            image, images.shape[0], channels, self.resolution, self.resolution,
            torch.float32, self._device, None, dummy,
        )  # fmt: skip
        return latents.float(), ids.float()

    def edit_context(self, texts: Sequence[str], references: Tensor | None) -> EditEmbeddings:
        """The conditioning of an edit of ``references`` [B, *latent_shape] (the painter's
        latents of the images to edit; None: paint from text) by the instructions ``texts``:
        the prompt encodings (frozen, cached) and the reference's latents, no gradients."""
        prompt = self._encode(texts)
        if references is None:
            return EditEmbeddings(prompt.prompt_embeds, prompt.pooled_projections, prompt.text_ids)
        latents, ids = self.reference_latents(references)
        return EditEmbeddings(
            prompt.prompt_embeds, prompt.pooled_projections, prompt.text_ids, latents, ids
        )

    def guided_velocity(self, context, null, latents, sigma, scale):
        """Classifier-free guidance over [null; cond], the null rows given the same reference
        image as the conditioned ones (as the pipeline's true CFG does)."""
        image = getattr(context, "image_latents", None)
        if image is not None:
            null = EditEmbeddings(
                null.prompt_embeds, null.pooled_projections, null.text_ids, image,
                context.image_ids,
            )  # fmt: skip
        both = EditEmbeddings.cat(null, context)
        sigma = sigma.reshape(-1).expand(latents.shape[0])
        v = self._velocity(both, torch.cat([latents, latents]), torch.cat([sigma, sigma]))
        v_uncond, v_cond = v.chunk(2)
        return v_uncond + scale * (v_cond - v_uncond)

    @classmethod
    def _save_tiny(cls, folder: Path, words: Sequence[str] | None) -> Path:
        from ..tiny_diffusers import save_tiny_flux_kontext

        return save_tiny_flux_kontext(folder, words=words)
