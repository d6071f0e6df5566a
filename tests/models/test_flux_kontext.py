"""FluxKontextPolicy: FLUX.1 Kontext as an image editor, held to diffusers' own pipeline.

A tiny random ``FluxKontextPipeline`` (the real classes, ``save_pretrained``) is loaded by the
kit and by diffusers alone. Parity: the kit's ODE rollout (``paint`` over the policy's sigma
schedule) of an edit of a reference image, with the reference given as the painter's latents
or as a decoded image, equals ``pipe(image=..., output_type="latent")`` from the same noise; so
does painting from text alone (no reference). The trained (SDE) steps are scored by the
recomputation from the same velocity call.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DiffusionPipeline

from unigrpo_kit.models.diffusers import EditEmbeddings, FluxKontextPolicy
from unigrpo_kit.models.tiny_diffusers import save_tiny_flux_kontext
from unigrpo_kit.registry import MODELS
from unigrpo_kit.rollout.painter import paint
from unigrpo_kit.samplers.flow import FlowSDE
from unigrpo_kit.tasks.shapeworld import ShapeWorld

RESOLUTION, STEPS, TOKENS = 32, 4, 16
PROMPTS = ["make the circle red", "add a blue square"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("kontext")
    return save_tiny_flux_kontext(root / "kontext", words=ShapeWorld().vocabulary())


def build(folder, **kw):
    spec = dict(type="DiffusersFlowPolicy", path=str(folder), resolution=RESOLUTION)
    spec.update(max_sequence_length=TOKENS, device="cpu", **kw)
    return MODELS.build(spec)


def stock(folder):
    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def kit_rollout(policy, context, noise, sde_mask=None, generator=None):
    sigmas = policy.sigma_schedule(STEPS, shift=3.0)
    mask = torch.zeros(STEPS, dtype=torch.bool) if sde_mask is None else sde_mask
    sampler = FlowSDE(noise_level=0.7) if sde_mask is not None else None
    return paint(
        policy, context, sigmas, sampler=sampler, sde_mask=mask, noise=noise,
        generator=generator, num_rows=len(PROMPTS),
    )  # fmt: skip


def pipe_latents(pipe, noise, image):
    return pipe(
        image=image, prompt=PROMPTS, num_inference_steps=STEPS, latents=noise.clone(),
        output_type="latent", height=RESOLUTION, width=RESOLUTION,
        max_sequence_length=TOKENS, _auto_resize=False, max_area=RESOLUTION**2,
    ).images  # fmt: skip


def test_the_family_is_picked_from_the_folder(folder):
    policy = build(folder)
    assert isinstance(policy, FluxKontextPolicy)
    assert policy.parameter_groups()["image"]  # the transformer trains
    assert not any(p.requires_grad for p in policy.pipe.vae.parameters())


@pytest.mark.parametrize("reference", ["none", "latents", "pixels"])
def test_an_ode_edit_is_the_pipelines_own_sampling(folder, reference):
    """The kit's ODE rollout of an edit equals ``FluxKontextPipeline(image=...)`` from the same
    noise: the reference as the painter's latents (``prepare_latents`` takes them as they are),
    as a decoded image in [0, 1] (preprocessed and VAE-encoded by the pipeline), or none."""
    policy = build(folder, reference="pixels" if reference == "pixels" else "latents")
    pipe = stock(folder)
    shape = (len(PROMPTS), *policy.latent_shape())
    noise, previous = randn(shape, 0), randn(shape, 1)
    if reference == "none":
        context, image = policy.edit_context(PROMPTS, None), None
    else:
        context = policy.edit_context(PROMPTS, previous)
        unpacked = policy._unpack(previous)
        image = unpacked if reference == "latents" else policy.decode_images(previous)
        assert isinstance(context, EditEmbeddings) and context.image_latents is not None
    ours = kit_rollout(policy, context, noise).final
    theirs = pipe_latents(pipe, noise, image)
    assert ours.shape == theirs.shape
    assert relative(ours, theirs) < 1e-4, relative(ours, theirs)  # measured ~1e-7


def test_the_trained_steps_are_rescored_by_the_same_velocity(folder):
    """An SDE step of an edit, recorded at rollout, is scored again from the same conditioning
    (rows selected and repeated as the recomputation does): the same log-prob."""
    policy = build(folder)
    shape = (len(PROMPTS), *policy.latent_shape())
    context = policy.edit_context(PROMPTS, randn(shape, 1))
    mask = torch.tensor([True, False, True, False])
    t = kit_rollout(policy, context, randn(shape, 0), mask, torch.Generator().manual_seed(2))
    steps = torch.nonzero(mask).flatten()
    rows = torch.tensor([1, 0])
    x = t.latents[rows][:, steps].flatten(0, 1)
    x_next = t.latents[rows][:, steps + 1].flatten(0, 1)
    sigma = t.sigmas[steps].repeat(2)
    v = policy.velocity(context.select(rows).repeat_interleave(2), x, sigma)
    out = FlowSDE(noise_level=0.7).step(
        v, sigma, t.sigmas[steps + 1].repeat(2), x, prev_sample=x_next
    )
    recorded = t.log_probs[rows][:, steps].flatten()
    assert float((out.log_prob.detach() - recorded).abs().max()) < 1e-4
