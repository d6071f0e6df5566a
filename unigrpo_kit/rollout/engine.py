"""The rollout engine: prompt -> reasoning -> image (-> look -> reflection -> edited image)*.

One call collects N = len(prompts) * G episodes, G per prompt. The sequence of one episode:

    <bos> prompt <think> reasoning </think> [image 1] <look> instruction </look> [image 2] ...

- ``reasoning=False`` (image-only mode) paints straight from ``<bos> prompt <think> </think>``.
- Each image is denoised over ``num_steps`` steps of a shifted schedule; the steps that the SDE
  window selects are sampled with the SDE sampler and recorded with their log-probs (these are
  the trained steps), the rest are Euler ODE steps.
- ``paint_images=False`` stops after the reasoning (text-only training with a text reward).
- With ``max_rounds`` > 1 the model looks at its image and writes an instruction; rows that say
  ``done`` stop (they stay in the batch, inactive), the others paint the edited image.
- No classifier-free guidance by default, so a rollout is one linear, unbranched sequence. With
  ``guidance_scale`` > 1 every velocity is v_u + w (v_c - v_u), where v_u is read from a null
  context ``<bos> <think> </think>``; training then recomputes the same guided velocity.
- ``shared_noise=True`` (DanceGRPO, arXiv 2505.07818) starts the G images of a group, in every
  round, from one initial noise x_1. The group's images then differ only through what the
  policy sampled (the reasoning, and the SDE steps of the window), not through a noise that no
  loss term trains, so the group-relative advantage credits the trained choices alone.
"""

from __future__ import annotations

import torch

from ..devices import randn
from ..models.layout import KVCache, TextSegment
from ..samplers.flow import FlowStep
from ..samplers.schedules import FullWindow, SDEWindow, shifted_sigmas
from ..samplers.text import TextSampler
from .episode import EpisodeBatch, ImageSegmentRecord, TextSegmentRecord
from .painter import paint
from .policy import UnifiedTextPolicy


