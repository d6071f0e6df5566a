"""Training, resume, eval and sample with ``model.device=cuda`` (skipped without CUDA).

The random draws stay on the CPU generator, so a CUDA run consumes the same random stream as
a CPU run; its numbers differ from the CPU's only by float rounding (and the choices that
rounding flips), so these tests compare loosely.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from unigrpo_kit import runner
from unigrpo_kit.cli import app
from unigrpo_kit.models.attention import select_backend, xformers_available

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REPO = Path(__file__).resolve().parent.parent
RECIPES = ("text_grpo", "image_flowgrpo", "unified_single_round", "unified_multiround")
CUDA = {"model.device": "cuda"}
cli = CliRunner()


def read_metrics(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]


def without_time(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


# ----------------------------------------------------------------------------- (a) smoke runs
# A reward that varies within the groups of the tiny random model (the judge scores it 0
# everywhere), so that every step updates the model on the GPU.
def varying_reward() -> dict:
    return {"reward": dict(type="JpegCompressibility", _delete_=True)}


@pytest.mark.parametrize("recipe", RECIPES)
def test_two_steps_on_cuda(recipe, small_cfg, tmp_path):
    cfg = small_cfg(recipe, **CUDA, **varying_reward())
    trainer = runner.train(cfg, tmp_path / recipe, quiet=True)
    assert trainer.step == 2
    assert trainer.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    if trainer.reference is not None:
        assert all(p.device.type == "cuda" for p in trainer.reference.module.parameters())
    expected = "xformers" if xformers_available() else "sdpa"
    assert select_backend(trainer.model.attention_backend, trainer.device) == expected
    lines = read_metrics(tmp_path / recipe)
    assert [line["step"] for line in lines] == [1, 2]
    for line in lines:
        for key, value in line.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), key
        assert line["ratio/self_check_max_dev"] <= cfg.algorithm.self_check_tol
    assert sorted((tmp_path / recipe / "samples").glob("*.png"))
    assert runner.latest_checkpoint(tmp_path / recipe).name == "step_000002"


# ----------------------------------------------------------------------------- (b) same stream
def test_cuda_and_cpu_roll_out_from_the_same_random_stream(small_cfg, tmp_path):
    """The shipped base model, one rollout each: the texts are sampled from nearly the same
    distributions with the same uniforms, so (almost) every row writes the same reasoning."""

    def cfg(device):
        options = {"rollout.text_sampler.max_new_tokens": 32, "model.device": device}
        return small_cfg("unified_single_round", ckpt="tiny-base", **options)

    trainers = {device: runner.build_trainer(cfg(device)) for device in ("cpu", "cuda")}
    batches = {device: trainer.collect() for device, trainer in trainers.items()}
    cpu, cuda = batches["cpu"], batches["cuda"]
    assert [p.text for p in cpu.prompts] == [p.text for p in cuda.prompts]
    same = sum(a == b for a, b in zip(cpu.texts, cuda.texts))
    assert same >= len(cpu.texts) / 2, (cpu.texts, cuda.texts)
    if cpu.texts == cuda.texts:
        difference = (cpu.final_images() - cuda.final_images().cpu()).abs().max()
        assert difference < 1e-2, float(difference)
    # Both go on to train two steps; the first step's rewards come from those rollouts.
    steps = {}
    for device in ("cpu", "cuda"):
        runner.train(cfg(device), tmp_path / device, quiet=True)
        steps[device] = read_metrics(tmp_path / device)
    assert len(steps["cpu"]) == len(steps["cuda"]) == 2
    assert abs(steps["cpu"][0]["reward/mean"] - steps["cuda"][0]["reward/mean"]) <= 0.5


# ----------------------------------------------------------------------------- (c) resume
# The reasoning judge: a reward that the text alone decides (tokens are discrete, so rounding
# differences between kernels almost never change it) and that varies within the groups of
# the shipped base model, so that steps 1, 2 and 4 train (on the CPU; CUDA draws the same).
def resume_options() -> dict:
    return {
        "reward": dict(type="ReasoningReward", mode="partial", _delete_=True),
        "rollout.text_sampler.max_new_tokens": 32,
        "rollout.prompts_per_step": 3,
        "rollout.group_size": 4,
        "algorithm.minibatch_size": 6,
        **CUDA,
    }


def test_resume_on_cuda_continues_the_run(small_cfg, tmp_path):
    def cfg(steps):
        return small_cfg(
            "unified_multiround", ckpt="tiny-base", **{"schedule.steps": steps}, **resume_options()
        )

    runner.train(cfg(4), tmp_path / "straight", quiet=True)
    runner.train(cfg(2), tmp_path / "resumed", quiet=True)
    trainer = runner.train(cfg(4), tmp_path / "resumed", resume=True, quiet=True)
    assert trainer.step == 4
    # The optimizer state came back onto the parameters' device.
    for state in trainer.optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":
                assert value.device.type == "cuda", key
    straight = without_time(read_metrics(tmp_path / "straight"))
    resumed = without_time(read_metrics(tmp_path / "resumed"))
    assert [line["step"] for line in resumed] == [1, 2, 3, 4]
    assert any(line["episodes/trained"] > 0 for line in straight)
    for a, b in zip(straight, resumed):
        assert a.keys() == b.keys()
        for key in a:
            assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-4), (a["step"], key)


def test_a_cuda_checkpoint_resumes_on_the_cpu(small_cfg, tmp_path):
    cfg = small_cfg("unified_single_round", **CUDA, **varying_reward())
    trained = runner.train(cfg, tmp_path / "run", quiet=True)
    assert trained.optimizer.state  # something trained: Adam's moments are in the checkpoint
    state = runner.read_trainer_state(runner.latest_checkpoint(tmp_path / "run"))

    def devices(value):
        if torch.is_tensor(value):
            yield value.device.type
        elif isinstance(value, dict):
            for item in value.values():
                yield from devices(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from devices(item)

    assert set(devices(state)) == {"cpu"}
    options = {"schedule.steps": 3, "model.device": "cpu", **varying_reward()}
    cfg = small_cfg("unified_single_round", **options)
    trainer = runner.train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert trainer.step == 3 and trainer.device.type == "cpu"


# ----------------------------------------------------------------------------- (d) eval, sample
def eval_json(device: str) -> dict:
    args = ["eval", str(REPO / "recipes" / "unified_multiround.py"), "--checkpoint", "tiny-base"]
    args += ["--num-prompts", "8", "--json", "--cfg-options", f"model.device={device}"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eval_on_cuda_scores_like_the_cpu():
    cpu, cuda = eval_json("cpu"), eval_json("cuda")
    assert abs(cpu["judge/strict"] - cuda["judge/strict"]) <= 0.15, (cpu, cuda)
    for key in ("judge/strict", "judge/partial", "quality"):
        assert 0 <= cuda[key] <= 1, key


def test_sample_on_cuda_writes_a_png(tmp_path):
    out = tmp_path / "grid.png"
    args = ["sample", str(REPO / "recipes" / "unified_multiround.py"), "--out", str(out)]
    args += ["--checkpoint", "tiny-base"]
    args += ["--cfg-options", "model.device=cuda", "evaluation.steps=4"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0


def test_the_trainer_generator_stream_is_shared(small_cfg):
    """After the same rollout, the CPU generators of a CPU and a CUDA trainer stand at the same
    place when the rollouts took the same decisions (same number of draws)."""
    states = {}
    for device in ("cpu", "cuda"):
        trainer = runner.build_trainer(
            small_cfg("image_flowgrpo", ckpt="tiny-base", **{"model.device": device})
        )
        prompts = trainer.task.sample_prompts(2, generator=random.Random(0))
        stream = torch.Generator().manual_seed(0)
        trainer.engine.rollout(prompts, 2, generator=stream)
        states[device] = stream.get_state()
    assert torch.equal(states["cpu"], states["cuda"])
