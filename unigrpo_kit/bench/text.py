"""``unigrpo-kit bench --text-model DIR``: the wall time of one text-GRPO step on a causal LM.

One step of the kit's trainer on the :class:`~unigrpo_kit.models.hf_causal_lm.HFCausalLM` in
``DIR``, as a user's run takes it: 8 prompts x 8 completions (the built-in Arithmetic task),
exactly 32 new tokens each (no stop token, so every row runs the full length), the exact-answer
reward, group-normalised advantages, no KL and so no reference model, one inner epoch, one
optimizer step over all 64 completions (one minibatch). ``text_grpo_step_s`` is the median over
``repeats`` steps after ``warmup`` steps; rollout (generation) and update (recompute, backward,
AdamW) are reported apart. The comparison with TRL's ``GRPOTrainer`` on the same model and batch
is ``tools/compare_trl.py``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

PROMPTS, GROUP, NEW_TOKENS = 8, 8, 32


def text_grpo_recipe(model_dir: str | Path, device: str = "auto", dtype: str = "float32"):
    """The recipe of the timed step (a plain Config: nothing read from ``recipes/``)."""
    from mmengine.config import Config

    return Config(
        dict(
            model=dict(type="HFCausalLM", path=str(model_dir), device=device, dtype=dtype),
            task=dict(type="Arithmetic", seed=0),
            reward=dict(type="ExactAnswer"),
            algorithm=dict(
                advantage=dict(type="GroupNorm", clip=5.0),
                text_loss=dict(type="GRPOLoss", clip_eps=0.2, agg="seq-mean-token-mean"),
                regularizers=[],
                inner_epochs=1,
                minibatch_size=PROMPTS * GROUP,
                grad_clip=1.0,
                self_check_tol=1e-3,
                # every completion is trained, whatever the rewards (as TRL does)
                skip_zero_advantage=False,
            ),
            optimizer=dict(lr_text=1e-6, betas=(0.9, 0.999), weight_decay=0.0),
            rollout=dict(
                mode="text",
                reasoning=True,
                prompts_per_step=PROMPTS,
                group_size=GROUP,
                # no stop token: every completion has exactly NEW_TOKENS tokens
                text_sampler=dict(type="TextSampler", max_new_tokens=NEW_TOKENS, stop_token_ids=()),
            ),
            schedule=dict(steps=1_000_000),
            evaluation=dict(num_prompts=0, seed=0),
            seed=0,
        )
    )


def time_text_grpo(
    model_dir: str | Path, *, repeats: int = 5, warmup: int = 1, device: str = "auto"
) -> dict:
    """Seconds of ``warmup + repeats`` text-GRPO steps on ``model_dir``; the medians."""
    import torch

    from unigrpo_kit.runner import build_policy
    from unigrpo_kit.trainer import UniGRPOTrainer

    from .timing import device_name

    cfg = text_grpo_recipe(model_dir, device=device)
    torch.manual_seed(cfg.seed)
    policy = build_policy(cfg.model)
    trainer = UniGRPOTrainer(cfg, policy)
    steps, rollouts, prompt_tokens, padded = [], [], [], []
    for index in range(warmup + repeats):
        if policy.device.type == "cuda":
            torch.cuda.synchronize(policy.device)
        start = time.perf_counter()
        result = trainer.train_step()
        if policy.device.type == "cuda":
            torch.cuda.synchronize(policy.device)
        if index >= warmup:
            steps.append(time.perf_counter() - start)
            rollouts.append(result.metrics["time/rollout_s"])
            prompt = result.batch.segments[0].mask  # the rendered, left-padded prompts
            prompt_tokens.append(float(prompt.sum(1).float().mean()))
            padded.append(prompt.shape[1])
    step_s = statistics.median(steps)
    rollout_s = statistics.median(rollouts)
    return {
        "text_grpo_step_s": round(step_s, 4),
        "text_rollout_s": round(rollout_s, 4),
        "text_update_s": round(step_s - rollout_s, 4),
        "text_tokens_per_s": round(PROMPTS * GROUP * NEW_TOKENS / step_s, 1),
        "text_steps_s": [round(s, 4) for s in steps],
        "text_mean_prompt_tokens": round(statistics.mean(prompt_tokens), 1),
        "text_padded_prompt_tokens": round(statistics.mean(padded), 1),
        "prompts": PROMPTS,
        "completions_per_prompt": GROUP,
        "new_tokens": NEW_TOKENS,
        "params_m": round(sum(p.numel() for p in policy.module.parameters()) / 1e6, 3),
        "model": str(model_dir),
        "device": device_name(policy.device),
        "threads": torch.get_num_threads(),
    }
