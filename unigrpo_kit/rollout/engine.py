"""The rollout engine: prompt -> reasoning -> image (-> look -> reflection -> edited image)*.

One call collects N = len(prompts) * G episodes, G per prompt, through the policy protocol
(:mod:`unigrpo_kit.models.protocol`); the prompt format and the tokens that end a reasoning or
a reflection are the policy's, and the text that ends an episode is the task's. The phases:

- **reason**: the policy's rendering of each prompt, then the reasoning sampled after it
  (``reasoning=False``, image-only mode: the prompt with an empty reasoning, nothing sampled);
- **paint a round**: each image is denoised over ``num_steps`` steps of a shifted schedule; the
  steps that the SDE window selects are sampled with the SDE sampler and recorded with their
  log-probs (these are the trained steps), the rest are Euler ODE steps;
- **look and reflect** (``max_rounds`` > 1): the policy looks at its image and writes a
  reflection; rows whose reflection ends the episode (``ends_episode``, e.g. "done") stop (they
  stay in the batch, inactive), the others paint the edited image in the next round.

``paint_images=False`` stops after the reasoning (text-only training with a text reward).
No classifier-free guidance by default, so a rollout is one linear, unbranched sequence. With
``guidance_scale`` > 1 every velocity is v_u + w (v_c - v_u), where v_u is read from the
policy's null context; training then recomputes the same guided velocity.
``shared_noise=True`` (DanceGRPO, arXiv 2505.07818) starts the G images of a group, in every
round, from one initial noise x_1. The group's images then differ only through what the
policy sampled (the reasoning, and the SDE steps of the window), not through a noise that no
loss term trains, so the group-relative advantage credits the trained choices alone.

A frozen painter (text-only training with an image reward) reads the same episode through its
own weights and its own context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..devices import randn
from ..models.layout import TextSegment
from ..models.protocol import UnifiedPolicy
from ..samplers.flow import FlowStep
from ..samplers.schedules import FullWindow, SDEWindow
from ..samplers.text import TextSampler
from .episode import EpisodeBatch, ImageSegmentRecord, TextSegmentRecord
from .painter import paint
from .streams import RowStreams, phase, shared


def guided(policy, context, null, scale: float):
    """The classifier-free-guided velocity function over a conditional and a null context."""

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return policy.guided_velocity(context, null, x, sigma, scale)

    return velocity


@dataclass
class _Episodes:
    """What one rollout has built so far: its records, and each reader's context."""

    prompts: list
    group_ids: torch.Tensor
    segments: list = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    reflections: list[list[str]] = field(default_factory=list)
    context: object = None  # the policy's
    painter_context: object = None  # a frozen painter's own (None: the painter is the policy)
    null: object = None  # the painter's null context (classifier-free guidance only)
    active: torch.Tensor | None = None
    guided: torch.Tensor | None = None  # rows whose reasoning was the reference (None: none)

    def batch(self) -> EpisodeBatch:
        return EpisodeBatch(
            self.prompts,
            self.group_ids,
            self.segments,
            self.thoughts,
            self.reflections,
            guided=None if self.guided is None else self.guided.cpu(),
        )


