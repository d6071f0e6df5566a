"""The policy protocol: everything the rollout engine, the recomputation, the trainer and the
checkpoints ask of a model, and nothing more.

The trainer never calls a model's own methods; it calls these. A *policy* wraps one trainable
``torch.nn.Module`` (``policy.module``) with what it needs to act: its tokenizer and prompt
format, its stop tokens, its caches. Three roles, each a :class:`typing.Protocol`:

- :class:`TextPolicy` writes text: render prompts in the model's format, prefill and decode with
  a cache (a :class:`TextSession`, which :class:`~unigrpo_kit.samplers.text.TextSampler` drives
  and which keeps the log-probs exact), and recompute, with gradients, the logits of given
  tokens after given context (:meth:`TextPolicy.forward_episode`).
- :class:`ImagePolicy` paints by flow matching: a latent shape, a conditioning context, a
  velocity ``v(context, x_sigma, sigma)`` in the kit's convention
  ``x_sigma = (1 - sigma) x0 + sigma noise``, ``v = noise - x0``, a null context for
  classifier-free guidance, and a decoder from latents to images in [0, 1].
- :class:`UnifiedPolicy` is both over one context, and can look at an image it painted (the
  image enters the context of later text).

Every policy also offers the :class:`TrainablePolicy` surface: parameter groups by part
(``text`` / ``image``) for per-part learning rates, a frozen reference (a separate frozen copy,
or the same weights with the LoRA adapter disabled, with no second copy), and checkpoints in the
ecosystem's own layout, loaded back by registry ``type`` through ``MODELS.build``.

A *context* is the policy's own record of what a batch of rows has seen so far (TinyUnified's
:class:`~unigrpo_kit.models.layout.KVCache`, a Hugging Face cache, prompt embeddings). The
engine treats it as opaque except for three row operations (:class:`Context`).

The sequence grammar (a chat template, ``<think>``, ``<look>``), the tokens that end a
reasoning or a reflection, and the text that ends an episode ("done") belong to the policy and
the task; the engine only asks for them by role.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

# The roles a generated text segment can play; ``TextPolicy.stop_token_ids`` answers per role.
TEXT_ROLES = ("reasoning", "reflection")
# The parts a policy's parameters can belong to; the optimizer reads ``optimizer.lr_<part>``.
PARTS = ("text", "image")


@runtime_checkable
class Context(Protocol):
    """A batch of rows' context. Row operations return new contexts (views where possible)."""

    def select(self, rows: Tensor) -> Context:
        """The context of the rows ``rows`` [b] (an index tensor)."""
        ...

    def repeat_interleave(self, repeats: int) -> Context:
        """Each row repeated ``repeats`` times, copies of a row adjacent."""
        ...

    def prefix(self, num_segments: int) -> Context:
        """The context of the first ``num_segments`` segments of the episode it was built from
        (:meth:`TextPolicy.forward_episode` builds such a context)."""
        ...


@runtime_checkable
class TextSession(Protocol):
    """One generation after a context: what :class:`~unigrpo_kit.samplers.text.TextSampler`
    drives, plus :meth:`finish`.

    Prompts are left-padded. A row that has finished is fed the pad token; the session makes
    those columns invisible, so that what follows sees exactly the tokens the row generated.
    """

    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Any]:
        """Run the given text ``input_ids`` [B, n] (``attention_mask`` 0 on left padding) after
        the session's context; next-token logits [B, V] and the decoding state."""
        ...

    def decode(self, state: Any, token_ids: Tensor) -> tuple[Tensor, Any]:
        """Append one token per row, ``token_ids`` [B]; next-token logits [B, V] and state."""
        ...

    def finish(self, tokens: Tensor, mask: Tensor) -> Context | None:
        """The context after the whole generation ``tokens`` [B, T] (``mask`` True on generated
        tokens), for later segments; None if the policy has no later segments to condition."""
        ...


class EpisodeForward(NamedTuple):
    """One forward pass over a whole episode's segments, with gradients where enabled.

    text_logits: one tensor per text segment, in order: [B, n_i, V], the logits at each of its
        columns (column j predicts token j + 1 of the sequence). The first segment, given text
        (a prompt), may hold only its last column [B, 1, V]: that column predicts the first
        generated token, and the others are never read (a large vocabulary's logits over a long
        prompt would cost memory for nothing).
    context: the context of the whole episode, whose :meth:`Context.prefix` gives each image
        its conditioning; None for a policy that paints nothing.
    """

    text_logits: list[Tensor]
    context: Context | None


@runtime_checkable
class TrainablePolicy(Protocol):
    """What the trainer and the checkpoints need, whatever the policy does."""

    module: torch.nn.Module

    @property
    def device(self) -> torch.device:
        """Where the policy computes (its parameters' device)."""
        ...

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Trainable parameters by part (keys from ``PARTS``); a part may be empty."""
        ...

    def reference(self) -> TrainablePolicy:
        """A frozen reference policy for the KL / velocity-MSE terms: the adapter-disabled
        model under LoRA (no second copy of the weights), else a frozen copy made once."""
        ...

    def train(self, mode: bool = True) -> TrainablePolicy:
        """Set the module's training mode (dropout); returns the policy."""
        ...

    def save(self, folder: Path) -> None:
        """Write the policy into an existing ``folder`` in its ecosystem's layout (full weights
        or the adapter, the tokenizer) and ``unigrpo_policy.json``, the registry ``type`` and
        keyword arguments that rebuild it through ``MODELS.build``."""
        ...

    def load_weights(self, folder: Path) -> None:
        """Load into this policy, in place, the trained weights that :meth:`save` wrote
        (parameters keep their identity, so an optimizer built on them resumes)."""
        ...


