"""The UniGRPO trainer: one loop for text-only, image-only and unified (multi-round) training.

Per step (UniGRPO, arXiv 2603.23500, Sec. 3):

1. collect G episodes for each of P prompts with the current policy (no gradients);
2. score each episode once, at its end: R_i (one sparse terminal reward);
3. one group-relative advantage per episode, A_i = (R_i - mean_G R) / std_G R, shared by all its
   generated tokens and all its trained denoising steps;
4. K inner epochs over minibatches of episodes, minimising
       J = J_text (GRPO, Eq. 2) + lambda * J_flow (Flow-GRPO over SDE-window steps, Eq. 6)
           + sum_r w_r * regularizer_r   (velocity MSE, Eq. 8, by default for images)
   with gradient clipping; the first minibatch of the first epoch checks that the recomputed
   log-probs equal the recorded ones (ratio 1), and stops the run if they do not;
5. log, save samples and checkpoints.

Everything is built from the recipe through the registries; nothing here knows which
sampler, loss, advantage, regularizer or reward it runs.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass

import torch

from .registry import ADVANTAGES, LOSSES, REGULARIZERS, REWARDS, SAMPLERS, TASKS
from .rollout.engine import RolloutEngine, null_context
from .rollout.recompute import Recomputed, recompute

MODES = ("text", "image", "unified")


class OffPolicyError(RuntimeError):
    """Recomputed log-probs differ from those recorded at sampling: training is off-policy."""


@dataclass
class StepResult:
    metrics: dict
    batch: object


def mean_of(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


class UniGRPOTrainer:
    """Builds every component from a recipe (an mmengine Config) and runs the GRPO loop."""

    def __init__(self, cfg, model, tokenizer):
        self.cfg = cfg
        self.model = model
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        algo, roll = cfg.algorithm, cfg.rollout
        self.mode = roll.mode
        if self.mode not in MODES:
            raise ValueError(f"rollout.mode={self.mode!r}: use one of {', '.join(MODES)}")
        self.train_text = self.mode in ("text", "unified")
        self.train_image = self.mode in ("image", "unified")
        self.task = TASKS.build(cfg.task)
        self.reward = REWARDS.build(cfg.reward)
        self.advantage = ADVANTAGES.build(algo.advantage)
        self.text_loss = LOSSES.build(algo.text_loss) if self.train_text else None
        self.image_loss = LOSSES.build(algo.image_loss) if self.train_image else None
        self.regularizers = [REGULARIZERS.build(r) for r in algo.get("regularizers", [])]
        self.regularizers = [
            r
            for r in self.regularizers
            if (r.domain == "text" and self.train_text)
            or (r.domain == "image" and self.train_image)
        ]
        needs_reference = any(r.needs_reference for r in self.regularizers)
        frozen_painter = self.mode == "text" and "images" in self.reward.needs
        self.reference = None
        if needs_reference or frozen_painter:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.image_sampler = SAMPLERS.build(roll.image_sampler)
        text_sampler = None
        if roll.reasoning:
            text_sampler = SAMPLERS.build(
                self._with_tokens(roll.text_sampler, tokenizer.end_think_id)
            )
        self.text_sampler = text_sampler
        reflection = roll.get("reflection_sampler")
        if reflection:
            reflection = SAMPLERS.build(self._with_tokens(reflection, tokenizer.end_look_id))
        self.engine = RolloutEngine(
            model,
            tokenizer,
            image_sampler=self.image_sampler,
            window=SAMPLERS.build(roll.window) if self.train_image else None,
            text_sampler=text_sampler,
            reflection_sampler=reflection,
            reasoning=roll.reasoning,
            num_steps=roll.num_steps,
            shift=roll.shift,
            max_rounds=roll.max_rounds,
            guidance_scale=roll.guidance_scale,
            train_text=self.train_text,
            train_image=self.train_image,
            paint_images=self.train_image or "images" in self.reward.needs,
            painter=self.reference if frozen_painter else None,
            shared_noise=roll.get("shared_noise", False),
        )
        self.optimizer = self._optimizer(cfg.optimizer)
        self.rng = random.Random(cfg.seed)
        self.prompt_splits = _prompt_splits(cfg.rollout.get("prompt_splits", "train"))
        # On the CPU whatever the model's device: every draw is made here and moved to the
        # model, so a CUDA run consumes the same random stream as a CPU run.
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0

    # ------------------------------------------------------------------ set-up
    def _with_tokens(self, sampler_cfg, stop_id: int) -> dict:
        """A text-sampler config with the tokenizer's stop and pad ids filled in when absent."""
        cfg = dict(sampler_cfg)
        cfg.setdefault("stop_token_ids", (stop_id,))
        cfg.setdefault("pad_token_id", self.tokenizer.pad_id)
        return cfg

    def _optimizer(self, opt) -> torch.optim.Optimizer:
        """AdamW with one parameter group per expert; an expert with lr 0 is frozen."""
        groups = []
        for name, params in self.model.expert_parameters().items():
            lr = opt[f"lr_{name}"]
            trains = (name == "text" and self.train_text) or (name == "image" and self.train_image)
            if lr > 0 and trains:
                groups.append({"params": params, "lr": lr, "name": name})
            else:
                for p in params:
                    p.requires_grad_(False)
        if not groups:
            raise ValueError(
                "optimizer: every expert is frozen (lr_text and lr_image are 0 or "
                "unused by rollout.mode); nothing would train"
            )
        return torch.optim.AdamW(groups, betas=tuple(opt.betas), weight_decay=opt.weight_decay)

    # ------------------------------------------------------------------ the loop
    def train_step(self) -> StepResult:
        """One GRPO iteration (the module docstring's steps 1-5); returns metrics and episodes."""
        start = time.perf_counter()
        batch = self.collect()  # 1. G episodes per prompt, no gradients
        rollout_s = time.perf_counter() - start
        scored = self.score(batch)  # 2. terminal rewards, 3. shared group advantages
        trained = self.worth_training(batch)
        if trained is None:  # nothing to learn, but the on-policy check still runs
            logs, self_check = {}, self.check_on_policy(self.first_minibatch_deviation(batch))
        else:
            logs, self_check = self.optimize(trained)  # 4. inner epochs
        self.step += 1

        metrics = {
            "step": self.step,
            "reward/mean": float(batch.rewards.mean()),
            "reward/std": float(batch.rewards.std(unbiased=False)),
            "ratio/self_check_max_dev": self_check,
            "rounds/mean": float(batch.rounds().float().mean()),
            **{k: float(v.float().mean()) for k, v in scored.metrics.items()},
            **{k: mean_of(v) for k, v in logs.items()},
            "episodes/trained": 0 if trained is None else len(trained),
            "time/rollout_s": rollout_s,
            "time/step_s": time.perf_counter() - start,
        }
        for key in ("loss/text", "loss/image", "grad_norm"):
            metrics.setdefault(key, 0.0)
        return StepResult(metrics, batch)

    def collect(self):
        """Sample this step's prompts and roll out ``group_size`` episodes for each."""
        roll = self.cfg.rollout
        prompts = self.task.sample_prompts(
            roll.prompts_per_step, split=self.prompt_splits, generator=self.rng
        )
        progress = self.step / max(1, self.cfg.schedule.steps)
        self.model.eval()
        return self.engine.rollout(
            prompts, roll.group_size, generator=self.generator, progress=progress
        )

    def score(self, batch):
        """One reward per episode on its final output; one group-relative advantage each.

        Rewards see CPU images; rewards and advantages stay on the CPU (as ``group_ids``)."""
        images = batch.final_images()
        images = None if images is None else images.cpu()
        scored = self.reward(prompts=batch.prompts, images=images, texts=batch.texts)
        batch.rewards = scored.scores.float()
        batch.advantages = self.advantage(batch.rewards, batch.group_ids).float()
        return scored

    def worth_training(self, batch):
        """The episodes to train on: all of them, or, with ``skip_zero_advantage`` (DAPO's
        dynamic sampling), those of groups whose rewards differ; None if there are none. A group
        whose rewards are all equal has A = 0 everywhere and teaches only the regularizer."""
        if not self.cfg.algorithm.get("skip_zero_advantage", True):
            return batch
        keep = torch.nonzero(batch.advantages != 0).flatten()
        if keep.numel() == 0:
            return None
        return batch if keep.numel() == len(batch) else batch.select(keep)

    def optimize(self, batch) -> tuple[dict[str, list[float]], float]:
        """K inner epochs of minibatch updates; returns the logged parts and the self-check."""
        algo = self.cfg.algorithm
        self.model.train()
        reference = self.reference_terms(batch)
        logs: dict[str, list[float]] = {}
        self_check = 0.0
        for epoch in range(algo.inner_epochs):
            order = torch.randperm(len(batch), generator=self.generator)
            for first in range(0, len(batch), algo.minibatch_size):
                rows = order[first : first + algo.minibatch_size]
                ref = None if reference is None else reference.select(rows)
                loss, parts, deviation = self.loss(batch.select(rows), ref)
                if epoch == 0 and first == 0:
                    self_check = self.check_on_policy(deviation)  # 5. ratio 1, or stop
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                parts["grad_norm"] = float(
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in self.optimizer.param_groups for p in g["params"]],
                        algo.grad_clip,
                    )
                )
                self.optimizer.step()
                for key, value in parts.items():
                    logs.setdefault(key, []).append(value)
        return logs, self_check

    @torch.no_grad()
    def first_minibatch_deviation(self, batch) -> dict[str, float]:
        """The self-check's deviations on the first minibatch, without an update."""
        rows = torch.arange(min(self.cfg.algorithm.minibatch_size, len(batch)))
        return self.loss(batch.select(rows))[2]

    @torch.no_grad()
    def reference_terms(self, batch):
        """The frozen reference's recomputed terms for every episode of ``batch`` (once per
        step: they do not change across inner epochs), or None if no regularizer needs them."""
        if not any(r.needs_reference for r in self.regularizers):
            return None
        size = self.cfg.algorithm.minibatch_size
        chunks = [
            self._recompute(
                self.reference, batch.select(torch.arange(i, min(i + size, len(batch))))
            )
            for i in range(0, len(batch), size)
        ]
        return Recomputed.concat(chunks)

    def _recompute(self, model, minibatch):
        null = None
        if self.cfg.rollout.guidance_scale != 1.0:
            null = null_context(model, self.tokenizer, len(minibatch), self.device)
        return recompute(
            model,
            minibatch,
            image_sampler=self.image_sampler,
            train_text=self.train_text,
            train_image=self.train_image,
            null_cache=null,
        )

    def loss(self, minibatch, reference=None):
        """J_text + lambda * J_flow + weighted regularizers on one minibatch of episodes.

        ``reference``: the reference model's terms for these episodes (computed if needed)."""
        algo = self.cfg.algorithm
        current = self._recompute(self.model, minibatch)
        if reference is None:
            reference = self.reference_terms(minibatch)
        advantages = minibatch.advantages.to(self.device)
        total = torch.zeros((), device=self.device)
        parts: dict[str, float] = {}
        deviation: dict[str, float] = {}
        if current.text is not None:
            t = current.text
            out = self.text_loss(t.log_probs, t.old_log_probs, advantages, t.mask)
            total = total + out.loss
            parts["loss/text"] = float(out.loss.detach())
            parts.update({f"text/{k}": float(v) for k, v in out.metrics.items()})
            deviation["text"] = _max_deviation(t.log_probs, t.old_log_probs, t.mask)
        if current.image is not None:
            i = current.image
            out = self.image_loss(
                i.log_probs,
                i.old_log_probs,
                advantages,
                i.mask,
                mean=i.means,
                old_mean=i.old_means,
                std=i.stds,
                dt=i.dts,
            )
            total = total + algo.image_loss_weight * out.loss
            parts["loss/image"] = float(out.loss.detach())
            parts.update({f"image/{k}": float(v) for k, v in out.metrics.items()})
            deviation["image"] = _max_deviation(i.log_probs, i.old_log_probs, i.mask)
        for reg in self.regularizers:
            terms = getattr(current, reg.domain)
            if terms is None:
                continue
            ref_terms = getattr(reference, reg.domain) if reg.needs_reference else None
            value = reg.penalty(terms, ref_terms)
            total = total + reg.weight * value
            parts[f"reg/{type(reg).__name__}"] = float(value.detach())
        return total, parts, deviation

    def check_on_policy(self, deviation: dict[str, float]) -> float:
        """The largest |log pi_new - log pi_old| at the first minibatch; raise if too large."""
        tol = self.cfg.algorithm.self_check_tol
        kind, worst = max(deviation.items(), key=lambda item: item[1], default=("", 0.0))
        if worst > tol:
            raise OffPolicyError(
                f"on-policy self-check failed: {kind} segment log-probs deviate by "
                f"{worst:.3g} (> algorithm.self_check_tol={tol}) at the first minibatch; "
                "rollout and training compute different distributions"
            )
        return worst


def _prompt_splits(value) -> str | tuple[str, ...]:
    """``rollout.prompt_splits``: one split name or several; never the held-out eval split."""
    splits = (value,) if isinstance(value, str) else tuple(value)
    if not splits or "eval" in splits:
        raise ValueError(
            f"rollout.prompt_splits={value!r} must name training splits without 'eval' (the "
            "held-out phrasings the eval protocol scores), e.g. 'train' or ['train', 'pretrain']"
        )
    return value if isinstance(value, str) else splits


def _max_deviation(new: torch.Tensor, old: torch.Tensor, mask: torch.Tensor) -> float:
    if not bool(mask.any()):
        return 0.0
    return float((new.detach() - old).abs()[mask].max())