class RolloutEngine:
    """Collects groups of episodes with the policy; see the module docstring for the phases."""

    def __init__(
        self,
        policy,
        *,
        image_sampler: FlowStep | None = None,
        window: SDEWindow | None = None,
        text_sampler: TextSampler | None = None,
        reflection_sampler: TextSampler | None = None,
        reasoning: bool = True,
        num_steps: int = 10,
        shift: float = 1.0,
        max_rounds: int = 1,
        guidance_scale: float = 1.0,
        train_text: bool = True,
        train_image: bool = True,
        paint_images: bool = True,
        painter=None,
        shared_noise: bool = False,
        ends_episode: Callable[[str], bool] | None = None,
    ):
        if max_rounds < 1:
            raise ValueError(f"rollout.max_rounds must be >= 1, got {max_rounds}")
        if reasoning and text_sampler is None:
            raise ValueError("rollout.reasoning=True needs rollout.text_sampler")
        if paint_images and image_sampler is None:
            raise ValueError("painting images needs rollout.image_sampler")
        if max_rounds > 1 and reflection_sampler is None:
            raise ValueError(
                "rollout.max_rounds > 1 needs rollout.reflection_sampler (stopping at the "
                "policy's end of a reflection)"
            )
        if max_rounds > 1 and ends_episode is None:
            raise ValueError("rollout.max_rounds > 1 needs the task's ends_episode(reflection)")
        if max_rounds > 1 and not isinstance(policy, UnifiedPolicy):
            raise ValueError(
                f"rollout.max_rounds={max_rounds} needs a policy that looks at its images (a "
                f"UnifiedPolicy); {type(policy).__name__} paints one round: set max_rounds=1"
            )
        self.policy = policy
        self.image_sampler = image_sampler
        self.window = window if window is not None else FullWindow()
        self.text_sampler = text_sampler
        self.reflection_sampler = reflection_sampler
        self.reasoning = reasoning
        # The painter is the policy itself, or a frozen policy (text-only training).
        self.painter = painter if painter is not None else policy
        self.sigmas = self.painter.sigma_schedule(num_steps, shift) if paint_images else None
        self.num_steps = num_steps
        self.max_rounds = max_rounds
        self.guidance_scale = guidance_scale
        self.train_text = train_text
        self.train_image = train_image
        self.paint_images = paint_images
        self.shared_noise = shared_noise
        self.ends_episode = ends_episode

    @torch.no_grad()
    def rollout(
        self,
        prompts: list,
        group_size: int,
        *,
        generator: torch.Generator,
        progress: float = 0.0,
        guided: torch.Tensor | None = None,
    ) -> EpisodeBatch:
        """G = ``group_size`` episodes for each prompt, rows of one prompt adjacent.
        ``guided`` [N] bool: rows whose reasoning is their prompt's reference (``reasoning``
        attribute) instead of a sample (off-policy guidance); a row whose prompt has none is
        sampled as usual."""
        rows = [p for p in prompts for _ in range(group_size)]
        run = _Episodes(rows, torch.arange(len(prompts)).repeat_interleave(group_size))
        run.thoughts = [""] * len(rows)
        self.reason(run, phase(generator, "reason"), guided)
        if not self.paint_images:
            return run.batch()
        if self.painter is not self.policy:
            run.painter_context = self._painter_reads(run.segments)
        run.active = torch.ones(len(rows), dtype=torch.bool, device=self.policy.device)
        if self.guidance_scale != 1.0:
            run.null = self.painter.null_context(len(rows))
        for round_index in range(self.max_rounds):
            image = self.paint_round(
                run, len(prompts), group_size, generator, progress, round_index
            )
            if round_index == self.max_rounds - 1 or not bool(run.active.any()):
                break
            self.look_and_reflect(run, image, phase(generator, f"reflect{round_index + 1}"))
        return run.batch()

    # ----------------------------------------------------------------- the phases
    def reason(self, run: _Episodes, generator: torch.Generator, guided=None) -> None:
        """The prompts in the policy's format, then (``reasoning``) the sampled reasoning (the
        reference reasoning on ``guided`` rows); without reasoning, the policy's context of the
        prompts alone."""
        texts = [p.text for p in run.prompts]
        if not self.reasoning:
            records, run.context = self.policy.prompt_context(texts)
            run.segments.extend(records)
            return
        ids, mask = self.policy.encode_prompts(texts, reasoning=True)
        run.segments.append(TextSegmentRecord(ids, mask))
        session = self.policy.text_session(None, self.text_sampler.stop_token_ids)
        forced, forced_rows = self._references(run.prompts, guided)
        sample = self.text_sampler.generate(
            session, ids, mask, generator=generator, forced=forced, forced_rows=forced_rows
        )
        run.context = session.finish(sample.tokens, sample.mask)
        run.segments.append(self._generated(self.text_sampler, sample))
        run.thoughts = self.policy.decode_text(sample.tokens, sample.mask)
        run.guided = forced_rows

    def _references(self, prompts, guided):
        """The reference reasonings' ids [N, L] and the rows [N] bool that write them: the
        ``guided`` rows whose prompt has a non-empty ``reasoning``; (None, None) if none."""
        if guided is None or not bool(guided.any()):
            return None, None
        texts = [getattr(p, "reasoning", None) or "" for p in prompts]
        rows = torch.tensor([bool(g) and bool(t.strip()) for g, t in zip(guided.tolist(), texts)])
        if not bool(rows.any()):
            return None, None
        if not hasattr(self.policy, "encode_completion"):
            raise ValueError(
                f"rollout.guided_members > 0 needs a policy that can be handed a reference text "
                f"(encode_completion); {type(self.policy).__name__} has none: set "
                f"rollout.guided_members=0"
            )
        # A reference longer than the sampler's max_new_tokens is cut there, as a sampled
        # reasoning would be (a dry run's short budgets cut them on purpose).
        ids, _ = self.policy.encode_completion(texts, "reasoning")
        return ids, rows.to(ids.device)

    def paint_round(
        self, run, num_groups, group_size, generator, progress, round_index: int = 0
    ) -> ImageSegmentRecord:
        """One image per active row (rows that ended paint nothing more); the SDE window's
        steps are recorded for training. With row streams (training) the round draws from its
        own phase: its window from the batch's shared stream, its noise row by row."""
        n = len(run.prompts)
        window_generator = shared(generator, f"window{round_index}")
        noise_generator = phase(generator, f"group-noise{round_index}", per_group=True)
        generator = phase(generator, f"paint{round_index}")
        sde_mask = (
            self.window.select(self.num_steps, generator=window_generator, progress=progress)
            if self.train_image
            else torch.zeros(self.num_steps, dtype=torch.bool)
        )
        context = run.context if run.painter_context is None else run.painter_context
        null = run.null
        # Only the rows that edit are painted (the noise is still drawn for all rows, so each
        # painted row is unchanged).
        rows = None if bool(run.active.all()) else torch.nonzero(run.active).flatten()
        if rows is not None:
            context = context.select(rows)
            null = null.select(rows) if null is not None else None
        trajectory = paint(
            self.painter,
            context,
            self.sigmas,
            sampler=self.image_sampler,
            sde_mask=sde_mask,
            generator=generator,
            guidance=None
            if null is None
            else guided(self.painter, context, null, self.guidance_scale),
            noise=self._group_noise(num_groups, group_size, noise_generator),
            rows=rows,
            num_rows=n,
        )
        images = self.painter.decode_images(trajectory.final)
        clamp = getattr(self.policy, "clamp_context", True)
        image = ImageSegmentRecord(
            trajectory, run.active.clone(), self.guidance_scale, images, clamp
        )
        run.segments.append(image)
        return image

    def look_and_reflect(self, run: _Episodes, image: ImageSegmentRecord, generator) -> None:
        """The policy looks at its image and writes a reflection; rows whose reflection ends the
        episode become inactive."""
        n = len(run.prompts)
        run.context = self.policy.look(run.context, image.context_latents)
        if run.painter_context is not None:
            run.painter_context = self.painter.look(run.painter_context, image.context_latents)
        ids, mask = self.policy.reflection_prompt(n)
        run.segments.append(TextSegmentRecord(ids, mask, active=run.active.clone()))
        session = self.policy.text_session(run.context, self.reflection_sampler.stop_token_ids)
        sample = self.reflection_sampler.generate(session, ids, mask, generator=generator)
        run.context = session.finish(sample.tokens, sample.mask)
        run.segments.append(
            self._generated(self.reflection_sampler, sample, active=run.active.clone())
        )
        if run.painter_context is not None:
            read = [TextSegment(ids, mask), TextSegment(sample.tokens, sample.mask)]
            run.painter_context = self.painter.forward_episode(read, run.painter_context).context
        said = self.policy.decode_text(sample.tokens, sample.mask)
        run.reflections.append(said)
        ends = torch.tensor([self.ends_episode(s) for s in said], device=run.active.device)
        run.active = run.active & ~ends

    # ----------------------------------------------------------------- helpers
    def _generated(self, sampler: TextSampler, sample, active=None) -> TextSegmentRecord:
        """The record of a generated text; its log-probs only where text is trained."""
        log_probs = sample.log_probs if self.train_text else None
        return TextSegmentRecord(sample.tokens, sample.mask, log_probs, active, sampler)

    def _group_noise(self, num_groups: int, group_size: int, generator):
        """One initial noise per group, repeated over its G rows (``shared_noise``), else None
        (``paint`` draws one per row)."""
        if not self.shared_noise:
            return None
        if isinstance(generator, RowStreams):  # per-group streams: one draw per row, equal
            shape = (len(generator), *self.painter.latent_shape())
            return randn(shape, generator=generator, device=self.painter.device)
        shape = (num_groups, *self.painter.latent_shape())
        noise = randn(shape, generator=generator, device=self.painter.device)
        return noise.repeat_interleave(group_size, 0)

    def _painter_reads(self, segments):
        """The frozen painter's own context of the text so far."""
        read = [TextSegment(s.ids, s.mask) for s in segments]
        return self.painter.forward_episode(read).context
