"""A reasoner and a painter presented to the trainer as one policy: think, then paint.

:class:`ComposedUnified` puts a text policy (the *reasoner*, a Hugging Face causal LM,
:class:`~unigrpo_kit.models.hf_causal_lm.HFCausalLM`) in front of an image policy (the *painter*,
a diffusers flow-matching pipeline, :class:`~unigrpo_kit.models.diffusers.DiffusersFlowPolicy`)
and answers the policy protocol for both, so that the rollout engine, the recomputation and the
trainer run UniGRPO (arXiv 2603.23500) on real models unchanged. One episode is

    c (prompt) -> y ~ pi_text(. | c) (reasoning) -> x_0 ~ pi_img(. | T(c, y)) (image),

where T is the painter's prompt template (``"{reasoning}"`` by default: the painter is told the
reasoning, think-then-generate's final description). Its log-probability factors over the
generated tokens and the trained (SDE-window) denoising steps,

    log pi(y, x | c) = sum_k log pi_text(y_k | c, y_<k)
                       + sum_{t in T_sde} log pi_img(x_{t-1} | x_t, T(c, y)),

and UniGRPO's one advantage A_i per episode (Eq. 7) weighs both sums: GRPO (Eq. 2) trains the
reasoner on the tokens, Flow-GRPO (Eq. 6) the painter's transformer on the window's steps. No
gradient crosses from the image to the reasoner: the reasoning reaches the painter as text,
through its frozen text encoders, so the reasoner learns from the image's reward through the
shared advantage alone.

How the protocol maps onto the parts:

- text (``encode_prompts``, ``stop_token_ids``, ``decode_text``, ``text_session``,
  ``pad_token_id``): the reasoner's. ``encode_prompts`` also remembers the text of every row it
  encoded, keyed by the row's visible token ids (the last ``PROMPT_MEMORY`` distinct rows), so
  that a template with ``{prompt}`` can be filled from an episode's prompt ids;
- the end of the reasoning (:meth:`ComposedTextSession.finish`): the reasoning decoded, the
  template filled, the painter's ``prompt_context`` of those texts, wrapped in a
  :class:`PainterContext` (which keeps the texts, for reading what the painter was told);
- images (``latent_shape``, ``sigma_schedule``, ``velocity``, ``guided_velocity``,
  ``null_context``, ``decode_images``, ``prompt_context``): the painter's, the context
  unwrapped;
- the recomputation (:meth:`ComposedUnified.forward_episode`): the reasoner's pass over the text
  segments gives the text logits; the painter's context is rebuilt from the recorded reasoning
  ids through the same decoding and template. The painter's text encoders are frozen and it
  caches the encoding of each text, so the context is the rollout's;
- training: ``module`` is ``ModuleDict({"text": reasoner.module, "image": painter.module})``,
  ``parameter_groups()`` the reasoner's text and the painter's image parameters (so
  ``optimizer.lr_text`` and ``lr_image`` act per part; LoRA per part through each part's own
  ``lora``), ``reference()`` the composition of the two parts' references;
- checkpoints: each part saves into its own sub-folder in its own layout (``reasoner/``:
  ``save_pretrained`` or a peft adapter; ``painter/``: a diffusers LoRA or a transformer
  folder), with its own ``unigrpo_policy.json``; the composed ``unigrpo_policy.json`` names the
  sub-folders (``reasoner="reasoner"``, ``painter="painter"``) and ``folder="."``, which
  ``checkpoint.policy_spec`` resolves to the checkpoint, so the sub-folders are read relative to
  it wherever it moves.

Single round: the reasoner does not look at the painted image (no ``look`` or
``reflection_prompt``), so this policy is a ``TextPolicy`` and an ``ImagePolicy`` but not a
``UnifiedPolicy``. Multi-round episodes (a vision-language reasoner that looks at each image and
reflects, an editor that paints the next image from the previous one and the reflection) are
its subclass :class:`~unigrpo_kit.models.composed_multiround.ComposedMultiRound`, a
``UnifiedPolicy``.
"""