def prompt_ids(tokenizer, texts: list[str], suffix: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids [B, n] and mask of ``<bos> text`` followed by ``suffix``."""
    rows = [[tokenizer.bos_id, *tokenizer.encode(t), *suffix] for t in texts]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = True
    return ids, mask


def null_context(model, tokenizer, batch: int, device) -> KVCache:
    """The unconditional context of classifier-free guidance: ``<bos> <think> </think>``."""
    ids = torch.tensor(
        [[tokenizer.bos_id, tokenizer.think_id, tokenizer.end_think_id]], device=device
    )
    ids = ids.expand(batch, 3)
    return model.extend_text(None, ids, torch.ones_like(ids, dtype=torch.bool))[1]


def guided(model, context: KVCache, null: KVCache, scale: float):
    """The classifier-free-guided velocity function over a conditional and a null context."""

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v_cond = model.velocity(context, x, sigma)
        v_null = model.velocity(null, x, sigma)
        return v_null + scale * (v_cond - v_null)

    return velocity


class RolloutEngine:
    """Collects groups of episodes with the policy; see the module docstring for the sequence."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        image_sampler: FlowStep,
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
    ):
        if max_rounds < 1:
            raise ValueError(f"rollout.max_rounds must be >= 1, got {max_rounds}")
        if reasoning and text_sampler is None:
            raise ValueError("rollout.reasoning=True needs rollout.text_sampler")
        self.model = model
        self.tokenizer = tokenizer
        self.image_sampler = image_sampler
        self.window = window if window is not None else FullWindow()
        self.text_sampler = text_sampler
        if max_rounds > 1 and reflection_sampler is None:
            raise ValueError(
                "rollout.max_rounds > 1 needs rollout.reflection_sampler (stopping at </look>)"
            )
        self.reflection_sampler = reflection_sampler
        self.reasoning = reasoning
        self.sigmas = shifted_sigmas(num_steps, shift)
        self.num_steps = num_steps
        self.max_rounds = max_rounds
        self.guidance_scale = guidance_scale
        self.train_text = train_text
        self.train_image = train_image
        self.paint_images = paint_images
        # The painter is the policy itself, or a frozen model (text-only training).
        self.painter = painter if painter is not None else model
        self.shared_noise = shared_noise

    @torch.no_grad()
    def rollout(
        self, prompts: list, group_size: int, *, generator: torch.Generator, progress: float = 0.0
    ) -> EpisodeBatch:
        """G = ``group_size`` episodes for each prompt, rows of one prompt adjacent."""
        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        episodes = [p for p in prompts for _ in range(group_size)]
        n = len(episodes)
        group_ids = torch.arange(len(prompts)).repeat_interleave(group_size)
        texts = [p.text for p in episodes]
        segments: list = []
        thoughts = [""] * n
        if self.reasoning:
            ids, mask = prompt_ids(tok, texts, [tok.think_id])
            ids, mask = ids.to(device), mask.to(device)
            segments.append(TextSegmentRecord(ids, mask))
            policy = UnifiedTextPolicy(model, None, tok.pad_id)
            sample = self.text_sampler.generate(policy, ids, mask, generator=generator)
            context = policy.finish(sample.tokens, sample.mask)
            segments.append(
                TextSegmentRecord(
                    sample.tokens,
                    sample.mask,
                    sample.log_probs if self.train_text else None,
                    sampler=self.text_sampler,
                )
            )
            thoughts = [tok.decode(row[m]) for row, m in zip(sample.tokens, sample.mask)]
        else:
            ids, mask = prompt_ids(tok, texts, [tok.think_id, tok.end_think_id])
            ids, mask = ids.to(device), mask.to(device)
            segments.append(TextSegmentRecord(ids, mask))
            context = model.extend_text(None, ids, mask)[1]
        if not self.paint_images:
            return EpisodeBatch(episodes, group_ids, segments, thoughts, [])
        # A frozen painter reads the same episode through its own weights and its own cache.
        painter_cache = None if self.painter is model else self._painter_context(segments)
        null = None
        if self.guidance_scale != 1.0:
            null = null_context(self.painter, tok, n, device)

        active = torch.ones(n, dtype=torch.bool, device=device)
        reflections: list[list[str]] = []
        for round_index in range(self.max_rounds):
            paint_context = context if painter_cache is None else painter_cache
            sde_mask = (
                self.window.select(self.num_steps, generator=generator, progress=progress)
                if self.train_image
                else torch.zeros(self.num_steps, dtype=torch.bool)
            )
            # Rows that said "done" paint nothing more: only the rows that edit are painted
            # (the noise is still drawn for all rows, so each painted row is unchanged).
            rows = None if bool(active.all()) else torch.nonzero(active).flatten()
            row_null = null
            if rows is not None:
                paint_context = paint_context.select(rows)
                row_null = null.select(rows) if null is not None else None
            velocity = (
                guided(self.painter, paint_context, row_null, self.guidance_scale)
                if row_null is not None
                else None
            )
            trajectory = paint(
                self.painter,
                paint_context,
                self.sigmas,
                sampler=self.image_sampler,
                sde_mask=sde_mask,
                generator=generator,
                guidance=velocity,
                noise=self._group_noise(len(prompts), group_size, generator, device),
                rows=rows,
                num_rows=n,
            )
            image = ImageSegmentRecord(trajectory, active.clone(), self.guidance_scale)
            segments.append(image)
            if round_index == self.max_rounds - 1 or not bool(active.any()):
                break
            context = model.extend_image(context, image.context_latents)
            if painter_cache is not None:
                painter_cache = self.painter.extend_image(painter_cache, image.context_latents)
            look = torch.full((n, 1), tok.look_id, dtype=torch.long, device=device)
            look_mask = torch.ones_like(look, dtype=torch.bool)
            segments.append(TextSegmentRecord(look, look_mask, active=active.clone()))
            policy = UnifiedTextPolicy(model, context, tok.pad_id)
            sample = self.reflection_sampler.generate(policy, look, look_mask, generator=generator)
            context = policy.finish(sample.tokens, sample.mask)
            reflection = TextSegmentRecord(
                sample.tokens,
                sample.mask,
                sample.log_probs if self.train_text else None,
                active=active.clone(),
                sampler=self.reflection_sampler,
            )
            segments.append(reflection)
            if painter_cache is not None:
                painter_cache = self.painter(
                    [TextSegment(look, look_mask), TextSegment(sample.tokens, sample.mask)],
                    painter_cache,
                ).cache
            said = [tok.decode(row[m]) for row, m in zip(sample.tokens, sample.mask)]
            reflections.append(said)
            active = active & torch.tensor([s != "done" for s in said], device=device)
        return EpisodeBatch(episodes, group_ids, segments, thoughts, reflections)

    def _group_noise(self, num_groups: int, group_size: int, generator, device):
        """One initial noise per group, repeated over its G rows (``shared_noise``), else None
        (``paint`` draws one per row)."""
        if not self.shared_noise:
            return None
        cfg = self.painter.config
        shape = (num_groups, cfg.channels, cfg.image_size, cfg.image_size)
        return randn(shape, generator=generator, device=device).repeat_interleave(group_size, 0)

    def _painter_context(self, segments) -> KVCache:
        """The painter's own cache of the text so far (a frozen painter has its own weights)."""
        return self.painter([TextSegment(s.ids, s.mask) for s in segments]).cache
