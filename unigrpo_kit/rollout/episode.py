"""Episodes: interleaved text and image segments with what sampling recorded, batched.

A batch of N episodes shares one segment layout (every row has the same kinds of segments in
the same order); rows that stopped early (the model said ``done``) keep their later segments
with ``active`` False, which removes them from training and from the reward. Segment i's
context is segments[:i]: the model reads all of it, with images as their clean final latents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .painter import Trajectory


@dataclass
class TextSegmentRecord:
    """Text of N episodes: ids [N, n] and mask [N, n].

    ``log_probs`` [N, n] (float32, 0 where ``mask`` is False) are the sampling-time log-probs of
    generated text; given text (a prompt, a ``<look>`` marker) has ``log_probs`` None and is not
    trained. ``active`` [N] marks the rows for which this segment exists. ``sampler`` is the
    :class:`~unigrpo_kit.samplers.text.TextSampler` that generated it, whose processing
    (temperature, top-k, top-p) training must reapply.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    log_probs: torch.Tensor | None = None
    active: torch.Tensor | None = None
    sampler: object = None

    kind = "text"

    @property
    def generated(self) -> bool:
        return self.log_probs is not None

    @property
    def train_mask(self) -> torch.Tensor:
        """[N, n] tokens that the text loss trains on."""
        active = self.active if self.active is not None else torch.ones_like(self.mask[:, 0])
        return self.mask & active[:, None]


@dataclass
class ImageSegmentRecord:
    """One painted image per episode, with its denoising trajectory.

    ``trajectory`` holds the sigma schedule, the latents along the way, which steps were SDE
    steps (trained) and their log-probs, means and stds. ``context_latents`` [N, C, H, W] is
    the clean image later segments see (the final latents clamped to [-1, 1]). ``active`` [N]
    marks the rows that painted this image. ``images`` [N, 3, H, W] in [0, 1] are the final
    latents decoded by the painter (``ImagePolicy.decode_images``), what rewards see.
    ``clamp`` False: ``context_latents`` are the final latents as they are (a latent-space
    painter, whose latents are not bounded; the policy's ``clamp_context`` says which).
    """

    trajectory: Trajectory
    active: torch.Tensor
    guidance_scale: float
    images: torch.Tensor
    clamp: bool = True

    kind = "image"

    @property
    def context_latents(self) -> torch.Tensor:
        final = self.trajectory.final
        return final.clamp(-1, 1) if self.clamp else final


@dataclass
class ConditionRecord:
    """A conditioning that does not depend on trained weights (a diffusers policy's prompt
    encodings from frozen text encoders), computed once at rollout and read back as it is by
    the recomputation. ``context`` is the policy's context of the N rows."""

    context: object

    kind = "condition"


@dataclass
class EpisodeBatch:
    """N episodes (``len(prompts)``), G per prompt; ``group_ids`` [N] says which prompt.

    ``rewards`` and ``advantages`` [N] are filled in by the trainer after scoring;
    ``image_advantages`` [N] too when the recipe gives the painter a reward term of its own
    (``algorithm.image_reward``), else it stays None and the images share ``advantages``.
    ``guided`` [N] bool marks the episodes whose reasoning was the prompt's reference
    (``rollout.guided_members``); None when none was.
    """

    prompts: list
    group_ids: torch.Tensor
    segments: list[TextSegmentRecord | ImageSegmentRecord | ConditionRecord]
    texts: list[str] = field(default_factory=list)
    reflections: list[list[str]] = field(default_factory=list)
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    image_advantages: torch.Tensor | None = None
    reward_metrics: dict = field(default_factory=dict)
    guided: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def image_segments(self) -> list[ImageSegmentRecord]:
        return [s for s in self.segments if s.kind == "image"]

    def final_images(self) -> torch.Tensor | None:
        """[N, 3, H, W]: each row's last image it actually painted (None without images)."""
        images = None
        for seg in self.image_segments:
            current = seg.images
            images = (
                current
                if images is None
                else torch.where(seg.active[:, None, None, None], current, images)
            )
        return images

    def rounds(self) -> torch.Tensor:
        """[N] how many images each row painted."""
        rounds = torch.zeros(len(self), dtype=torch.long, device=self.group_ids.device)
        for seg in self.image_segments:
            rounds = rounds + seg.active.long().to(rounds.device)
        return rounds

    def select(self, rows: torch.Tensor) -> EpisodeBatch:
        """The episodes at index ``rows`` (a LongTensor), e.g. one minibatch."""
        index = rows.tolist()

        def pick(seg):
            if seg.kind == "condition":
                return ConditionRecord(seg.context.select(rows))
            if seg.kind == "text":
                return TextSegmentRecord(
                    seg.ids[rows],
                    seg.mask[rows],
                    None if seg.log_probs is None else seg.log_probs[rows],
                    None if seg.active is None else seg.active[rows],
                    seg.sampler,
                )
            t = seg.trajectory
            trajectory = Trajectory(
                t.latents[rows],
                t.log_probs[rows],
                t.means[rows],
                t.stds[rows],
                t.sde_mask,
                t.sigmas,
            )
            return ImageSegmentRecord(
                trajectory, seg.active[rows], seg.guidance_scale, seg.images[rows], seg.clamp
            )

        return EpisodeBatch(
            prompts=[self.prompts[i] for i in index],
            group_ids=self.group_ids[rows],
            segments=[pick(s) for s in self.segments],
            texts=[self.texts[i] for i in index] if self.texts else [],
            reflections=[[r[i] for i in index] for r in self.reflections],
            rewards=None if self.rewards is None else self.rewards[rows],
            advantages=None if self.advantages is None else self.advantages[rows],
            image_advantages=(
                None if self.image_advantages is None else self.image_advantages[rows]
            ),
            guided=None if self.guided is None else self.guided[rows.cpu()],
        )
