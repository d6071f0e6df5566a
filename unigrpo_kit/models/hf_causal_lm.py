"""Any Hugging Face causal language model as a :class:`~unigrpo_kit.models.protocol.TextPolicy`.

:class:`HFCausalLM` loads a folder or hub id with ``AutoModelForCausalLM`` / ``AutoTokenizer``
and trains it whole (float32 master weights, optionally bfloat16 autocast for the forward
passes) or through a LoRA adapter (``peft``). What it adds to the model is what GRPO needs:

- prompts in the model's own format: the chat template with the generation prompt when the
  tokenizer has one, else ``<bos>`` and the text; left-padded;
- a :class:`HFTextSession` for :class:`~unigrpo_kit.samplers.text.TextSampler`: the prompt is
  prefilled into the model's KV cache, then one token per row per step. Positions count visible
  tokens only (``cumsum(mask) - 1``), so a left-padded row is numbered exactly as the same row
  alone; a row that has emitted a stop token is fed the pad token in invisible columns (mask 0,
  its position frozen), so the logits of every row are those of its own tokens alone;
- :meth:`HFCausalLM.forward_episode`, the recomputation with gradients: one ``use_cache=False``
  pass over [prompt, generation] with the same masks and positions, whose logits reproduce the
  sampled log-probs (the PPO ratio is 1 on the first minibatch);
- a frozen reference: the same weights with the adapter disabled under LoRA (no copy), else a
  frozen copy made once; and checkpoints that ``from_pretrained`` reads with no kit code.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..guard import require_finite_weights
from ..registry import MODELS
from .checkpoint import POLICY_FILE
from .protocol import PARTS, TEXT_ROLES, EpisodeForward, completion_ids

DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
PEFT_MISSING = 'model.lora needs peft: pip install -e ".[peft]"'


def _one_line(error: BaseException) -> str:
    """The first line of an exception's message, for errors that must stay on one line."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _quiet_progress_bars() -> None:
    """No transformers progress bars (loading, writing shards): the run has its own."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _import_peft():
    try:
        import peft
    except ImportError as error:
        raise ImportError(PEFT_MISSING) from error
    return peft


class DecodeState(NamedTuple):
    """What :class:`HFTextSession` carries from one step to the next.

    cache: the model's KV cache (a transformers ``Cache``), L columns.
    mask: [B, L] bool, the visible columns so far (the attention mask of the next step).
    next_position: [B] long, the position the next visible token gets.
    alive: [B] bool, rows that have not emitted a stop token: the next token fed is visible.
    """

    cache: Any
    mask: Tensor
    next_position: Tensor
    alive: Tensor


class HFTextSession:
    """One generation from scratch (no earlier context), which ``TextSampler`` drives.

    ``stop_token_ids`` decide visibility: the token fed at a decode step is visible iff its row
    had not emitted one of them before it (the stop token itself is visible). Visibility is
    tracked here, never read off the pad id, which may be a real token (often eos). Every call
    runs without gradients; the per-step work is one forward pass plus a few [B]-sized tensor
    ops, with no host synchronisation and no loop over rows.
    """

    def __init__(self, policy: HFCausalLM, stop_token_ids: Sequence[int]):
        self.policy = policy
        self.stop_ids = torch.tensor(list(stop_token_ids), dtype=torch.long, device=policy.device)

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, DecodeState]:
        """Run the left-padded prompt ``input_ids`` [B, n] (``attention_mask`` [B, n], 0 on
        padding) into a fresh KV cache. Returns the float32 logits [B, V] that follow the last
        column, and the :class:`DecodeState`."""
        device = self.policy.device
        input_ids = input_ids.to(device)
        mask = attention_mask.to(device).bool()
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        shared = _repeated_rows(input_ids, mask)
        logits, cache = self.policy._prompt_forward(input_ids, mask, positions, shared)
        alive = torch.ones(mask.shape[0], dtype=torch.bool, device=device)
        return logits[:, -1], DecodeState(cache, mask, mask.sum(1), alive)

    @torch.no_grad()
    def decode(self, state: DecodeState, token_ids: Tensor) -> tuple[Tensor, DecodeState]:
        """Append ``token_ids`` [B], one per row: visible (at the row's next position) where the
        row is alive, an invisible column otherwise. Returns float32 logits [B, V] and the new
        state."""
        visible = state.alive
        mask = torch.cat([state.mask, visible[:, None]], dim=1)
        positions = state.next_position[:, None]
        logits, cache = self.policy._forward(
            token_ids[:, None], mask, positions, cache=state.cache, use_cache=True, keep=1
        )
        alive = visible & ~torch.isin(token_ids, self.stop_ids)
        return logits[:, -1], DecodeState(cache, mask, state.next_position + visible, alive)

    def finish(self, tokens: Tensor, mask: Tensor) -> None:
        """Nothing follows a causal LM's generation in an episode: no context to return."""
        return None


def _repeated_rows(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """(first [U], inverse [B]) when some rows of the left-padded ``ids`` [B, n] (``mask``) are
    equal: ``first`` indexes one row of each distinct prompt, ``ids[first][inverse]`` is
    ``ids``; None when every row differs."""
    rows = torch.where(mask, ids, -1)
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    if distinct.shape[0] == rows.shape[0]:
        return None
    order = torch.arange(rows.shape[0], device=ids.device)
    first = torch.full((distinct.shape[0],), rows.shape[0], device=ids.device)
    first = first.scatter_reduce(0, inverse, order, reduce="amin")
    return first, inverse


@MODELS.register_module()
class HFCausalLM:
    """A transformers causal LM (Qwen2, Llama, ... any ``AutoModelForCausalLM``) as a
    :class:`~unigrpo_kit.models.protocol.TextPolicy`; see the module docstring.

    Args (the recipe's ``model.*`` keys):
        path: a local model folder or a hub id.
        lora: None (full fine-tuning) or ``peft.LoraConfig`` keyword arguments (``r``,
            ``lora_alpha``, ``target_modules``, ``lora_dropout``...; the task type is set here).
        adapter: a folder holding a saved LoRA adapter to load, trainable, on top of ``path``
            (to resume or evaluate a LoRA checkpoint); exclusive with ``lora``.
        dtype: ``"float32"``, or ``"bfloat16"``: forward passes under bfloat16 autocast. The
            master weights are float32 either way.
        gradient_checkpointing: recompute activations in the backward pass (non-reentrant).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        chat_template: use the tokenizer's chat template (None: iff the tokenizer has one).
        system_prompt: a system message (needs a chat template).
        prompt_template: the user message, ``prompt_template.format(prompt=text)``.
        stop_token_ids: the tokens that end a generation (default: eos of the tokenizer and of
            the generation config).
        attn_implementation, trust_remote_code: passed to ``from_pretrained``.
    """

    def __init__(
        self,
        path: str,
        *,
        lora: dict | None = None,
        adapter: str | None = None,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        device: str = "auto",
        chat_template: bool | None = None,
        system_prompt: str | None = None,
        prompt_template: str = "{prompt}",
        stop_token_ids: list[int] | None = None,
        attn_implementation: str = "sdpa",
        trust_remote_code: bool = False,
    ) -> None:
        from ..devices import resolve_device

        _quiet_progress_bars()

        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ValueError(
                f"model.path={path!r} is empty; set it to a model folder (with config.json) "
                "or a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'"
            )
        if dtype not in DTYPES:
            raise ValueError(f"model.dtype={dtype!r} is not supported; use float32 or bfloat16")
        if lora is not None and adapter is not None:
            raise ValueError(
                "model.lora and model.adapter are exclusive: the adapter folder carries its own "
                "LoRA config; set model.lora=None to load an adapter"
            )
        if lora is not None and not isinstance(lora, dict):
            raise ValueError(
                f"model.lora must be None or a dict of LoraConfig arguments, got {lora!r}"
            )
        try:
            prompt_template.format(prompt="")
        except (KeyError, IndexError, ValueError, AttributeError) as error:
            raise ValueError(
                f"model.prompt_template={prompt_template!r} must be a format string whose only "
                f"field is {{prompt}} ({_one_line(error)})"
            ) from None
        # peft and the adapter folder are checked before the (possibly long) model load
        peft = _import_peft() if lora is not None or adapter is not None else None
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise ValueError(
                f"model.adapter={adapter!r} holds no adapter_config.json; point it at a "
                "folder written by a LoRA policy's save()"
            )
        path = str(path)
        if Path(path).expanduser().is_dir():
            path = str(Path(path).expanduser().resolve())
        self._kwargs = dict(
            path=path,
            lora=lora,
            adapter=adapter,
            dtype=dtype,
            gradient_checkpointing=gradient_checkpointing,
            device=device,
            chat_template=chat_template,
            system_prompt=system_prompt,
            prompt_template=prompt_template,
            stop_token_ids=None if stop_token_ids is None else list(stop_token_ids),
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self._device = resolve_device(device)
        self._autocast_dtype = DTYPES[dtype]
        try:
            model, self.tokenizer = self._load(path, attn_implementation, trust_remote_code)
        except Exception as error:  # transformers raises OSError, ValueError, HFValidationError
            raise ValueError(
                f"model.path={path!r} is not a model transformers can load "
                f"({_one_line(error)}); use a folder with config.json, the weights and the "
                "tokenizer (save_pretrained layout), or a hub id"
            ) from None
        model = model.float().to(self._device)
        if gradient_checkpointing:
            # Non-reentrant checkpointing needs no input that requires grad, so a LoRA model
            # (whose embeddings are frozen) needs no enable_input_require_grads.
            non_reentrant = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=non_reentrant)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=non_reentrant)
        self._lm = model  # the transformers model (LoRA layers are injected into it in place)
        self._peft = lora is not None or adapter is not None
        if lora is not None:
            try:
                config = peft.LoraConfig(**{**lora, "task_type": "CAUSAL_LM"})
            except (TypeError, ValueError) as error:
                raise ValueError(f"model.lora={lora!r}: {_one_line(error)}") from None
            self.module: torch.nn.Module = peft.get_peft_model(model, config)
        elif adapter is not None:
            self.module = peft.PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            self.module = model
        # Names across transformers versions: 5.x calls the cache ``cache``, 4.x
        # ``past_key_values``; remote-code models may not take ``logits_to_keep``.
        parameters = inspect.signature(type(model).forward).parameters
        self._cache_key = "cache" if "cache" in parameters else "past_key_values"
        self._keeps_logits = "logits_to_keep" in parameters

        self.pad_token_id = next(
            (
                i
                for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
                if i is not None
            ),
            0,
        )
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise ValueError(
                f"model.chat_template=True but the tokenizer of {path!r} has no chat template; "
                "set model.chat_template=None or False"
            )
        self._use_chat_template = has_template if chat_template is None else bool(chat_template)
        if system_prompt is not None and not self._use_chat_template:
            raise ValueError(
                "model.system_prompt needs a chat template, which this policy does not use; "
                "put the instruction in model.prompt_template instead"
            )
        self._system_prompt = system_prompt
        self._prompt_template = prompt_template
        self._stop_ids = self._default_stop_ids(stop_token_ids)
        # The reference's state: a policy view that never trains (see reference()).
        self._frozen = False
        self._adapter_disabled = False
        self._reference: HFCausalLM | None = None

    def _load(self, path: str, attn_implementation: str, trust_remote_code: bool):
        """The transformers model (float32) and tokenizer of ``path``; a subclass loads other
        auto classes (:class:`~unigrpo_kit.models.hf_vision_lm.HFVisionLM`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch.float32,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        return model, AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)

    @classmethod
    def dry_run_spec(cls, model_cfg: dict, task: Any, folder: Path) -> dict:
        """``--dry-run``: a tiny random causal LM saved into ``folder`` (``save_pretrained``
        layout) and ``model_cfg`` pointed at it. When ``model_cfg["path"]`` is a local folder
        with a config.json, the model is of that architecture (:func:`shrunk_config`: same
        ``model_type`` and vocabulary, 2 layers of width 32) with the folder's own tokenizer,
        so the dry run exercises the real chat template; its weights are never read. Otherwise
        (no path, or a hub id: nothing is downloaded) a tiny random Qwen2 with a ChatML
        tokenizer built in memory. ``task`` is unused: the byte-level tokenizer writes any
        text."""
        from .tiny_random import save_tiny_causal_lm, shrunk_config

        _quiet_progress_bars()
        folder = Path(folder)
        path = model_cfg.get("path")
        trust = bool(model_cfg.get("trust_remote_code", False))
        if path and (Path(path).expanduser() / "config.json").is_file():
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            config = shrunk_config(AutoConfig.from_pretrained(path, trust_remote_code=trust))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
            folder.mkdir(parents=True, exist_ok=True)
            model.float().save_pretrained(folder)
            AutoTokenizer.from_pretrained(path, trust_remote_code=trust).save_pretrained(folder)
        else:
            save_tiny_causal_lm(folder, "qwen2")
        return {**model_cfg, "path": str(folder), "adapter": None}

    # -- what the model is ---------------------------------------------------------------------

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype of the forward passes' autocast (``model.dtype``), None for float32:
        FSDP2 may gather the parameters in it (``distributed.param_dtype``)."""
        return self._autocast_dtype

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return self._device

    def _default_stop_ids(self, configured: list[int] | None) -> tuple[int, ...]:
        vocab = self._lm.get_output_embeddings().weight.shape[0]
        if configured is not None:
            ids = tuple(configured)
            if not ids or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
                raise ValueError(
                    f"model.stop_token_ids={list(configured)!r} must be a non-empty list of "
                    f"token ids in [0, {vocab})"
                )
            return ids
        found: list[int] = []
        generation_eos = getattr(self._lm.generation_config, "eos_token_id", None)
        for value in (self.tokenizer.eos_token_id, generation_eos):
            for token in value if isinstance(value, (list, tuple)) else [value]:
                if token is not None and int(token) not in found:
                    found.append(int(token))
        if not found:
            raise ValueError(
                f"the tokenizer and generation config of model.path={self._kwargs['path']!r} "
                "name no eos token; set model.stop_token_ids"
            )
        return tuple(found)

    def stop_token_ids(self, role: str) -> tuple[int, ...]:
        """Tokens that end a generated segment of ``role`` (``"reasoning"`` or
        ``"reflection"``; the same for both): ``model.stop_token_ids`` if set, else the eos
        ids of the tokenizer and of the generation config."""
        if role not in TEXT_ROLES:
            raise ValueError(f"role={role!r} is not one of {', '.join(TEXT_ROLES)}")
        return self._stop_ids

    # -- prompts and text ----------------------------------------------------------------------

    def _prompt_ids(self, texts: Sequence[str]) -> list[list[int]]:
        messages = [self._prompt_template.format(prompt=text) for text in texts]
        if self._use_chat_template:
            system = (
                []
                if self._system_prompt is None
                else [{"role": "system", "content": self._system_prompt}]
            )
            rendered = [
                self.tokenizer.apply_chat_template(
                    [*system, {"role": "user", "content": message}],
                    add_generation_prompt=True,
                    tokenize=False,
                )
                for message in messages
            ]
            return self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        return [
            bos + ids for ids in self.tokenizer(messages, add_special_tokens=False)["input_ids"]
        ]

    def encode_prompts(
        self, texts: Sequence[str], *, reasoning: bool = True
    ) -> tuple[Tensor, Tensor]:
        """The prompts in the model's format (chat template with the generation prompt, or
        ``<bos>`` + text), left-padded with the pad token: ids [B, n] long and mask [B, n] bool
        (False on padding), on :attr:`device`. A causal LM paints nothing, so ``reasoning``
        must be True."""
        if not reasoning:
            raise ValueError("HFCausalLM paints no image: encode_prompts needs reasoning=True")
        rows = self._prompt_ids(list(texts))
        if not rows or min(len(row) for row in rows) == 0:
            raise ValueError(
                "a prompt encodes to no token (an empty text with neither a chat template nor a "
                "bos token); give non-empty prompts"
            )
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = True
        return ids.to(self._device), mask.to(self._device)

    def encode_completion(
        self, texts: Sequence[str], role: str = "reasoning"
    ) -> tuple[Tensor, Tensor]:
        """Right-padded ids [B, L] and mask of each text as the model would generate it (the
        tokenizer's ids without special tokens) followed by the role's first stop token: a
        reference completion for off-policy guidance (``rollout.guided_members``)."""
        stop = self.stop_token_ids(role)[0]
        rows = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return completion_ids(rows, stop, self.pad_token_id, self._device)

    def decode_text(self, ids: Tensor, mask: Tensor) -> list[str]:
        """The text of each row of ``ids`` [B, T] where ``mask`` [B, T] is True, stop tokens
        and special tokens left out, stripped: a list of B strings."""
        stops = set(self._stop_ids)
        rows = [
            [token for token, keep in zip(row, keep_row) if keep and token not in stops]
            for row, keep_row in zip(ids.tolist(), mask.bool().tolist())
        ]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [text.strip() for text in texts]

    # -- forward passes ------------------------------------------------------------------------

    def _forward_context(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast when asked; for the reference also no gradients, eval mode and,
        under LoRA, the adapter disabled. Nothing at all for a float32 policy (the hot path)."""
        if self._autocast_dtype is None and not self._frozen:
            return contextlib.nullcontext()
        return self._adjusted_forward()

    @contextlib.contextmanager
    def _adjusted_forward(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self._autocast_dtype is not None:
                stack.enter_context(torch.autocast(self._device.type, dtype=self._autocast_dtype))
            if self._frozen:
                stack.enter_context(torch.no_grad())
                if self._adapter_disabled:
                    stack.enter_context(self.module.disable_adapter())
                if self.module.training:  # the policy's module, shared under LoRA
                    self.module.eval()
                    stack.callback(self.module.train)
            yield

    def _forward(
        self,
        input_ids: Tensor,
        mask: Tensor,
        positions: Tensor,
        *,
        cache: Any = None,
        use_cache: bool,
        keep: int,
        **inputs: Any,
    ) -> tuple[Tensor, Any]:
        """One model call: float32 logits [B, keep, V] of the last ``keep`` columns, and the
        cache (None unless ``use_cache``). ``inputs`` go to the model as they are (a vision
        model's ``pixel_values``)."""
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=use_cache,
            **inputs,
        )  # fmt: skip
        if cache is not None:
            kwargs[self._cache_key] = cache
        if self._keeps_logits:
            kwargs["logits_to_keep"] = keep
        with self._forward_context():
            out = self.module(**kwargs)
        logits = out.logits if self._keeps_logits else out.logits[:, -keep:]
        return logits.float(), (getattr(out, self._cache_key) if use_cache else None)

    def _prompt_forward(
        self, ids: Tensor, mask: Tensor, positions: Tensor, shared: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Any]:
        """The prompt pass with a cache: the last column's logits [B, 1, V] and the cache of
        all B rows. Rows that repeat (the G episodes of a group share their prompt) are run
        once and their cache rows copied (``Cache.batch_select_indices``, differentiable), so a
        group's prompt costs one row, in sampling and in the recomputation alike; the result
        is the same computation as running every row. ``shared``: the rows' repeats
        (:func:`_repeated_rows`), None when every row differs."""
        if shared is None:
            return self._forward(ids, mask, positions, use_cache=True, keep=1)
        first, inverse = shared
        logits, cache = self._forward(
            ids[first], mask[first], positions[first], use_cache=True, keep=1
        )
        cache.batch_select_indices(inverse)
        return logits[inverse], cache

    def text_session(
        self, context: None, stop_token_ids: Sequence[int] | None = None
    ) -> HFTextSession:
        """A generation from nothing (``context`` must be None: nothing precedes a causal LM's
        prompt). ``stop_token_ids`` are the tokens after which a row's columns turn invisible;
        they must be the sampler's. Default: ``stop_token_ids("reasoning")``, which is what the
        engine's sampler uses."""
        if context is not None:
            raise ValueError(
                "HFCausalLM generates from a prompt only: text_session needs context=None"
            )
        stops = self._stop_ids if stop_token_ids is None else tuple(stop_token_ids)
        return HFTextSession(self, stops)

    def forward_episode(self, segments: Sequence[Any], context: None = None) -> EpisodeForward:
        """One forward pass, with gradients where enabled, over text ``segments`` (each with
        ``.ids`` [B, n_i] and ``.mask`` [B, n_i]: a left-padded prompt, then generations whose
        masks are False after their stop token), concatenated along the columns with positions
        ``cumsum(mask) - 1``.

        Returns ``EpisodeForward(text_logits, None)``, float32. The first segment is given text
        (the prompt), of which only the last column is ever read: its logits are that column
        alone, [B, 1, V], which spares a big vocabulary the logits of the whole prompt. Every
        later segment's logits are full, [B, n_i, V]; column j predicts the token after it.
        """
        if context is not None:
            raise ValueError("HFCausalLM reads an episode from its prompt: context must be None")
        if not segments:
            raise ValueError("forward_episode needs at least one text segment")
        if any(getattr(segment, "kind", "text") != "text" for segment in segments):
            raise ValueError("HFCausalLM reads text segments only (it has no image segments)")
        ids = torch.cat([segment.ids for segment in segments], dim=1).to(self._device)
        mask = torch.cat([segment.mask for segment in segments], dim=1).to(self._device).bool()
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        first = segments[0].ids.shape[1]
        lengths = [segment.ids.shape[1] for segment in segments[1:]]
        # Distinct prompts (or checkpointed layers, which run without a cache): one pass.
        shared = _repeated_rows(ids[:, :first], mask[:, :first])
        if len(segments) == 1 or shared is None or self._kwargs["gradient_checkpointing"]:
            logits, _ = self._forward(
                ids, mask, positions, use_cache=False, keep=ids.shape[1] - first + 1
            )
            return EpisodeForward(list(logits.split([1, *lengths], dim=1)), None)
        # The prompt through the cache (each distinct prompt once), then the generations after
        # it: the same logits and gradients as one pass over every row's columns.
        prompt_logits, cache = self._prompt_forward(
            ids[:, :first], mask[:, :first], positions[:, :first], shared
        )
        logits, _ = self._forward(
            ids[:, first:], mask, positions[:, first:], cache=cache, use_cache=True,
            keep=ids.shape[1] - first,
        )  # fmt: skip
        return EpisodeForward([prompt_logits, *logits.split(lengths, dim=1)], None)

    # -- training surface ----------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """``{"text": [trainable parameters], "image": []}``: the adapter's under LoRA, all of
        the model's otherwise; nothing for the reference."""
        groups: dict[str, list[torch.nn.Parameter]] = {part: [] for part in PARTS}
        if not self._frozen:
            groups["text"] = [p for p in self.module.parameters() if p.requires_grad]
        return groups

    def reference(self) -> HFCausalLM:
        """The frozen reference, made once and cached: under LoRA the same module with the
        adapter disabled in every forward pass (no copy of the weights); otherwise a frozen,
        eval-mode deep copy of the model as it is now (call this before training). Its forward
        passes run without gradients; it has no trainable parameters and never trains."""
        if self._frozen:
            return self
        if self._reference is None:
            reference = copy.copy(self)
            reference._frozen = True
            reference._reference = None
            if self._peft:
                reference._adapter_disabled = True
            else:
                module = copy.deepcopy(self.module).requires_grad_(False).eval()
                for parameter in module.parameters():
                    parameter.grad = None
                reference.module = reference._lm = module
            self._reference = reference
        return self._reference

    def train(self, mode: bool = True) -> HFCausalLM:
        """Set the module's training mode (dropout; gradient checkpointing acts only in
        training mode); the reference stays in eval mode. Returns the policy."""
        if not self._frozen:
            self.module.train(mode)
        return self

    def eval(self) -> HFCausalLM:
        """``train(False)``."""
        return self.train(False)

    def save(self, folder: Path) -> None:
        """Write the policy into ``folder``: the float32 weights (``model.safetensors``, sharded
        for a big model) or, under LoRA, the adapter alone (``adapter_model.safetensors``,
        ``adapter_config.json``), the tokenizer, and ``unigrpo_policy.json``, whose kwargs
        rebuild the policy through ``MODELS.build`` once ``"."`` is read as ``folder`` (as
        ``checkpoint.policy_spec`` does): full, ``path="."``; LoRA, the base ``path`` and
        ``adapter="."``. ``from_pretrained`` reads the folder with no kit code."""
        if self._frozen:
            raise RuntimeError("the reference policy is frozen and has nothing to save")
        require_finite_weights(self.module, f"save {folder}")
        folder = Path(folder).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.module.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        # "." is the checkpoint folder itself (checkpoint.policy_spec resolves it), so that a
        # checkpoint can move; a LoRA base stays where it was (absolute path or hub id).
        kwargs = dict(self._kwargs)
        if self._peft:
            kwargs.update(adapter=".", lora=None)
        else:
            kwargs.update(path=".")
        record = {"type": type(self).__name__, "kwargs": kwargs}
        (folder / POLICY_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def load_weights(self, folder: Path) -> None:
        """Copy in place (parameters keep their identity) what :meth:`save` wrote into
        ``folder``: the model's safetensors (single file or sharded with its index) or, under
        LoRA, the adapter. A one-line error if a file is missing or does not fit the model."""
        from safetensors.torch import load_file

        if self._frozen:
            raise RuntimeError("the reference policy is frozen: load weights into the policy")
        folder = Path(folder)
        if self._peft:
            peft = _import_peft()
            file = folder / "adapter_model.safetensors"
            if not file.is_file():
                raise FileNotFoundError(f"{file} is missing: not a LoRA policy's checkpoint")
            result = peft.set_peft_model_state_dict(self.module, load_file(file))
            missing = [key for key in result.missing_keys if "lora_" in key]
            if result.unexpected_keys or missing:
                raise ValueError(
                    f"the adapter in {folder} does not fit this model "
                    f"(unexpected {result.unexpected_keys[:3]}, missing {missing[:3]})"
                )
            return
        index = folder / "model.safetensors.index.json"
        if (folder / "model.safetensors").is_file():
            files = [folder / "model.safetensors"]
        elif index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [folder / shard for shard in shards]
            absent = [file.name for file in files if not file.is_file()]
            if absent:
                raise FileNotFoundError(
                    f"{folder} lacks the shards {absent[:3]} that its index names"
                )
        else:
            raise FileNotFoundError(
                f"{folder} holds neither model.safetensors nor model.safetensors.index.json"
            )
        state: dict[str, Tensor] = {}
        for file in files:
            state.update(load_file(file))
        try:
            result = self.module.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shapes that do not fit
            raise ValueError(
                f"the weights in {folder} do not fit this model: {_one_line(error)}"
            ) from None
        # save_pretrained leaves out tied copies (lm_head of tied embeddings): a missing key is
        # fine when its tensor is one that was loaded.
        loaded = {
            tensor.data_ptr()
            for name, tensor in self.module.state_dict(keep_vars=True).items()
            if name in state
        }
        tensors = self.module.state_dict(keep_vars=True)
        missing = [key for key in result.missing_keys if tensors[key].data_ptr() not in loaded]
        if result.unexpected_keys or missing:
            raise ValueError(
                f"the weights in {folder} do not fit this model "
                f"(unexpected {result.unexpected_keys[:3]}, missing {missing[:3]})"
            )
