"""Painting one image over a cached context: the hybrid ODE/SDE denoising loop of a rollout."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..devices import randn
from ..samplers.flow import FlowODE, FlowStep

_ODE = FlowODE()


class Trajectory(NamedTuple):
    """One denoising run of B images over N steps.

    latents: [B, N + 1, C, H, W] float32, from pure noise (index 0) to the image (index N).
    log_probs: [B, N] log density of each step's sample (0 on ODE steps).
    means: [B, N, C, H, W] the Gaussian mean of each step (the ODE update on ODE steps).
    stds: [B, N] the Gaussian std of each step (0 on ODE steps).
    sde_mask: [N] bool, the steps sampled with the SDE (the trained steps).
    sigmas: [N + 1] the noise schedule, 1 -> 0.
    """

    latents: torch.Tensor
    log_probs: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    sde_mask: torch.Tensor
    sigmas: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        """The painted latents [B, C, H, W] in [-1, 1] (unclamped)."""
        return self.latents[:, -1]


@torch.no_grad()
def paint(
    policy,
    context,
    sigmas: torch.Tensor,
    *,
    sampler: FlowStep | None = None,
    sde_mask: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    guidance=None,
    rows: torch.Tensor | None = None,
    num_rows: int,
) -> Trajectory:
    """Denoise from ``noise`` (drawn if None) along ``sigmas`` [N + 1] given the rows' context.

    ``policy`` is an :class:`~unigrpo_kit.models.protocol.ImagePolicy` (its ``latent_shape``
    and ``velocity``); ``context`` is its context of the rows to paint.

    Steps where ``sde_mask`` [N] is True use ``sampler`` (an SDE) and record its log-prob;
    the others are plain Euler ODE steps. ``guidance``, if given, is a callable
    ``(x, sigma_batch) -> velocity`` that replaces the bare model call (classifier-free guidance).

    ``num_rows`` is the batch size B. ``rows`` [b] (an index tensor into the batch), if given,
    paints only those rows: ``context``
    and ``guidance`` are then the selected rows' (``Context.select``), while the noise is still
    drawn for the whole batch of ``num_rows`` rows so that the random stream, and so each painted
    row, is the same as if every row were painted. The trajectory has all ``num_rows`` rows;
    the unpainted ones hold zeros (log-prob 0). A multi-round rollout paints the rows that asked
    for an edit this way.
    """
    if rows is not None:
        return _paint_rows(
            policy, context, sigmas, rows, num_rows, sampler=sampler, sde_mask=sde_mask,
            noise=noise, generator=generator, guidance=guidance,
        )  # fmt: skip
    batch = num_rows
    shape = (batch, *policy.latent_shape())
    device = policy.device
    num_steps = sigmas.numel() - 1
    if sde_mask is None:
        sde_mask = torch.zeros(num_steps, dtype=torch.bool)
    if sampler is None and bool(sde_mask.any()):
        raise ValueError("paint: sde_mask selects SDE steps but no sampler was given")
    x = randn(shape, generator=generator, device=device) if noise is None else noise.float()
    latents, log_probs, means, stds = [x], [], [], []
    for i in range(num_steps):
        sigma = sigmas[i].expand(batch).to(device)
        velocity = (
            guidance(x, sigma) if guidance is not None else policy.velocity(context, x, sigma)
        )
        step = sampler if bool(sde_mask[i]) else _ODE
        out = step.step(velocity, float(sigmas[i]), float(sigmas[i + 1]), x, generator=generator)
        x = out.prev_sample.float()
        latents.append(x)
        log_probs.append(out.log_prob)
        means.append(out.mean)
        stds.append(out.std.reshape(batch))
    return Trajectory(
        torch.stack(latents, 1),
        torch.stack(log_probs, 1),
        torch.stack(means, 1),
        torch.stack(stds, 1),
        sde_mask,
        sigmas,
    )


@torch.no_grad()
def _paint_rows(
    policy, context, sigmas, rows, num_rows, *, sampler, sde_mask, noise, generator, guidance
) -> Trajectory:
    """``paint`` of the rows ``rows`` of a batch of ``num_rows`` (see ``paint``)."""
    device = policy.device
    full_shape = (num_rows, *policy.latent_shape())
    num_steps = sigmas.numel() - 1
    if sde_mask is None:
        sde_mask = torch.zeros(num_steps, dtype=torch.bool)
    if sampler is None and bool(sde_mask.any()):
        raise ValueError("paint: sde_mask selects SDE steps but no sampler was given")
    full = randn(full_shape, generator=generator, device=device) if noise is None else noise
    x = full.float()[rows]
    batch = rows.numel()
    latents = torch.zeros((num_rows, num_steps + 1, *full_shape[1:]), device=device)
    means = torch.zeros((num_rows, num_steps, *full_shape[1:]), device=device)
    log_probs = torch.zeros((num_rows, num_steps), device=device)
    stds = torch.zeros((num_rows, num_steps), device=device)
    latents[rows, 0] = x
    for i in range(num_steps):
        stochastic = bool(sde_mask[i])
        # The SDE's noise is drawn for the whole batch, as when every row is painted.
        step_noise = (
            randn(full_shape, generator=generator, device=device)[rows] if stochastic else None
        )
        if batch == 0:
            continue
        sigma = sigmas[i].expand(batch).to(device)
        velocity = (
            guidance(x, sigma) if guidance is not None else policy.velocity(context, x, sigma)
        )
        step = sampler if stochastic else _ODE
        out = step.step(velocity, float(sigmas[i]), float(sigmas[i + 1]), x, noise=step_noise)
        x = out.prev_sample.float()
        latents[rows, i + 1] = x
        log_probs[rows, i] = out.log_prob.float()
        means[rows, i] = out.mean.float()
        stds[rows, i] = out.std.reshape(batch).float()
    return Trajectory(latents, log_probs, means, stds, sde_mask, sigmas)
