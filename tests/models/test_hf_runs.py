"""Runs of an HF causal LM through the runner: a resumed run repeats the uninterrupted one
step for step (full fine-tuning and LoRA), and the checkpoints load with no kit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from unigrpo_kit import runner
from unigrpo_kit.models.tiny_random import save_tiny_causal_lm
from unigrpo_kit.recipe import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "hf" / "text_grpo.py"
LORA = "{'r': 4, 'lora_alpha': 8, 'target_modules': ['q_proj', 'v_proj'], 'lora_dropout': 0.0}"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("base") / "qwen", "qwen2")


def recipe(base, steps: int, lora: bool):
    options = [
        f"model.path={base}",
        "rollout.prompts_per_step=2",
        "rollout.group_size=4",
        "rollout.text_sampler.max_new_tokens=8",
        "optimizer.lr_text=1e-3",
        "algorithm.minibatch_size=4",
        f"schedule.steps={steps}",
        "schedule.save_every=1",
        "schedule.sample_every=0",
    ]
    if lora:
        options.append(f"model.lora={LORA}")
    cfg = load_recipe(RECIPE, options)
    cfg.threads = 1
    # a reward that varies (a hash of each episode), so that every step trains
    cfg.reward = dict(type="CoinFlip", p=0.5)
    return cfg


def metrics(work_dir):
    rows = [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_resumed_hf_run_repeats_the_uninterrupted_one(base, tmp_path, lora):
    straight = tmp_path / "straight"
    trainer = runner.train(recipe(base, 3, lora), straight, quiet=True)
    resumed = tmp_path / "resumed"
    runner.train(recipe(base, 1, lora), resumed, quiet=True)
    runner.train(recipe(base, 3, lora), resumed, resume=True, quiet=True)
    assert metrics(resumed) == metrics(straight)
    assert len(metrics(straight)) == 3

    # The last checkpoint is the trained policy, read with no kit code.
    last = straight / "checkpoints" / "step_000003"
    if lora:
        from peft import PeftModel

        assert (last / "adapter_model.safetensors").is_file()
        assert not (last / "model.safetensors").exists()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), last)
    else:
        model = AutoModelForCausalLM.from_pretrained(last)
    untrained = AutoModelForCausalLM.from_pretrained(base)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = trainer.policy.module(ids).logits
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=0)
        assert not torch.allclose(untrained(ids).logits, expected, atol=1e-4)
