"""The UniGRPO objective on one minibatch: the one place where the loss terms are assembled.

    J = J_text (GRPO, Eq. 2) + lambda * J_flow (Flow-GRPO over the trained steps, Eq. 6)
        + sum_r w_r * regularizer_r (token KL, velocity MSE (Eq. 8), ...)

(UniGRPO, arXiv 2603.23500, Eq. 7.) The trainer, ``unigrpo-kit bench`` and
``tools/grad_balance.py`` all call :meth:`Objective.terms`; a term of a kind that is not trained
(None in the recomputed terms) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .registry import LOSSES, REGULARIZERS
from .rollout.recompute import Recomputed


@dataclass
class ObjectiveTerms:
    """parts: each weighted term [scalar] by its logged name (``loss/text``, ``loss/image``
    already times lambda, ``reg/<Class>`` times its weight); denominators: the count each term
    is a mean over (episodes, or valid tokens for ``token-mean``: what a data-parallel run
    weighs the ranks' terms by); metrics: the logged parts (floats); deviation: by kind, the
    largest |log pi_new - log pi_old| over the trained tokens / steps (the on-policy
    self-check)."""

    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    denominators: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    deviation: dict[str, float] = field(default_factory=dict)

    @property
    def policy(self) -> torch.Tensor:
        """J_text + lambda J_flow."""
        losses = [v for k, v in self.parts.items() if k.startswith("loss/")]
        return sum(losses[1:], losses[0]) if losses else torch.zeros(())

    @property
    def regularizers(self) -> dict[str, torch.Tensor]:
        """Each w_r * reg_r by class name."""
        return {k[4:]: v for k, v in self.parts.items() if k.startswith("reg/")}

    @property
    def total(self) -> torch.Tensor:
        return self.scaled_total({})

    def scaled_total(self, scales: dict[str, float]) -> torch.Tensor:
        """sum_k scales[k] * part_k (a missing scale is 1): a rank's share of the loss."""
        total = None
        for name, value in self.parts.items():
            value = value * scales.get(name, 1.0)
            total = value if total is None else total + value
        return total if total is not None else torch.zeros(())


class Objective:
    """The losses, the image term's weight lambda and the regularizers of a recipe's
    ``algorithm``, restricted to the kinds that train (``train_text``, ``train_image``)."""

    def __init__(self, algorithm, *, train_text: bool, train_image: bool):
        self.text_loss = LOSSES.build(algorithm.text_loss) if train_text else None
        self.image_loss = LOSSES.build(algorithm.image_loss) if train_image else None
        self.image_loss_weight = algorithm.get("image_loss_weight", 1.0)
        built = [REGULARIZERS.build(r) for r in algorithm.get("regularizers", [])]
        trains = {"text": train_text, "image": train_image}
        self.regularizers = [r for r in built if trains[r.domain]]

    @property
    def needs_reference(self) -> bool:
        return any(r.needs_reference for r in self.regularizers)

    def terms(
        self,
        current: Recomputed,
        reference: Recomputed | None,
        advantages: torch.Tensor,
        image_advantages: torch.Tensor | None = None,
    ) -> ObjectiveTerms:
        """The weighted terms from the recomputed ``current`` (and ``reference``) terms of N
        episodes and their advantages [N], one per episode, shared by all its tokens and
        trained steps; ``image_advantages`` [N], where given, replace them in J_flow (a
        recipe's ``algorithm.image_reward``: the painter's own term, see the trainer)."""
        parts: dict[str, torch.Tensor] = {}
        denominators: dict[str, float] = {}
        metrics: dict[str, float] = {}
        deviation: dict[str, float] = {}
        if current.text is not None:
            t = current.text
            out = self.text_loss(t.log_probs, t.old_log_probs, advantages, t.mask)
            parts["loss/text"] = out.loss
            denominators["loss/text"] = denominator(self.text_loss, t.mask)
            metrics["loss/text"] = float(out.loss.detach())
            metrics.update({f"text/{k}": float(v) for k, v in out.metrics.items()})
            deviation["text"] = max_deviation(t.log_probs, t.old_log_probs, t.mask)
        if current.image is not None:
            i = current.image
            out = self.image_loss(
                i.log_probs, i.old_log_probs,
                advantages if image_advantages is None else image_advantages, i.mask,
                mean=i.means, old_mean=i.old_means, std=i.stds, dt=i.dts,
            )  # fmt: skip
            parts["loss/image"] = self.image_loss_weight * out.loss
            denominators["loss/image"] = denominator(self.image_loss, i.mask)
            metrics["loss/image"] = float(out.loss.detach())
            metrics.update({f"image/{k}": float(v) for k, v in out.metrics.items()})
            deviation["image"] = max_deviation(i.log_probs, i.old_log_probs, i.mask)
        for reg in self.regularizers:
            terms = getattr(current, reg.domain)
            if terms is None:
                continue
            ref_terms = getattr(reference, reg.domain) if reg.needs_reference else None
            value = reg.penalty(terms, ref_terms)
            name = f"reg/{type(reg).__name__}"
            parts[name] = reg.weight * value
            denominators[name] = denominator(reg, terms.mask)
            metrics[name] = float(value.detach())
        return ObjectiveTerms(parts, denominators, metrics, deviation)

    def term_names(self) -> list[str]:
        """The names of the terms this objective can produce (every rank's, in one order)."""
        names = ["loss/text"] if self.text_loss is not None else []
        names += ["loss/image"] if self.image_loss is not None else []
        return names + [f"reg/{type(reg).__name__}" for reg in self.regularizers]


def denominator(component, mask: torch.Tensor) -> float:
    """The count a term is a mean over, from its ``aggregation``: the valid entries of
    ``mask`` for ``token-mean``, else its rows (the episodes: every ``seq-mean-*`` mode divides
    by them, an episode with no valid entry included)."""
    if getattr(component, "aggregation", "seq-mean-token-mean") == "token-mean":
        return float(mask.sum())
    return float(mask.shape[0])


def max_deviation(new: torch.Tensor, old: torch.Tensor, mask: torch.Tensor) -> float:
    """The largest |new - old| where ``mask`` is True (0 where nothing is masked in)."""
    if not bool(mask.any()):
        return 0.0
    return float((new.detach() - old).abs()[mask].max())