from __future__ import annotations

import copy
import json
import re
import string
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..registry import MODELS
from ..rollout.episode import ConditionRecord
from .checkpoint import POLICY_FILE, policy_spec
from .protocol import PARTS, EpisodeForward, ImagePolicy, TextPolicy

# The painter's prompt is the template filled with these fields.
TEMPLATE_FIELDS = ("prompt", "reasoning")
# Distinct prompt rows whose texts encode_prompts remembers (a step encodes a few).
PROMPT_MEMORY = 4096
# The part types each role accepts by default, and the sub-folders a checkpoint keeps them in.
DEFAULT_TYPES = {"reasoner": "HFCausalLM", "painter": "DiffusersFlowPolicy"}
ROLES = tuple(DEFAULT_TYPES)


@dataclass(frozen=True, eq=False)
class PainterContext:
    """The painter's conditioning of B rows and the texts it was encoded from.

    painter: the painter's own context (a
        :class:`~unigrpo_kit.models.diffusers.PromptEmbeddings`).
    texts: the B painter prompts (the template filled with each row's prompt and reasoning).

    A single-round episode's conditioning does not grow: :meth:`prefix` returns it unchanged.
    """

    painter: Any
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def select(self, rows: Tensor) -> PainterContext:
        """The rows ``rows`` [b] (an index tensor)."""
        index = rows.flatten().tolist()
        return PainterContext(self.painter.select(rows), tuple(self.texts[i] for i in index))

    def repeat_interleave(self, repeats: int) -> PainterContext:
        """Each row ``repeats`` times, copies adjacent."""
        texts = tuple(text for text in self.texts for _ in range(repeats))
        return PainterContext(self.painter.repeat_interleave(repeats), texts)

    def prefix(self, num_segments: int) -> PainterContext:
        """The conditioning of the episode's image: itself."""
        return self


def unwrap(context: Any) -> Any:
    """The painter's own context inside a :class:`PainterContext` (anything else as it is)."""
    return context.painter if isinstance(context, PainterContext) else context


class ComposedTextSession:
    """The reasoner's :class:`~unigrpo_kit.models.protocol.TextSession`, whose :meth:`finish`
    turns the reasoning into the painter's conditioning. ``prefill`` keeps the prompt ids (for a
    template with ``{prompt}``); ``prefill`` and ``decode`` are the reasoner's."""

    def __init__(self, policy: ComposedUnified, inner: Any) -> None:
        self.policy = policy
        self.inner = inner
        self.prompt: tuple[Tensor, Tensor] | None = None

    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Any]:
        """The reasoner's prefill of the left-padded prompts ``input_ids`` [B, n]."""
        self.prompt = (input_ids, attention_mask)
        return self.inner.prefill(input_ids, attention_mask)

    def decode(self, state: Any, token_ids: Tensor) -> tuple[Tensor, Any]:
        """The reasoner's decoding step of ``token_ids`` [B]."""
        return self.inner.decode(state, token_ids)

    def finish(self, tokens: Tensor, mask: Tensor) -> PainterContext:
        """The painter's conditioning after the reasoning ``tokens`` [B, T] (``mask`` True on
        generated tokens): :meth:`ComposedUnified.condition`."""
        if self.prompt is None:
            raise RuntimeError("finish() before prefill(): the session generated nothing")
        self.inner.finish(tokens, mask)
        return self.policy.condition(*self.prompt, tokens, mask)


