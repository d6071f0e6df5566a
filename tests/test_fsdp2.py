"""FSDP2 (``distributed.strategy="fsdp2"``) on the CPU with gloo: each rank stores half of the
parameters, the run equals one process's (TinyUnified) and a DDP run's (a composition of a
LoRA transformers reasoner and a LoRA diffusers painter); a sharded checkpoint saved at world 2
resumes at world 2 and at world 1 with the same next-step metrics, and its policy folder holds
the same weights as its shards.

Real processes, started with PyTorch's launcher (``tests/distributed/worker.py`` and
``recipe_worker.py``); tiny settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import CLI_TINY, REPO, assert_same_run, cli_train, metrics, run_worker

from unigrpo_kit.parallel import transformer_blocks

RECIPE_WORKER = REPO / "tests" / "distributed" / "recipe_worker.py"


def test_two_ranks_each_store_half_and_equal_one_process(tmp_path):
    one = run_worker(tmp_path / "one", 1)[0]
    ranks = run_worker(tmp_path / "two", 2, "distributed.strategy=fsdp2")
    total = sum(p.numel() for p in one["params"].values())
    assert one["stored"] == total
    # every block's and the root's parameters are split over the two ranks (dim 0, in halves)
    assert all(abs(r["stored"] - total / 2) <= 0.01 * total for r in ranks), [
        r["stored"] for r in ranks
    ]
    assert sum(r["stored"] for r in ranks) == total
    assert_same_run(one, ranks)


def _launch(config: Path, out: Path, nproc: int, *options: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", str(RECIPE_WORKER), str(config), str(out), "2",
               *options]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(nproc)]


def test_a_lora_composition_under_fsdp2_equals_ddp(tmp_path):
    """``recipes/composed/think_then_paint.py`` on tiny random Qwen2 + SD3 models, both with
    LoRA (the reference is the same modules with the adapters off: a shared module is sharded
    once and its gradient counted once)."""
    from unigrpo_kit.dry_run import shrunk
    from unigrpo_kit.recipe import load_recipe

    small = shrunk(load_recipe(REPO / "recipes" / "composed" / "think_then_paint.py", []), tmp_path)
    small.merge_from_dict({"reward": dict(type="CoinFlip", p=0.5),
                           "rollout.prompts_per_step": 3, "rollout.group_size": 4})  # fmt: skip
    config = tmp_path / "recipe.py"
    small.dump(str(config))
    ddp = _launch(config, tmp_path / "ddp", 2)[0]
    ranks = _launch(config, tmp_path / "fsdp2", 2, "distributed.strategy=fsdp2")
    assert [r["stored"] for r in ranks] == [ddp["total"] // 2] * 2
    for one, other in zip(ddp["metrics"], ranks[0]["metrics"], strict=True):
        assert other["episodes/trained"] == one["episodes/trained"] > 0
        for key in ("reward/mean", "loss/text", "loss/image", "grad_norm"):
            assert other[key] == pytest.approx(one[key], rel=1e-5, abs=1e-9), key
    for name, value in ddp["params"].items():
        assert torch.allclose(ranks[0]["params"][name], value, atol=1e-7), name


# ----------------------------------------------------------------------------- checkpoints
FSDP_CLI = [*CLI_TINY, "rollout.prompts_per_step=3", "rollout.group_size=4", "seed=3",
            "schedule.save_every=2", "distributed.strategy=fsdp2"]  # fmt: skip


def cli(work_dir: Path, nproc: int, *extra: str, options=FSDP_CLI):
    return cli_train(work_dir, *extra, nproc=nproc, options=options)


def back_to_step_2(source: Path, target: Path) -> Path:
    """A copy of a finished run as it was after step 2's checkpoint."""
    shutil.copytree(source, target)
    shutil.rmtree(target / "checkpoints" / "step_000004")
    (target / "checkpoints" / "latest").write_text("step_000002")
    return target


def test_a_sharded_checkpoint_resumes_at_another_world_size(tmp_path):
    straight = tmp_path / "straight"
    done = cli(straight, 2)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = metrics(straight)
    folder = straight / "checkpoints" / "step_000004"
    shards = sorted(p.name for p in (folder / "sharded").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["optimizer"] == {"sharded": "sharded"}

    # the policy folder (written by rank 0 from the gathered parameters) holds the shards'
    # weights: the kit's loaders, eval and export read it as any checkpoint
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(folder / "sharded", tmp_path / "whole.pt")
    whole = torch.load(tmp_path / "whole.pt")["model"]
    exported = load_file(folder / "model.safetensors")
    assert set(exported) == set(whole)
    for name, value in exported.items():
        assert torch.equal(value, whole[name]), name

    for nproc in (2, 1):
        again = back_to_step_2(straight, tmp_path / f"resumed_at_{nproc}")
        done = cli(again, nproc, "--resume")
        assert done.returncode == 0, done.stderr[-2000:]
        resumed = metrics(again)
        assert [m["step"] for m in resumed] == [1, 2, 3, 4]
        step3 = expected[2]
        assert step3["episodes/trained"] > 0  # the next step trains
        for one, other in zip(expected[2:], resumed[2:], strict=True):
            assert other["reward/mean"] == one["reward/mean"], (nproc, one["step"])
            for key in ("loss/text", "loss/image", "grad_norm"):
                assert other[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (nproc, key)


def test_fsdp2_refuses_a_replicated_checkpoint_in_one_line(tmp_path):
    ddp = [o for o in FSDP_CLI if not o.startswith("distributed.")] + ["schedule.steps=2"]
    done = cli(tmp_path / "run", 1, options=ddp)
    assert done.returncode == 0, done.stderr[-2000:]
    done = cli(tmp_path / "run", 1, "--resume", options=[*ddp[:-1], "distributed.strategy=fsdp2"])
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "no sharded/ folder" in last and "distributed.strategy='ddp'" in last, last


# ----------------------------------------------------------------------------- units
def test_the_units_are_the_transformer_blocks(make_tiny_model):
    model, _ = make_tiny_model(seed=0)
    model.blocks.append(type(model.blocks[0])(32, 2, 2))  # two blocks
    blocks = transformer_blocks(model)
    assert blocks == list(model.blocks)
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    qwen = transformers.Qwen2ForCausalLM(config)
    assert transformer_blocks(qwen) == list(qwen.model.layers)


def test_a_low_param_dtype_needs_a_policy_that_autocasts():
    """Gathered bf16 weights would meet TinyUnified's float32 activations: refused in one line
    that names the key and the fix (HF and diffusers policies with model.dtype='bfloat16'
    train under it: checked by hand at world 2, grad norms within 4e-4 of DDP's)."""
    from unigrpo_kit.recipe import load_recipe
    from unigrpo_kit.runner import build_trainer

    cfg = load_recipe(
        REPO / "recipes" / "unified_multiround.py",
        ["distributed.strategy=fsdp2", "distributed.param_dtype=bfloat16"],
    )
    with pytest.raises(ValueError, match=r"distributed.param_dtype='bfloat16' needs a policy"):
        build_trainer(cfg)