@runtime_checkable
class TextPolicy(TrainablePolicy, Protocol):
    """A policy that writes text."""

    pad_token_id: int

    def encode_prompts(
        self, texts: Sequence[str], *, reasoning: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Left-padded ids [B, n] and mask [B, n] of the prompts in the model's format (a chat
        template with the generation prompt, or ``<bos> prompt <think>``), ready for the
        reasoning to follow; ``reasoning=False``: the prompt with an empty reasoning, ready for
        the image (unified policies)."""
        ...

    def stop_token_ids(self, role: str) -> tuple[int, ...]:
        """Tokens that end a generated segment of ``role`` (one of ``TEXT_ROLES``)."""
        ...

    def decode_text(self, ids: Tensor, mask: Tensor) -> list[str]:
        """The text of each row's ``ids`` [B, T] where ``mask`` is True, special tokens and
        stop tokens left out."""
        ...

    # Optional (off-policy guidance, ``rollout.guided_members``): a policy that can be handed a
    # reference text implements
    #     encode_completion(texts, role) -> (ids [B, L], mask [B, L])
    # the right-padded ids of each text as the policy would generate it in ``role``, ending in
    # the role's first stop token (see :func:`completion_ids`).

    def text_session(
        self, context: Context | None, stop_token_ids: Sequence[int] | None = None
    ) -> TextSession:
        """A generation after ``context`` (None: from nothing) whose rows finish at
        ``stop_token_ids`` (the sampler's; None: ``stop_token_ids("reasoning")``)."""
        ...

    def forward_episode(
        self, segments: Sequence[Any], context: Context | None = None
    ) -> EpisodeForward:
        """One forward pass over ``segments`` (:class:`~unigrpo_kit.models.layout.TextSegment`
        ids [B, n] with masks; for unified policies also ``ImageSegment`` clean latents) after
        ``context`` (None: from nothing; a policy without later segments accepts only None).
        The recomputation of an episode: differentiable text logits and the episode's
        context."""
        ...


@runtime_checkable
class ImagePolicy(TrainablePolicy, Protocol):
    """A policy that paints by flow matching."""

    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one image's latents at the policy's resolution, e.g. (C, H, W), or
        (tokens, channels) for a model whose latents are packed; the initial noise's shape."""
        ...

    def sigma_schedule(self, num_steps: int, shift: float) -> Tensor:
        """The noise levels [num_steps + 1] of a rollout, from 1 (noise) to 0 (data): the
        model's own (a diffusers pipeline's scheduler, with its shift) or the recipe's
        ``shift`` applied to a linear grid."""
        ...

    def prompt_context(self, texts: Sequence[str]) -> tuple[list[Any], Context]:
        """Painting from the prompts alone (image-only training): the segment records that an
        episode starts with (what :meth:`forward_episode` reads back in the recomputation) and
        the rows' context."""
        ...

    def forward_episode(
        self, segments: Sequence[Any], context: Context | None = None
    ) -> EpisodeForward:
        """The recomputation's pass over an episode's segments: the context every image was
        painted in (a policy with text also returns its text logits)."""
        ...

    def velocity(self, context: Context, latents: Tensor, sigma: Tensor) -> Tensor:
        """The velocity [B, *latent_shape] of noisy ``latents`` at ``sigma`` [B] given the
        rows' ``context``, with gradients where enabled."""
        ...

    def null_context(self, batch: int) -> Context:
        """The unconditional context of classifier-free guidance, for ``batch`` rows."""
        ...

    def guided_velocity(
        self, context: Context, null: Context, latents: Tensor, sigma: Tensor, scale: float
    ) -> Tensor:
        """Classifier-free guidance, v_u + scale (v_c - v_u), with v_c from ``context`` and v_u
        from ``null`` (a policy may run both in one batched call)."""
        ...

    def decode_images(self, latents: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] from final latents (identity-like for a pixel-space
        model, the VAE for a latent one)."""
        ...


@runtime_checkable
class UnifiedPolicy(TextPolicy, ImagePolicy, Protocol):
    """Text and images over one context: reason, paint, look, reflect, edit."""

    def look(self, context: Context, latents: Tensor) -> Context:
        """The context with a finished image (clean ``latents`` [B, *latent_shape]) appended,
        so that later text and images see it."""
        ...

    def reflection_prompt(self, batch: int) -> tuple[Tensor, Tensor]:
        """The given text [B, n] and mask that open a reflection after an image (e.g.
        ``<look>``); the reflection is generated after it."""
        ...


def completion_ids(rows: Sequence[Sequence[int]], stop_id: int, pad_id: int, device=None):
    """Right-padded ids [B, L] and mask [B, L] (bool) of each row followed by ``stop_id``: a
    reference text in the form a policy generates it (``encode_completion``)."""
    rows = [list(row) + [stop_id] for row in rows]
    width = max(len(row) for row in rows) if rows else 1
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids.to(device), mask.to(device)
