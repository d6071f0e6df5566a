"""The UniGRPO trainer: one loop for text-only, image-only and unified (multi-round) training.

Per step (UniGRPO, arXiv 2603.23500, Sec. 3):

1. collect G episodes for each of P prompts with the current policy (no gradients);
2. score each episode once, at its end: R_i (one sparse terminal reward);
3. one group-relative advantage per episode, A_i = (R_i - mean_G R) / std_G R, shared by all its
   generated tokens and all its trained denoising steps (an option, ``algorithm.image_reward``,
   adds a term of the painter's own to its steps' advantage: A^img_i = A_i + w * A(q)_i, with
   A(q) the same group normalisation of an image reward q);
4. K inner epochs over minibatches of episodes, minimising
       J = J_text (GRPO, Eq. 2) + lambda * J_flow (Flow-GRPO over SDE-window steps, Eq. 6)
           + sum_r w_r * regularizer_r   (velocity MSE, Eq. 8, by default for images)
   with gradient clipping; the first minibatch of the first epoch checks that the recomputed
   log-probs equal the recorded ones (ratio 1), and stops the run if they do not;
5. log, save samples and checkpoints.

Everything is built from the recipe through the registries; nothing here knows which
sampler, loss, advantage, regularizer or reward it runs.

Data parallel (:mod:`unigrpo_kit.distributed`): under torchrun every rank runs this same loop on
its shard of the step's episodes; the rewards are gathered so that every rank computes the
same group advantages; each global minibatch's loss is split over the ranks by each term's
count and the gradients are summed. Every random draw comes from a stream of (seed, step,
purpose, group, member) (:mod:`unigrpo_kit.rollout.streams`), so the episodes are the same at
any world size.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import torch

from . import distributed as dd
from .advantages import group_advantages
from .guard import InvalidRewardError, NonFiniteError, RunStopped, non_finite_part
from .objective import Objective
from .parallel import build_strategy
from .registry import ADVANTAGES, REWARDS, TASKS
from .rewards.base import RewardOutput
from .rollout.build import paints, trained_parts, training_engine
from .rollout.recompute import Recomputed, recompute
from .rollout.streams import RowStreams, generator, python_rng

# The trained batch of a rank that holds none of the step's trained episodes: it computes no
# loss and takes part in every reduction with zeros.
_NOTHING_HELD = object()


class OffPolicyError(RunStopped):
    """Recomputed log-probs differ from those recorded at sampling: training is off-policy."""


@dataclass
class StepResult:
    metrics: dict
    batch: object


def mean_of(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


class UniGRPOTrainer:
    """Builds every component from a recipe (an mmengine Config) and runs the GRPO loop on a
    policy (any implementation of :mod:`unigrpo_kit.models.protocol`)."""

    def __init__(self, cfg, policy):
        self.cfg = cfg
        self.policy = policy
        self.device = policy.device
        self.mode = cfg.rollout.mode
        self.train_text, self.train_image = trained_parts(cfg)
        self.task = TASKS.build(cfg.task)
        self.reward = REWARDS.build(cfg.reward)
        self.advantage = ADVANTAGES.build(cfg.algorithm.advantage)
        # The painter's own reward term (None: UniGRPO's one shared advantage for both halves).
        image_reward = cfg.algorithm.get("image_reward")
        self.image_reward = REWARDS.build(image_reward) if image_reward else None
        self.image_reward_weight = float(cfg.algorithm.get("image_reward_weight", 1.0))
        # "shared" (UniGRPO): the painter's steps take the episode's advantage; "sampled": with
        # off-policy guidance, the painter's advantage leaves the guided episodes out.
        self.guided_image_advantage = cfg.algorithm.get("guided_image_advantage", "shared")
        self.objective = Objective(
            cfg.algorithm, train_text=self.train_text, train_image=self.train_image
        )
        # A frozen reference (a copy, or the adapter-disabled model under LoRA) serves the
        # regularizers and, in text-only training with an image reward, paints.
        frozen_painter = self.mode == "text" and paints(cfg, self.reward)
        self.reference = None
        if self.objective.needs_reference or frozen_painter:
            self.reference = policy.reference()
        self.engine = training_engine(
            cfg, policy, self.task, self.reward, painter=self.reference if frozen_painter else None
        )
        self.image_sampler = self.engine.image_sampler
        # DDP replicas or FSDP2 shards (distributed.strategy), made before the optimizer sees
        # the parameters (parallel.py)
        self.parallel = build_strategy(cfg)
        held = [policy.module, getattr(self.reference, "module", None)]
        self.parallel.prepare([m for m in held if m is not None], policy)
        self.optimizer = self._optimizer(cfg.optimizer)
        self.prompt_splits = _prompt_splits(cfg.rollout.get("prompt_splits", "train"))
        # Every draw comes from a stream of (seed, step, purpose, ...), on the CPU whatever the
        # model's device, so a CUDA run and a run at any world size draw the same numbers.
        self.seed = cfg.seed
        self.split_groups = bool(cfg.rollout.get("split_groups", False))
        self.guided_members = _guided_members(cfg)
        self.step = 0
        # The numerical guard: updates skipped because a loss or gradient was not finite.
        self.skipped_updates = 0
        self.consecutive_skips = 0
        self.invalid_reward_steps = 0  # steps in a row without one valid reward

    @property
    def model(self) -> torch.nn.Module:
        """The trained module (``policy.module``)."""
        return self.policy.module

    # ------------------------------------------------------------------ set-up
    def _optimizer(self, opt) -> torch.optim.Optimizer:
        """AdamW with one parameter group per part (``optimizer.lr_<part>``, and
        ``optimizer.eps_<part>``, Adam's denominator floor, default 1e-8); a part with lr 0, or
        that the mode does not train, is frozen.

        Adam's step is lr * m_hat / (sqrt(v_hat) + eps): with eps far below sqrt(v_hat) every
        parameter moves about lr per step whatever its gradient's size; an eps above it makes
        the step lr / eps * m_hat, a gradient-sized (SGD-like) step."""
        groups = []
        trains = {"text": self.train_text, "image": self.train_image}
        for name, params in self.policy.parameter_groups().items():
            if not params:
                continue
            lr = opt.get(f"lr_{name}", 0.0)
            if lr > 0 and trains.get(name, False):
                eps = opt.get(f"eps_{name}", 1e-8)
                groups.append({"params": params, "lr": lr, "base_lr": lr, "eps": eps, "name": name})
            else:
                for p in params:
                    p.requires_grad_(False)
        if not groups:
            raise ValueError(
                "optimizer: every part is frozen (lr_text and lr_image are 0 or "
                "unused by rollout.mode); nothing would train"
            )
        return torch.optim.AdamW(groups, betas=tuple(opt.betas), weight_decay=opt.weight_decay)

    # ------------------------------------------------------------------ the loop
    def train_step(self) -> StepResult:
        """One GRPO iteration (the module docstring's steps 1-5); returns metrics and episodes.
        Under FSDP2 the model is gathered whole for the step (parallel.py)."""
        with self.parallel.gathered():
            return self._train_step()

    def _train_step(self) -> StepResult:
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

        rewards = self.global_rewards
        own = (0.0, 0.0) if batch is None else (float(batch.rounds().sum()), float(len(batch)))
        rounds, held = dd.all_reduce(list(own))
        metrics = {
            "step": self.step,
            "reward/mean": nan_mean(rewards),
            "reward/std": nan_std(rewards),
            "reward/invalid_frac": float((~torch.isfinite(rewards)).float().mean()),
            "ratio/self_check_max_dev": self_check,
            "rounds/mean": rounds / max(held, 1.0),
            **{k: nan_mean(v) for k, v in scored.metrics.items()},
            **{k: mean_of(v) for k, v in logs.items()},
            "episodes/trained": self.trained_count,
            "guard/skipped_steps": self.skipped_updates,
            "time/rollout_s": rollout_s,
            "time/step_s": time.perf_counter() - start,
        }
        for key in ("loss/text", "loss/image", "grad_norm"):
            metrics.setdefault(key, 0.0)
        if self.guided_members:
            metrics.update(self._guided_metrics(batch))
        return StepResult(metrics, batch)

    def _guided_metrics(self, batch) -> dict:
        """With off-policy guidance, the mean reward of the sampled episodes alone (what the
        policy does) and of the guided ones (what the reference earns)."""
        own = [0.0, 0.0, 0.0, 0.0]
        if batch is not None and batch.guided is not None and batch.rewards is not None:
            valid = torch.isfinite(batch.rewards)
            for offset, rows in ((0, ~batch.guided), (2, batch.guided)):
                picked = rows & valid
                own[offset] = float(batch.rewards[picked].sum())
                own[offset + 1] = float(picked.sum())
        elif batch is not None and batch.rewards is not None:
            valid = torch.isfinite(batch.rewards)
            own[0], own[1] = float(batch.rewards[valid].sum()), float(valid.sum())
        sampled, n_sampled, guided, n_guided = dd.all_reduce(own)
        return {
            "reward/sampled_mean": sampled / n_sampled if n_sampled else float("nan"),
            "reward/guided_mean": guided / n_guided if n_guided else float("nan"),
        }

    def collect(self, stream_seed: int | None = None):
        """Sample this step's prompts and roll out ``group_size`` episodes for each: the rows
        of this rank's shard (all of them in a world of one). ``stream_seed`` draws from the
        streams of that seed instead of the run's (seed, step): a fixed probe of the policy."""
        roll = self.cfg.rollout
        root = (self.seed, self.step) if stream_seed is None else (stream_seed, "probe")
        prompts = self.task.sample_prompts(
            roll.prompts_per_step, split=self.prompt_splits, generator=python_rng(*root, "prompts")
        )
        self.shard = dd.shard(
            len(prompts),
            roll.group_size,
            split_groups=self.split_groups,
            rank_=dd.rank(),
            world=dd.world_size(),
        )
        if not self.shard.rows:  # more ranks than episodes: this one only joins the reductions
            return None
        streams = RowStreams(root, self.shard.keys())
        rows = [prompts[group] for group, _ in self.shard.keys()]
        progress = self.step / max(1, self.cfg.schedule.steps)
        self.policy.train(False)
        # Off-policy guidance: the last k members of each group write the prompt's reference
        # reasoning (only in training: a probe with its own stream seed samples every member).
        k = self.guided_members if stream_seed is None else 0
        guided = torch.tensor([m >= roll.group_size - k for _, m in self.shard.keys()])
        with self.parallel.gathered():
            batch = self.engine.rollout(
                rows, 1, generator=streams, progress=progress, guided=guided if k else None
            )
        batch.group_ids = self.shard.group_ids().to(batch.group_ids.device)
        return batch

    def score(self, batch):
        """One reward per episode on its final output; one group-relative advantage each.

        Failure is data: an episode whose reward is NaN (or every episode, when the reward
        raises) is invalid: it gets no advantage, no loss, and is counted
        (``reward/invalid_frac``); ``algorithm.max_invalid_reward_steps`` (default 3) steps in a
        row without one valid reward stop the run. Rewards see CPU images; rewards and
        advantages stay on the CPU (as ``group_ids``)."""
        scored = self._reward(batch) if batch is not None else None
        painter = self._image_reward(batch) if batch is not None else None
        if painter is not None:
            scored.metrics["reward/image_term"] = painter
        shard = getattr(self, "shard", None)
        if shard is None or dd.world_size() == 1:
            batch.rewards = scored.scores.float()
            batch.advantages = group_advantages(
                self.advantage, batch.rewards, batch.group_ids, scored.components
            )
            batch.image_advantages = self._image_advantages(
                batch.advantages, batch.rewards, painter, batch.group_ids,
                guided=batch.guided, components=scored.components,
            )  # fmt: skip
            self.global_rewards = batch.rewards
            self._count_invalid(batch.rewards)
            return scored
        # Every rank computes the advantages of the whole step from every rank's rewards (a
        # rank that holds no episode sends nothing and receives them all).
        mine = {"rows": list(shard.rows), "rewards": [], "components": {}, "metrics": {}}
        if scored is not None:
            batch.rewards = scored.scores.float()
            mine["rewards"] = batch.rewards.tolist()
            mine["guided"] = None if batch.guided is None else batch.guided.float().tolist()
            mine["components"] = {
                k: (w, v.tolist()) for k, (w, v) in (scored.components or {}).items()
            }
            mine["metrics"] = {k: v.tolist() for k, v in scored.metrics.items()}
        everyone = dd.all_gather_objects(mine)

        def assemble(values_of) -> torch.Tensor:
            out = torch.full((shard.total,), float("nan"))
            for part in everyone:
                values = values_of(part)
                if values is not None and part["rows"]:
                    out[torch.tensor(part["rows"])] = torch.tensor(values, dtype=torch.float32)
            return out

        rewards = assemble(lambda part: part["rewards"])
        weights = {k: w for part in everyone for k, (w, _) in part["components"].items()}
        components = {
            k: (w, assemble(lambda part, k=k: part["components"].get(k, (None, None))[1]))
            for k, w in weights.items()
        } or None
        metric_keys = sorted({k for part in everyone for k in part["metrics"]})
        metrics = {k: assemble(lambda part, k=k: part["metrics"].get(k)) for k in metric_keys}
        group_ids = torch.arange(shard.num_groups).repeat_interleave(shard.group_size)
        advantages = group_advantages(self.advantage, rewards, group_ids, components)
        guided = assemble(lambda part: part.get("guided")) == 1  # the rows each rank guided
        image_advantages = self._image_advantages(
            advantages, rewards, metrics.get("reward/image_term"), group_ids,
            guided=guided, components=components,
        )  # fmt: skip
        if batch is not None:
            mine_rows = torch.tensor(shard.rows, dtype=torch.long)
            batch.advantages = advantages[mine_rows]
            if image_advantages is not None:
                batch.image_advantages = image_advantages[mine_rows]
        self.global_rewards = rewards
        self._count_invalid(rewards)
        return RewardOutput(rewards, metrics=metrics, components=components)

    def _reward(self, batch) -> RewardOutput:
        """The reward of this process's episodes (NaN for all of them if the reward raised)."""
        images = batch.final_images()
        images = None if images is None else images.cpu()
        try:
            return self.reward(prompts=batch.prompts, images=images, texts=batch.texts)
        except Exception as error:  # a reward model or server failed: this step is invalid
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            print(
                f"warning: step {self.step + 1}: the reward failed ({type(error).__name__}: "
                f"{reason}); the step's episodes are invalid",
                file=sys.stderr,
            )
            return RewardOutput(torch.full((len(batch),), float("nan")))

    def _image_reward(self, batch) -> torch.Tensor | None:
        """The painter's own reward q [N] on each episode's last image (``algorithm.image_reward``),
        None without one; NaN where it failed (the episode's image term is then 0)."""
        if self.image_reward is None:
            return None
        images = batch.final_images()
        try:
            out = self.image_reward(prompts=batch.prompts, images=images.cpu(), texts=batch.texts)
            return out.scores.float()
        except Exception as error:
            print(
                f"warning: step {self.step + 1}: algorithm.image_reward failed "
                f"({type(error).__name__}: {error}); the painter's term is 0 this step",
                file=sys.stderr,
            )
            return torch.full((len(batch),), float("nan"))

    def _image_advantages(
        self, advantages, rewards, painter, group_ids, *, guided=None, components=None
    ):
        """The painter's advantage where it differs from the shared one; None where it does not.

            A^img = A + w * A(q)        (``algorithm.image_reward``: the image reward's
                                          group-normalised advantage, the recipe's estimator,
                                          over the episodes whose reward and q are finite)

        With off-policy guidance and ``algorithm.guided_image_advantage="sampled"``, A and A(q)
        are taken over each group's sampled members only, and a guided episode's steps get
        A^img = 0: the painter is trained as if the group had not been guided (a guided
        episode's reward is the reference reasoning's credit, not the painter's)."""
        sampled_only = (
            self.guided_image_advantage == "sampled" and guided is not None and bool(guided.any())
        )
        if painter is None and not sampled_only:
            return None
        if sampled_only:

            def drop(values):  # the guided rows leave the group's statistics
                return torch.where(guided, torch.full_like(values.float(), float("nan")), values)

            rewards = drop(rewards)
            parts = {k: (w, drop(v)) for k, (w, v) in components.items()} if components else None
            advantages = group_advantages(self.advantage, rewards, group_ids, parts)
        if painter is None:
            return advantages
        q = torch.where(torch.isfinite(rewards), painter, torch.full_like(painter, float("nan")))
        return advantages + self.image_reward_weight * group_advantages(
            self.advantage, q, group_ids
        )

    def _count_invalid(self, rewards: torch.Tensor) -> None:
        """Stop after ``algorithm.max_invalid_reward_steps`` steps in a row with no valid
        reward."""
        if bool(torch.isfinite(rewards).any()):
            self.invalid_reward_steps = 0
            return
        self.invalid_reward_steps += 1
        limit = self.cfg.algorithm.get("max_invalid_reward_steps", 3)
        if self.invalid_reward_steps >= limit:
            raise InvalidRewardError(
                f"{self.invalid_reward_steps} steps in a row without one valid reward (the last "
                f"at step {self.step + 1}): check the reward (its server, its weights) "
                f"(algorithm.max_invalid_reward_steps={limit})"
            )

    def worth_training(self, batch):
        """The episodes to train on: all of them, or, with ``skip_zero_advantage`` (DAPO's
        dynamic sampling), those of groups whose rewards differ; None if there are none. A group
        whose rewards are all equal has A = 0 everywhere and teaches only the regularizer."""
        if batch is None:
            keep = torch.zeros(0, dtype=torch.long)
        else:
            keep = torch.isfinite(batch.rewards)  # an invalid reward trains nothing
            if self.cfg.algorithm.get("skip_zero_advantage", True):
                signal = batch.advantages != 0
                if batch.image_advantages is not None:
                    signal = signal | (batch.image_advantages != 0)
                keep = keep & signal
            keep = torch.nonzero(keep).flatten()
        # the global rows this rank trains, and how many all ranks train
        shard = getattr(self, "shard", None)
        held = list(shard.rows) if shard is not None else list(range(len(batch)))
        self.trained_rows = [held[i] for i in keep.tolist()]
        self.trained_count = int(dd.all_reduce([float(keep.numel())])[0])
        if self.trained_count == 0:
            return None
        if batch is None or keep.numel() in (0, len(batch)):  # none of mine: I only join in
            return batch if batch is not None else _NOTHING_HELD
        return batch.select(keep)

    def optimize(self, batch) -> tuple[dict[str, list[float]], float]:
        """K inner epochs of minibatch updates; returns the logged parts and the self-check.

        The minibatches are cut from one order of the step's trained episodes (global rows,
        the same on every rank); each rank computes the loss of the rows of the minibatch that
        it holds (possibly none)."""
        algo = self.cfg.algorithm
        self.policy.train()
        self.warm_up()
        reference = self.reference_terms(batch) if self.trained_rows else None
        local_of = {row: i for i, row in enumerate(self.trained_rows)}
        everyone = self._trained_rows_of_all_ranks()
        logs: dict[str, list[float]] = {}
        self_check = 0.0
        for epoch in range(algo.inner_epochs):
            stream = generator(self.seed, self.step, "minibatch-order", epoch)
            order = [everyone[i] for i in torch.randperm(len(everyone), generator=stream)]
            for first in range(0, len(order), algo.minibatch_size):
                mine = [local_of[r] for r in order[first : first + algo.minibatch_size]
                        if r in local_of]  # fmt: skip
                rows = torch.tensor(mine, dtype=torch.long)
                ref = None if reference is None or not mine else reference.select(rows)
                loss, parts, deviation = self.minibatch_loss(batch, rows, ref)
                if epoch == 0 and first == 0:
                    self_check = self.check_on_policy(deviation)  # 5. ratio 1, or stop
                culprit = non_finite_part(loss, parts) if mine else None
                if dd.any_rank(culprit is not None):
                    culprit = culprit or "loss on another rank"
                else:
                    parts["grad_norm"] = self.update(loss)
                    if not math.isfinite(parts["grad_norm"]):
                        culprit = "gradient"
                self.guard(culprit)
                for key, value in parts.items():
                    logs.setdefault(key, []).append(value)
        return logs, self_check

    def _trained_rows_of_all_ranks(self) -> list[int]:
        """The global rows that some rank trains this step, ascending."""
        if dd.world_size() == 1:
            return list(self.trained_rows)
        shard = self.shard
        flags = dd.all_gather_rows([r in set(self.trained_rows) for r in shard.rows], shard)
        return [row for row, flag in enumerate(flags) if flag]

    def minibatch_loss(self, batch, rows: torch.Tensor, reference):
        """This rank's share of one global minibatch's loss: each term scaled by this rank's
        count over all ranks' (:func:`~unigrpo_kit.distributed.term_scales`), so that the
        ranks' losses sum to the minibatch's. Returns the loss, the logged parts (global
        values) and the self-check's deviations (the largest over the ranks)."""
        names = self.objective.term_names()
        if len(rows):
            terms = self.terms(batch.select(rows), reference)
            denominators = {n: terms.denominators.get(n, 0.0) for n in names}
        else:  # nothing held: take part in the reductions with zeros
            terms, denominators = None, dict.fromkeys(names, 0.0)
        if dd.world_size() == 1:
            return terms.total, terms.metrics, terms.deviation
        scales = dd.term_scales(denominators)
        loss = terms.scaled_total(scales) if terms is not None else None
        metrics = terms.metrics if terms is not None else {}
        deviation = terms.deviation if terms is not None else {}
        # the logged terms: the minibatch's values (sums of the ranks' scaled shares); the other
        # metrics: means over the ranks that have them, weighted by their rows
        shares = {k: v * scales[k] for k, v in metrics.items() if k in scales}
        others = {k: v for k, v in metrics.items() if k not in scales}
        gathered = dd.all_gather_objects((shares, others, float(len(rows)), deviation))
        logged: dict[str, float] = {}
        for key in sorted({k for g in gathered for k in g[0]}):
            logged[key] = sum(g[0].get(key, 0.0) for g in gathered)
        for key in sorted({k for g in gathered for k in g[1]}):
            having = [(g[1][key], g[2]) for g in gathered if key in g[1]]
            logged[key] = sum(v * w for v, w in having) / max(sum(w for _, w in having), 1.0)
        worst = {}
        for g in gathered:
            for kind, value in g[3].items():
                worst[kind] = max(worst.get(kind, 0.0), value)
        return loss, logged, worst

    def warm_up(self) -> None:
        """``optimizer.warmup_steps`` W > 0: step t (from 1) trains at lr * min(1, t / W). Adam's
        first update is a sign step of size lr on every parameter with a gradient; warming up
        shrinks that first jump (docs/training.md, the first-update shock)."""
        warmup = self.cfg.optimizer.get("warmup_steps", 0)
        factor = min(1.0, (self.step + 1) / warmup) if warmup else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def update(self, loss: torch.Tensor) -> float:
        """One optimizer step on ``loss``: backward, gradient clipping to
        ``algorithm.grad_clip``; returns the gradient norm before clipping. A non-finite
        gradient norm takes no step (the gradients are dropped, the weights and the optimizer's
        moments stay as they were)."""
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None:  # None: this rank holds no row of the minibatch
            loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # the ranks' shares summed (the minibatch's gradient), then clipped
        grad_norm = self.parallel.reduce_gradients(params, self.cfg.algorithm.grad_clip)
        if math.isfinite(grad_norm):
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        self.parallel.after_update()
        return grad_norm

    def guard(self, culprit: str | None) -> None:
        """The numerical guard: count an update skipped because ``culprit`` (a loss part, or
        "gradient") was not finite, say so on stderr, and stop the run after
        ``algorithm.max_skipped_updates`` (default 5) skips in a row."""
        if culprit is None:
            self.consecutive_skips = 0
            return
        self.skipped_updates += 1
        self.consecutive_skips += 1
        step = self.step + 1
        print(
            f"warning: step {step}: update skipped, non-finite {culprit} "
            f"({self.consecutive_skips} in a row)",
            file=sys.stderr,
        )
        limit = self.cfg.algorithm.get("max_skipped_updates", 5)
        if self.consecutive_skips >= limit:
            raise NonFiniteError(
                f"{self.consecutive_skips} updates in a row had a non-finite {culprit} (the "
                f"last at step {step}); the weights are those of the last finite update. Lower "
                "optimizer.lr_text / lr_image or check the reward "
                f"(algorithm.max_skipped_updates={limit})"
            )

    @torch.no_grad()
    def first_minibatch_deviation(self, batch) -> dict[str, float]:
        """The self-check's deviations on this rank's first minibatch (the largest over the
        ranks), without an update."""
        held = 0 if batch is None else len(batch)
        rows = torch.arange(min(self.cfg.algorithm.minibatch_size, held))
        deviation = self.loss(batch.select(rows))[2] if len(rows) else {}
        kinds = ["text", "image"]
        worst = dd.all_reduce([deviation.get(k, 0.0) for k in kinds], op="max")
        return {k: v for k, v in zip(kinds, worst, strict=True) if k in deviation or v > 0}

    @torch.no_grad()
    def reference_terms(self, batch):
        """The frozen reference's recomputed terms for every episode of ``batch`` (once per
        step: they do not change across inner epochs), or None if no regularizer needs them."""
        if not self.objective.needs_reference:
            return None
        size = self.cfg.algorithm.minibatch_size
        chunks = [
            self._recompute(
                self.reference, batch.select(torch.arange(i, min(i + size, len(batch))))
            )
            for i in range(0, len(batch), size)
        ]
        return Recomputed.concat(chunks)

    def _recompute(self, policy, minibatch) -> Recomputed:
        return recompute(
            policy,
            minibatch,
            image_sampler=self.image_sampler,
            train_text=self.train_text,
            train_image=self.train_image,
            guidance_scale=self.cfg.rollout.get("guidance_scale", 1.0),
        )

    def loss(self, minibatch, reference=None):
        """J_text + lambda * J_flow + weighted regularizers on one minibatch of episodes
        (:class:`~unigrpo_kit.objective.Objective`); returns the total, the logged parts and the
        self-check's deviations.

        ``reference``: the reference model's terms for these episodes (computed if needed)."""
        terms = self.terms(minibatch, reference)
        return terms.total, terms.metrics, terms.deviation

    def terms(self, minibatch, reference=None):
        """The objective's terms (:class:`~unigrpo_kit.objective.ObjectiveTerms`) on one
        minibatch of episodes."""
        current = self._recompute(self.policy, minibatch)
        if reference is None:
            reference = self.reference_terms(minibatch)
        advantages = minibatch.advantages.to(self.device)
        image_advantages = minibatch.image_advantages
        if image_advantages is not None:
            image_advantages = image_advantages.to(self.device)
        return self.objective.terms(current, reference, advantages, image_advantages)

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


def nan_mean(values: torch.Tensor) -> float:
    """The mean of the finite values (NaN when there is none)."""
    values = values.float()
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def nan_std(values: torch.Tensor) -> float:
    """The population std of the finite values (NaN when there is none)."""
    values = values.float()
    finite = values[torch.isfinite(values)]
    return float(finite.std(unbiased=False)) if finite.numel() else float("nan")


def _guided_members(cfg) -> int:
    """``rollout.guided_members``: how many of a group's G members write the prompt's reference
    reasoning (0 <= k < G, and only where a reasoning is sampled and trained)."""
    k = int(cfg.rollout.get("guided_members", 0) or 0)
    if k == 0:
        return 0
    if not 0 < k < cfg.rollout.group_size:
        raise ValueError(
            f"rollout.guided_members={k} must be below rollout.group_size="
            f"{cfg.rollout.group_size}: a group needs sampled members to compare with"
        )
    if not cfg.rollout.reasoning or cfg.rollout.mode == "image":
        raise ValueError(
            f"rollout.guided_members={k} guides the reasoning: it needs rollout.reasoning=True "
            f"and rollout.mode 'text' or 'unified' (got mode {cfg.rollout.mode!r})"
        )
    return k


def _prompt_splits(value) -> str | tuple[str, ...]:
    """``rollout.prompt_splits``: one split name or several; never the held-out eval split."""
    splits = (value,) if isinstance(value, str) else tuple(value)
    if not splits or "eval" in splits:
        raise ValueError(
            f"rollout.prompt_splits={value!r} must name training splits without 'eval' (the "
            "held-out phrasings the eval protocol scores), e.g. 'train' or ['train', 'pretrain']"
        )
    return value if isinstance(value, str) else splits
