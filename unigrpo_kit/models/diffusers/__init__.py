"""diffusers flow-matching pipelines (SD3, Flux) as image policies
(:class:`~unigrpo_kit.models.protocol.ImagePolicy`).

:class:`DiffusersFlowPolicy` loads a diffusers pipeline folder (the ``save_pretrained`` layout:
``model_index.json`` and one sub-folder per part) and trains its transformer, alone: the text
encoders and the VAE are frozen and never reach the optimizer. Everything model-specific is the
pipeline's own code, called, never re-implemented: ``pipe.encode_prompt`` for the prompt
encodings, the pipeline module's ``calculate_shift`` / ``retrieve_timesteps`` and the pipeline's
scheduler for the sigma schedule, Flux's ``_prepare_latent_image_ids`` and ``_unpack_latents``
(the kit draws Flux's noise in the packed layout of ``_pack_latents`` directly: i.i.d. Gaussian
either way, as ``pipe(latents=...)`` takes it), the VAE's ``scaling_factor`` /
``shift_factor`` and the pipeline's ``image_processor`` for decoding. What the policy adds is
the kit's protocol around them:

- a conditioning computed once per prompt text, under ``torch.no_grad()`` (frozen encoders), kept
  in a :class:`PromptEmbeddings` context and recorded in the episode
  (:class:`~unigrpo_kit.rollout.episode.ConditionRecord`) so that the recomputation reads the
  very tensors the rollout used;
- ``velocity(context, x, sigma)``, the transformer's output in the kit's convention, which is
  diffusers' own for these models (``FlowMatchEulerDiscreteScheduler``:
  ``prev = x + (sigma_next - sigma) * v``); an ODE rollout of the kit over
  :meth:`DiffusersFlowPolicy.sigma_schedule` is ``pipe(..., output_type="latent")`` step for
  step (the tests hold them to 1e-4);
- LoRA through diffusers' ``PeftAdapterMixin`` (``transformer.add_adapter``), a frozen
  reference (the adapter disabled, or a frozen copy), checkpoints in diffusers' own LoRA format
  (a stock ``pipe.load_lora_weights(folder)`` reads them; ``model.adapter`` loads one) or a
  ``save_pretrained`` transformer folder (``<Family>Transformer2DModel.from_pretrained`` reads
  it; ``model.transformer`` puts it over the base pipeline of ``model.path``).

``type="DiffusersFlowPolicy"`` picks the family from ``model_index.json``'s ``_class_name``
(:data:`FAMILIES`); ``type="SD3Policy"`` / ``"FluxPolicy"`` / ``"FluxKontextPolicy"`` (the
editor: FLUX.1 Kontext, which paints from a reference image and an instruction) name it.
"""

from .base import DiffusersFlowPolicy
from .context import EditEmbeddings, PromptEmbeddings
from .flux import FluxPolicy
from .kontext import FluxKontextPolicy
from .sd3 import SD3Policy

# The pipelines a policy trains, by model_index.json's _class_name.
FAMILIES: dict[str, type[DiffusersFlowPolicy]] = {
    SD3Policy.pipeline_class_name: SD3Policy,
    FluxPolicy.pipeline_class_name: FluxPolicy,
    FluxKontextPolicy.pipeline_class_name: FluxKontextPolicy,
}

__all__ = [
    "FAMILIES",
    "DiffusersFlowPolicy",
    "EditEmbeddings",
    "FluxKontextPolicy",
    "FluxPolicy",
    "PromptEmbeddings",
    "SD3Policy",
]
