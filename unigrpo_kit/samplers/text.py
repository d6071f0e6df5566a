"""Autoregressive text sampling with recorded log-probs, driven through a KV-cache protocol.

The sampler knows no model. A policy exposes :class:`TextPolicy` (``prefill`` runs the prompt
and builds the cache, ``decode`` appends one token per row), and :class:`TextSampler` turns the
next-token logits into tokens and the log-probabilities that GRPO's ratio needs. Training
recomputes those log-probs with :meth:`TextSampler.token_log_probs`, which applies exactly the
processing that sampling applied, so that the ratio is 1 on the first inner epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from unigrpo_kit.devices import multinomial
from unigrpo_kit.guard import NonFiniteError
from unigrpo_kit.registry import SAMPLERS


@runtime_checkable
class TextPolicy(Protocol):
    """What :class:`TextSampler` needs from a language model: a prompt pass and a one-token step.

    ``state`` is opaque to the sampler (a KV cache, positions, masks: whatever the model needs).
    Prompts are left-padded, so the last column of ``input_ids`` is every row's last prompt
    token and ``prefill`` returns the logits that follow it.
    """

    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Any]:
        """Run the prompt ``input_ids`` [B, n] (``attention_mask`` [B, n], 0 on padding).

        Returns the next-token logits [B, V] and the state that holds the KV cache.
        """
        ...

    def decode(self, state: Any, token_ids: Tensor) -> tuple[Tensor, Any]:
        """Append ``token_ids`` [B] (one per row) using the cache in ``state``.

        Returns the next-token logits [B, V] and the updated state.
        """
        ...


class TextSample(NamedTuple):
    """One batch of generations; T is the number of decoding steps actually taken.

    tokens: [B, T] long, ``pad_token_id`` after a row's stop token.
    mask: [B, T] bool, True on generated tokens, the stop token included.
    log_probs: [B, T] float32, log-probability of each token under the distribution it was
        drawn from (see :class:`TextSampler`); 0 where ``mask`` is False.
    finished: [B] bool, True for rows that emitted a stop token within ``max_new_tokens``;
        False for rows cut off by the length limit.
    """

    tokens: Tensor
    mask: Tensor
    log_probs: Tensor
    finished: Tensor


@SAMPLERS.register_module()
class TextSampler:
    """Temperature, top-k and top-p sampling of tokens, with the log-probs GRPO trains on.

    The distribution sampled from, for next-token logits ``l`` over a vocabulary of V tokens:

        z = l / temperature
        order: tokens by z descending, ties broken by the lower token id
        K = the first top_k tokens of that order (all V when top_k is None)
        q(a) = exp(z_a) / sum_{b in K} exp(z_b)                      for a in K
        P = the shortest prefix of K (in that order) with sum_{a in P} q(a) >= top_p
        pi(a) = exp(z_a) / sum_{b in P} exp(z_b) for a in P, and 0 otherwise

    so top-p acts on the distribution that top-k left, and always keeps at least the most likely
    token. The recorded ``log_probs`` are log pi(a) of the sampled token: the log-probability
    under the truncated, renormalised distribution actually sampled from, not under the plain
    softmax. :meth:`token_log_probs` recomputes the same quantity from logits; there a given
    token outside P is added to the kept set (the sampled token is always kept), so that a
    token that an updated policy would no longer keep gets a finite log-prob instead of -inf.

    ``temperature == 0`` is greedy decoding: the token is argmax l (ties: the lower token id),
    top-k and top-p are ignored, and the log-probs are those of the untempered, untruncated
    softmax, log softmax(l)(a), in sampling and in :meth:`token_log_probs` alike.
    ``top_p == 1`` disables top-p, so that float rounding of the cumulative mass cannot drop
    tail tokens. All arithmetic is in float32 whatever the logits' dtype.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_new_tokens: int = 64,
        stop_token_ids: Iterable[int] = (),
        pad_token_id: int = 0,
    ) -> None:
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
        if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        stop_token_ids = tuple(stop_token_ids)
        if not all(isinstance(token, int) and token >= 0 for token in stop_token_ids):
            raise ValueError(
                f"stop_token_ids must be non-negative ints, got {list(stop_token_ids)!r}"
            )
        if not (isinstance(pad_token_id, int) and pad_token_id >= 0):
            raise ValueError(f"pad_token_id must be an int >= 0, got {pad_token_id!r}")
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = None if top_p is None or top_p >= 1 else float(top_p)
        self.max_new_tokens = max_new_tokens
        self.stop_token_ids = stop_token_ids
        self.pad_token_id = pad_token_id

    @torch.no_grad()
    def generate(
        self,
        policy: TextPolicy,
        input_ids: Tensor,
        attention_mask: Tensor,
        *,
        generator: torch.Generator | None = None,
        forced: Tensor | None = None,
        forced_rows: Tensor | None = None,
    ) -> TextSample:
        """Sample up to ``max_new_tokens`` tokens per row after a left-padded prompt.

        input_ids: [B, n] prompt token ids; attention_mask: [B, n], 0 on padding.
        Rows that have finished keep being fed ``pad_token_id`` so the batch stays rectangular;
        their outputs are ignored. Generation stops early once every row has finished.

        ``forced`` [B, L] (token ids, right-padded, each forced row ending in a stop token) and
        ``forced_rows`` [B] bool: the rows of ``forced_rows`` emit ``forced``'s tokens instead of
        sampled ones (off-policy guidance: a reference text as one member of a group), recorded
        with their log-probs under this sampler's distribution (:meth:`token_log_probs`), so
        that training's ratio is 1 for them as for the sampled rows. The other rows draw
        exactly the numbers they would draw without forcing.
        """
        if not isinstance(policy, TextPolicy):
            raise TypeError(
                "policy must implement TextPolicy (prefill and decode), "
                f"got {type(policy).__name__}"
            )
        if input_ids.dim() != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be [B, n], got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        batch = input_ids.shape[0]
        stop_ids = torch.tensor(self.stop_token_ids, dtype=torch.long, device=input_ids.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        tokens: list[Tensor] = []
        log_probs: list[Tensor] = []
        masks: list[Tensor] = []
        logits, state = policy.prefill(input_ids, attention_mask)
        if logits.dim() != 2 or logits.shape[0] != batch:
            raise ValueError(
                f"policy.prefill must return logits [{batch}, V], got {tuple(logits.shape)}"
            )
        forcing = forced_rows is not None and bool(forced_rows.any())
        if forcing:
            forced_rows = forced_rows.to(input_ids.device).bool()
            forced = forced.to(input_ids.device).long()
        for step in range(self.max_new_tokens):
            if step > 0:
                logits, state = policy.decode(state, tokens[-1])
            token, log_prob = self.sample_from_logits(logits, generator)
            if forcing:
                column = forced[:, step] if step < forced.shape[1] else forced[:, -1]
                given = self.token_log_probs(logits[:, None, :], column[:, None])[:, 0]
                token = torch.where(forced_rows, column, token)
                log_prob = torch.where(forced_rows, given, log_prob)
            active = ~finished
            tokens.append(torch.where(active, token, self.pad_token_id))
            log_probs.append(torch.where(active, log_prob, 0.0))
            masks.append(active)
            if self.stop_token_ids:
                finished = finished | torch.isin(token, stop_ids)
                # The one host sync per token: it saves the decode steps after the last stop.
                if bool(finished.all()):
                    break
        return TextSample(
            tokens=torch.stack(tokens, dim=1),
            mask=torch.stack(masks, dim=1),
            log_probs=torch.stack(log_probs, dim=1),
            finished=finished,
        )

    def sample_from_logits(
        self, logits: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw one token per row from the distribution in the class docstring.

        logits: [B, V]. Returns token [B] (long) and its log_prob [B] (float32).
        """
        if logits.dim() != 2:
            raise ValueError(f"logits must be [B, V], got {tuple(logits.shape)}")
        scores = logits.float()
        if self.temperature == 0:
            token = scores.argmax(dim=-1)
            log_prob = scores.log_softmax(dim=-1).gather(-1, token[:, None]).squeeze(-1)
            return token, log_prob
        scores = scores / self.temperature
        keep = self._kept_tokens(scores)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        log_distribution = scores.log_softmax(dim=-1)
        # drawn on the generator's device (the CPU for the trainer's), whatever the logits'
        try:
            token = multinomial(log_distribution.exp(), 1, generator=generator)
        except RuntimeError as error:
            if "inf" not in str(error) and "nan" not in str(error):
                raise
            raise NonFiniteError(
                "the policy's next-token probabilities hold inf or NaN: its weights diverged "
                "(lower optimizer.lr_text) or the checkpoint is broken"
            ) from None
        return token.squeeze(-1), log_distribution.gather(-1, token).squeeze(-1)

    def token_log_probs(self, logits: Tensor, tokens: Tensor) -> Tensor:
        """Recompute the log-prob of given tokens with the processing that sampling used.

        logits: [B, T, V], the logits that predicted ``tokens`` [B, T]. Returns [B, T] float32,
        differentiable in ``logits``. Positions outside the generation mask hold meaningless
        values: multiply by the mask.
        """
        if logits.dim() != 3 or logits.shape[:2] != tokens.shape:
            raise ValueError(
                f"logits must be [B, T, V] and tokens [B, T] with the same B and T, got "
                f"{tuple(logits.shape)} and {tuple(tokens.shape)}"
            )
        index = tokens.long().unsqueeze(-1)
        scores = logits.float()
        if self.temperature != 0:
            scores = scores / self.temperature
            keep = self._kept_tokens(scores.detach())
            if keep is not None:
                keep = keep.scatter(-1, index, True)
                scores = scores.masked_fill(~keep, float("-inf"))
        return scores.log_softmax(dim=-1).gather(-1, index).squeeze(-1)

    @torch.no_grad()
    def _kept_tokens(self, scores: Tensor) -> Tensor | None:
        """Tokens that survive top-k then top-p. scores: [..., V] tempered logits.

        Returns a bool mask [..., V], or None when nothing is truncated.
        """
        if self.top_k is None and self.top_p is None:
            return None
        # A stable sort puts equal scores in token-id order, which is the tie rule.
        sorted_scores, order = scores.sort(dim=-1, descending=True, stable=True)
        keep_sorted = torch.ones_like(sorted_scores, dtype=torch.bool)
        if self.top_k is not None:
            keep_sorted[..., self.top_k :] = False
        if self.top_p is not None:
            probs = sorted_scores.masked_fill(~keep_sorted, float("-inf")).softmax(dim=-1)
            # Mass strictly before each token: a token is kept while the set before it is short
            # of top_p, which yields the shortest prefix reaching top_p and never drops the first.
            mass_before = F.pad(probs.cumsum(dim=-1)[..., :-1], (1, 0))
            keep_sorted &= mass_before < self.top_p
        return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
