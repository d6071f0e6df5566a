"""Recomputing, with gradients, what sampling recorded: token log-probs and SDE-step log-probs.

One forward pass reads the whole episode (text, and every image as its clean final latents)
through the policy protocol's ``forward_episode``: its text logits give the log-probs of every
generated token, and its context is the context of every image. Then, for each image, the
trained (SDE) steps of all rows are batched into one velocity call over that image's prefix of
the context, and the sampler scores the recorded next latents under the new Gaussian. Gradients
reach both experts through the shared attention.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..models.layout import ImageSegment, TextSegment
from ..samplers.flow import FlowStep
from .episode import EpisodeBatch


class TextTerms(NamedTuple):
    """Over all generated tokens [N, T_total]; ``logits`` [N, T_total, V] predicted them."""

    log_probs: torch.Tensor
    old_log_probs: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor


class ImageTerms(NamedTuple):
    """Over all trained steps [N, K_total]; means and velocities are [N, K_total, C, H, W]."""

    log_probs: torch.Tensor
    old_log_probs: torch.Tensor
    mask: torch.Tensor
    means: torch.Tensor
    old_means: torch.Tensor
    stds: torch.Tensor
    dts: torch.Tensor
    velocities: torch.Tensor


class Recomputed(NamedTuple):
    """The recomputed terms of each kind; None for a kind that is not trained."""

    text: TextTerms | None
    image: ImageTerms | None

    def select(self, rows: torch.Tensor) -> Recomputed:
        """The terms of the episodes at index ``rows``."""
        pick = lambda terms: None if terms is None else type(terms)(*(t[rows] for t in terms))  # noqa: E731
        return Recomputed(pick(self.text), pick(self.image))

    @staticmethod
    def concat(parts: list[Recomputed]) -> Recomputed:
        """Terms of consecutive chunks of one episode batch, joined along the episode axis."""

        def join(kind):
            chunks = [getattr(p, kind) for p in parts]
            if chunks[0] is None:
                return None
            return type(chunks[0])(*(torch.cat(ts, dim=0) for ts in zip(*chunks)))

        return Recomputed(join("text"), join("image"))


def model_segments(batch: EpisodeBatch) -> list:
    """The model's view of an episode batch: text as ids, images as clean final latents, a
    recorded conditioning as it is."""
    out = []
    for seg in batch.segments:
        if seg.kind == "text":
            out.append(TextSegment(seg.ids, seg.mask))
        elif seg.kind == "condition":
            out.append(seg)
        else:
            latents = seg.context_latents
            out.append(ImageSegment(latents, torch.zeros(latents.shape[0], device=latents.device)))
    return out


def recompute(
    policy,
    batch: EpisodeBatch,
    *,
    image_sampler: FlowStep | None = None,
    train_text: bool = True,
    train_image: bool = True,
    guidance_scale: float = 1.0,
) -> Recomputed:
    """Log-probs of the recorded actions under ``policy`` (with gradients if enabled).

    ``guidance_scale`` != 1: the images were painted with classifier-free guidance, whose null
    context the policy provides; the same guided velocity is recomputed."""
    out = policy.forward_episode(model_segments(batch))
    text = _text_terms(batch, out.text_logits) if train_text else None
    image = None
    if train_image:
        null = policy.null_context(len(batch)) if guidance_scale != 1.0 else None
        image = _image_terms(policy, batch, out.context, image_sampler, null)
    return Recomputed(text, image)


def _text_terms(batch, text_logits) -> TextTerms | None:
    logp, old, masks, logits_all = [], [], [], []
    text_index = -1
    previous_logits = None
    for seg in batch.segments:
        if seg.kind != "text":
            continue
        text_index += 1
        logits = text_logits[text_index]
        if seg.generated:
            # Token j is predicted at column j - 1; token 0 by the last column of the text just
            # before it (a left-padded prompt or a <look> marker, so that column is always real).
            predicting = torch.cat([previous_logits[:, -1:], logits[:, :-1]], dim=1)
            # the processing (temperature, top-k, top-p) of the sampler that drew the tokens
            logp.append(seg.sampler.token_log_probs(predicting, seg.ids))
            old.append(seg.log_probs)
            masks.append(seg.train_mask)
            logits_all.append(predicting)
        previous_logits = logits
    if not logp:
        return None
    return TextTerms(
        torch.cat(logp, 1), torch.cat(old, 1), torch.cat(masks, 1), torch.cat(logits_all, 1)
    )


def _image_terms(policy, batch, context, sampler, null) -> ImageTerms | None:
    pieces = []
    for position, seg in enumerate(batch.segments):
        if seg.kind != "image":
            continue
        t = seg.trajectory
        steps = torch.nonzero(t.sde_mask).flatten()
        if steps.numel() == 0:
            continue
        n, k = t.latents.shape[0], steps.numel()
        old_log_probs, old_means = t.log_probs[:, steps], t.means[:, steps]
        # Only the rows that painted this image are rescored (a multi-round episode that said
        # "done" paints no second image); the others keep their recorded terms, masked out.
        rows = torch.nonzero(seg.active).flatten()
        log_prob, mean = old_log_probs, old_means
        velocity = torch.zeros_like(old_means)
        if rows.numel() > 0:
            b = rows.numel()
            latents = t.latents[rows]
            x = latents[:, steps].flatten(0, 1)
            x_next = latents[:, steps + 1].flatten(0, 1)
            sigma = t.sigmas[steps].to(x.device).repeat(b)
            sigma_next = t.sigmas[steps + 1].to(x.device).repeat(b)
            rows_context = context.prefix(position).select(rows).repeat_interleave(k)
            if seg.guidance_scale != 1.0:
                rows_null = null.select(rows).repeat_interleave(k)
                v = policy.guided_velocity(rows_context, rows_null, x, sigma, seg.guidance_scale)
            else:
                v = policy.velocity(rows_context, x, sigma)
            step = sampler.step(v, sigma, sigma_next, x, prev_sample=x_next)
            shape = (b, k, *x.shape[1:])
            log_prob = old_log_probs.index_copy(0, rows, step.log_prob.view(b, k))
            mean = old_means.index_copy(0, rows, step.mean.view(shape))
            velocity = velocity.index_copy(0, rows, v.view(shape).to(velocity.dtype))
        pieces.append(
            ImageTerms(
                log_prob,
                old_log_probs,
                seg.active[:, None].expand(n, k),
                mean,
                old_means,
                t.stds[:, steps],
                (t.sigmas[steps + 1] - t.sigmas[steps]).to(old_means.device).repeat(n).view(n, k),
                velocity,
            )
        )
    if not pieces:
        return None
    return ImageTerms(*(torch.cat(parts, dim=1) for parts in zip(*pieces)))