@MODELS.register_module()
class ComposedUnified:
    """A reasoner (text policy) and a painter (image policy) as one policy; see the module
    docstring for the episode, the objective and the mapping onto the protocol.

    Args (the recipe's ``model.*`` keys):
        reasoner: the reasoner's keyword arguments (``model.reasoner.path``, ``lora``, ...;
            ``type`` defaults to ``"HFCausalLM"``), or the name of a sub-folder of ``folder``
            (or any folder) that holds a saved part (its ``unigrpo_policy.json``).
        painter: the painter's, likewise (``type``: ``"SD3Policy"``, ``"FluxPolicy"`` or
            ``"DiffusersFlowPolicy"``, the default, which picks the family of ``path``).
        template: the painter's prompt, ``template.format(prompt=..., reasoning=...)`` per row;
            fields ``{prompt}`` (the task's prompt text) and ``{reasoning}`` (the decoded
            reasoning); default ``"{reasoning}"``.
        device: when given, both parts' ``device`` (they must compute on one device).
        folder: where part names are read from (``"."`` in a saved ``unigrpo_policy.json``: the
            checkpoint folder, as ``checkpoint.policy_spec`` resolves it); None: as given.
    """

    default_types = DEFAULT_TYPES  # each role's part type when the recipe names none

    def __init__(
        self,
        reasoner: dict | str,
        painter: dict | str,
        *,
        template: str = "{reasoning}",
        device: str | None = None,
        folder: str | None = None,
    ) -> None:
        fields = _template_fields(template)
        parts = {
            role: _build_part(role, spec, device, folder, self.default_types)
            for role, spec in (("reasoner", reasoner), ("painter", painter))
        }
        self._setup(parts["reasoner"], parts["painter"], template, fields, OrderedDict())
        self._kwargs = dict(template=template, device=device)

    def _setup(
        self, reasoner: Any, painter: Any, template: str, fields: set[str], memory: OrderedDict
    ) -> None:
        if reasoner.device != painter.device:
            raise ValueError(
                f"model.reasoner runs on {reasoner.device} and model.painter on "
                f"{painter.device}: both parts must compute on one device (set model.device)"
            )
        self.reasoner = reasoner
        self.painter = painter
        self.template = template
        self._fields = fields
        self._prompt_texts = memory  # visible prompt ids -> prompt text (shared with reference)
        self.pad_token_id = reasoner.pad_token_id
        self.module: torch.nn.Module = torch.nn.ModuleDict(
            {"text": reasoner.module, "image": painter.module}
        )
        self._reference: ComposedUnified | None = None

    @classmethod
    def dry_run_spec(cls, model_cfg: dict, task: Any, folder: Path) -> dict:
        """``--dry-run``: each part's own ``dry_run_spec`` (a tiny random causal LM, a tiny
        random pipeline of the painter's family) into ``folder/reasoner`` and
        ``folder/painter``; ``model_cfg`` with both parts pointed at them."""
        spec = dict(model_cfg)
        for role in ROLES:
            part = _part_dict(role, model_cfg.get(role), cls.default_types)
            part_class = MODELS.get(part["type"])
            spec[role] = part_class.dry_run_spec(part, task, Path(folder) / role)
        return spec

    # -- what the policy is --------------------------------------------------------------------

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The parts' common autocast dtype (None unless both compute under the same one)."""
        dtypes = {getattr(part, "autocast_dtype", None) for part in (self.reasoner, self.painter)}
        return dtypes.pop() if len(dtypes) == 1 else None

    @property
    def device(self) -> torch.device:
        """The device both parts compute on."""
        return self.reasoner.device

    # -- text: the reasoner --------------------------------------------------------------------

    def encode_prompts(
        self, texts: Sequence[str], *, reasoning: bool = True
    ) -> tuple[Tensor, Tensor]:
        """The reasoner's left-padded prompts, ids [B, n] and mask [B, n]; each row's text is
        remembered under its visible ids, for a template with ``{prompt}``."""
        ids, mask = self.reasoner.encode_prompts(texts, reasoning=reasoning)
        for text, key in zip(texts, _row_keys(ids, mask)):
            self._prompt_texts[key] = text
            self._prompt_texts.move_to_end(key)
        while len(self._prompt_texts) > PROMPT_MEMORY:
            self._prompt_texts.popitem(last=False)
        return ids, mask

    def stop_token_ids(self, role: str) -> tuple[int, ...]:
        """The reasoner's tokens that end a segment of ``role``."""
        return self.reasoner.stop_token_ids(role)

    def decode_text(self, ids: Tensor, mask: Tensor) -> list[str]:
        """The reasoner's text of ``ids`` [B, T] where ``mask`` is True."""
        return self.reasoner.decode_text(ids, mask)

    def encode_completion(
        self, texts: Sequence[str], role: str = "reasoning"
    ) -> tuple[Tensor, Tensor]:
        """The reasoner's ids of reference texts in ``role`` (off-policy guidance)."""
        return self.reasoner.encode_completion(texts, role)

    def text_session(
        self, context: None, stop_token_ids: Sequence[int] | None = None
    ) -> ComposedTextSession:
        """The reasoner's generation from the prompt (``context`` None), whose ``finish``
        returns the painter's conditioning."""
        return ComposedTextSession(self, self.reasoner.text_session(context, stop_token_ids))

    # -- the bridge: reasoning -> the painter's conditioning -----------------------------------

    def painter_texts(
        self, prompt_ids: Tensor, prompt_mask: Tensor, tokens: Tensor, mask: Tensor
    ) -> list[str]:
        """The painter's prompt of each row: ``template`` filled with the row's prompt text
        (remembered by :meth:`encode_prompts`) and its reasoning, ``decode_text(tokens, mask)``."""
        reasonings = self.reasoner.decode_text(tokens, mask)
        prompts = [""] * len(reasonings)
        if "prompt" in self._fields:
            prompts = [self._prompt_text(key) for key in _row_keys(prompt_ids, prompt_mask)]
        return [
            self.template.format(prompt=prompt, reasoning=reasoning)
            for prompt, reasoning in zip(prompts, reasonings)
        ]

    def condition(
        self, prompt_ids: Tensor, prompt_mask: Tensor, tokens: Tensor, mask: Tensor
    ) -> PainterContext:
        """The painter's conditioning of B rows after their prompt (``prompt_ids`` [B, n],
        ``prompt_mask``) and reasoning (``tokens`` [B, T], ``mask``): the painter's
        ``prompt_context`` of :meth:`painter_texts` (frozen encoders, no gradients)."""
        texts = self.painter_texts(prompt_ids, prompt_mask, tokens, mask)
        _, context = self.painter.prompt_context(texts)
        return PainterContext(context, tuple(texts))

    def _prompt_text(self, key: tuple[int, ...]) -> str:
        if key not in self._prompt_texts:
            raise KeyError(
                f"model.template={self.template!r} needs the prompt's text, but these prompt ids "
                "were not encoded by this policy's encode_prompts (or were forgotten); use a "
                "template with {reasoning} alone"
            )
        return self._prompt_texts[key]

    # -- the recomputation ---------------------------------------------------------------------

    def forward_episode(self, segments: Sequence[Any], context: None = None) -> EpisodeForward:
        """One pass over a single-round episode: ``EpisodeForward(text_logits, context)``.

        With text segments [prompt ids, reasoning ids] (image segments are ignored: the painter
        reads its trajectory in the recomputation), ``text_logits`` are the reasoner's
        (the prompt's last column [B, 1, V], the reasoning's [B, T, V]) and ``context`` the
        painter's conditioning rebuilt from the reasoning (:meth:`condition`). An image-only
        episode (a recorded ``ConditionRecord``) gives its recorded context and no logits."""
        if context is not None:
            raise ValueError("ComposedUnified reads an episode from its prompt: context=None")
        for segment in segments:
            if getattr(segment, "kind", None) == "condition":
                return EpisodeForward([], segment.context)
        text = [segment for segment in segments if getattr(segment, "kind", "text") == "text"]
        if len(text) != 2:
            raise ValueError(
                f"ComposedUnified is single-round: an episode is a prompt and a reasoning (2 "
                f"text segments), got {len(text)}; use rollout.max_rounds=1"
            )
        out = self.reasoner.forward_episode(text)
        prompt, reasoning = text
        return EpisodeForward(
            out.text_logits, self.condition(prompt.ids, prompt.mask, reasoning.ids, reasoning.mask)
        )

    # -- images: the painter -------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, ...]:
        """The painter's latent shape."""
        return self.painter.latent_shape()

    def sigma_schedule(self, num_steps: int, shift: float) -> Tensor:
        """The painter's noise levels [num_steps + 1]."""
        return self.painter.sigma_schedule(num_steps, shift)

    def prompt_context(self, texts: Sequence[str]) -> tuple[list[Any], PainterContext]:
        """Painting from the prompts alone (``rollout.reasoning=False``): the painter's
        conditioning of ``texts`` as they are, recorded for the recomputation."""
        _, context = self.painter.prompt_context(texts)
        wrapped = PainterContext(context, tuple(texts))
        return [ConditionRecord(wrapped)], wrapped

    def velocity(self, context: PainterContext, latents: Tensor, sigma: Tensor) -> Tensor:
        """The painter's velocity [B, *latent_shape] at ``latents``, ``sigma`` [B]."""
        return self.painter.velocity(unwrap(context), latents, sigma)

    def null_context(self, batch: int) -> PainterContext:
        """The painter's unconditional context of ``batch`` rows (its negative prompt)."""
        negative = getattr(self.painter, "negative_prompt", "")
        return PainterContext(self.painter.null_context(batch), (negative,) * batch)

    def guided_velocity(
        self,
        context: PainterContext,
        null: PainterContext,
        latents: Tensor,
        sigma: Tensor,
        scale: float,
    ) -> Tensor:
        """The painter's classifier-free guidance, v_u + scale (v_c - v_u)."""
        return self.painter.guided_velocity(unwrap(context), unwrap(null), latents, sigma, scale)

    def decode_images(self, latents: Tensor) -> Tensor:
        """The painter's images [B, 3, H, W] in [0, 1]."""
        return self.painter.decode_images(latents)

    # -- training surface ----------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """``{"text": the reasoner's trainable parameters, "image": the painter's}`` (each
        part's adapter under its LoRA); nothing for the reference."""
        groups: dict[str, list[torch.nn.Parameter]] = {part: [] for part in PARTS}
        groups["text"] = list(self.reasoner.parameter_groups()["text"])
        groups["image"] = list(self.painter.parameter_groups()["image"])
        return groups

    def reference(self) -> ComposedUnified:
        """The composition of the parts' frozen references (each an adapter-disabled view
        under LoRA, else a frozen copy), made once; it shares the prompt memory."""
        if self._reference is None:
            reasoner, painter = self.reasoner.reference(), self.painter.reference()
            if reasoner is self.reasoner and painter is self.painter:
                return self  # already a reference
            reference = copy.copy(self)  # a subclass's own settings come along
            reference._setup(reasoner, painter, self.template, self._fields, self._prompt_texts)
            reference._kwargs = dict(self._kwargs)
            self._reference = reference
        return self._reference

    def train(self, mode: bool = True) -> ComposedUnified:
        """Both parts' training mode (the references stay in eval mode). Returns the policy."""
        self.reasoner.train(mode)
        self.painter.train(mode)
        return self

    def eval(self) -> ComposedUnified:
        """``train(False)``."""
        return self.train(False)

    def save(self, folder: Path) -> None:
        """Each part into its sub-folder in its own layout (``folder/reasoner``,
        ``folder/painter``, each with its ``unigrpo_policy.json``), and ``unigrpo_policy.json``
        ``{"type": "ComposedUnified", "kwargs": {"reasoner": "reasoner", "painter":
        "painter", "folder": ".", ...}}``, which ``MODELS.build(policy_spec(folder))`` rebuilds
        from the sub-folders."""
        folder = Path(folder).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.reasoner.save(folder / "reasoner")
        self.painter.save(folder / "painter")
        kwargs = {"reasoner": "reasoner", "painter": "painter", **self._kwargs, "folder": "."}
        record = {"type": type(self).__name__, "kwargs": kwargs}
        (folder / POLICY_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def load_weights(self, folder: Path) -> None:
        """Each part's :meth:`load_weights` from its sub-folder, in place."""
        self.reasoner.load_weights(Path(folder) / "reasoner")
        self.painter.load_weights(Path(folder) / "painter")


# ----------------------------------------------------------------------------- helpers


def _template_fields(
    template: Any, allowed: Sequence[str] = TEMPLATE_FIELDS, key: str = "model.template"
) -> set[str]:
    """The fields of a prompt template; a one-line error naming ``key`` unless it is a format
    string whose fields are among ``allowed`` (at least one)."""
    names = " and/or ".join(f"{{{name}}}" for name in reversed(allowed))
    hint = f"a format string with {names}, e.g. '{{prompt}}. {{{allowed[-1]}}}'"
    if not isinstance(template, str):
        raise ValueError(f"{key}={template!r}: must be {hint}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(f"{key}={template!r}: {error}; must be {hint}") from None
    if not fields or not fields <= set(allowed):
        raise ValueError(f"{key}={template!r}: must be {hint}")
    return fields


def _row_keys(ids: Tensor, mask: Tensor) -> list[tuple[int, ...]]:
    """Each row's visible ids (``ids`` [B, n] where ``mask``), as a hashable key."""
    return [
        tuple(token for token, keep in zip(row, keep_row) if keep)
        for row, keep_row in zip(ids.tolist(), mask.bool().tolist())
    ]


def _part_dict(role: str, spec: Any, defaults: dict = DEFAULT_TYPES) -> dict:
    """A part's keyword arguments with its ``type`` (default: ``defaults[role]``)."""
    if not isinstance(spec, dict):
        raise ValueError(
            f"model.{role}={spec!r}: must be a dict of the {role}'s arguments, e.g. "
            f"dict(type='{defaults[role]}', path=...)"
        )
    return {"type": defaults[role], **spec}


def _saved_part(role: str, name: str, folder: str | None) -> dict:
    """The build spec of the part saved in ``name`` (relative to ``folder`` when given)."""
    path = Path(name).expanduser()
    if folder is not None and not path.is_absolute():
        path = Path(folder) / path
    if not (path / POLICY_FILE).is_file():
        raise ValueError(
            f"model.{role}={name!r}: {path} holds no {POLICY_FILE}; give the {role}'s arguments "
            "as a dict, or a folder written by a ComposedUnified's save()"
        )
    return policy_spec(path)


def _build_part(
    role: str, spec: Any, device: str | None, folder: str | None, defaults: dict = DEFAULT_TYPES
) -> Any:
    """The part ``role`` built from its dict or saved folder; a one-line error naming
    ``model.<role>.<key>``."""
    if isinstance(spec, str):
        spec = _saved_part(role, spec, folder)
    else:
        spec = _part_dict(role, spec, defaults)
    if device is not None:
        spec["device"] = device
    if not spec.get("path") and not spec.get("checkpoint"):  # TinyUnified names a checkpoint
        raise ValueError(
            f"model.{role}.path={spec.get('path')!r} is empty; set it to the {role}'s model "
            "folder (save_pretrained layout) or hub id"
        )
    try:
        part = MODELS.build(spec)
    except (ValueError, TypeError, KeyError) as error:
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        named = re.sub(r"\bmodel\.(?!reasoner|painter)", f"model.{role}.", message)
        raise ValueError(named) from None
    wanted = TextPolicy if role == "reasoner" else ImagePolicy
    if not isinstance(part, wanted):
        raise ValueError(
            f"model.{role}.type={spec['type']!r} is not a {wanted.__name__}; the {role} must be "
            f"one (e.g. {defaults[role]})"
        )
    return part
