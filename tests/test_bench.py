"""``unigrpo-kit bench``: the quick run completes and prints one valid JSON object last, and the
two sides of each figure do the same work (so that the ratios compare like with like)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from unigrpo_kit.bench.command import bench
from unigrpo_kit.bench.config import bench_recipe
from unigrpo_kit.bench.report import TARGETS, ratio
from unigrpo_kit.bench.world import QUICK, Bench, Sizes, load_or_random
from unigrpo_kit.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent

FIGURES = (
    "overhead/image_rollout",
    "overhead/text_rollout",
    "speedup/no_cfg",
    "speedup/kv_cache",
    "ratio/window_train",
    "images_per_s",
    "tokens_per_s",
    "train_step_s",
    "peak_memory_mb",
)
INFO = ("attention_backend", "threads", "device", "checkpoint", "batch", "steps", "tokens")


@pytest.fixture(scope="module")
def quick_run(tiny_checkpoint):
    app = typer.Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, ["--checkpoint", str(tiny_checkpoint), "--quick", "--json"])
    assert result.exit_code == 0, result.output
    return result


def test_quick_json_is_the_last_line_with_every_figure(quick_run, tiny_checkpoint):
    data = json.loads(quick_run.stdout.strip().splitlines()[-1])
    for key in FIGURES:
        assert math.isfinite(data[key]) and data[key] > 0, key
        low, high = data["spread"][key]
        assert 0 < low <= data[key] <= high, key
    for key in INFO:
        assert key in data
    assert data["attention_backend"] in ("sdpa", "xformers")
    assert data["checkpoint"] == str(tiny_checkpoint) and data["notes"] == []
    assert (data["batch"], data["steps"], data["tokens"], data["repeats"]) == (4, 3, 8, 2)
    assert data["window"] == "1/3" and data["targets_apply"] is False
    assert set(data["targets"]) == set(TARGETS)
    for key, target in data["targets"].items():
        comparison, bound = TARGETS[key]
        assert target["target"] == f"{comparison} {bound:g}"
        assert target["pass"] == (data[key] <= bound if comparison == "<=" else data[key] >= bound)
    # Sane bounds only (this is no timing test; CI machines are noisy): each ratio is positive
    # and far from absurd in the direction its definition allows.
    assert 0.2 < data["overhead/image_rollout"] < 50
    assert 0.2 < data["overhead/text_rollout"] < 50
    assert 0.2 < data["speedup/no_cfg"] < 10
    assert 0.1 < data["speedup/kv_cache"] < 1000
    assert 0.01 < data["ratio/window_train"] < 3


def test_with_json_the_table_goes_to_stderr(quick_run):
    assert "overhead/image_rollout" in quick_run.stderr
    assert "pass" in quick_run.stderr or "miss" in quick_run.stderr
    assert len(quick_run.stdout.strip().splitlines()) == 1


def test_missing_checkpoint_falls_back_to_a_random_default_model():
    model, tokenizer, label, note = load_or_random("no-such-checkpoint", torch.device("cpu"))
    assert label == "random-init"
    assert "no-such-checkpoint" in note and "randomly initialised" in note
    assert (model.config.d_model, model.config.n_layers) == (128, 4)  # the default config
    assert model.config.vocab_size == len(tokenizer)


def test_ratio_is_the_median_of_per_round_ratios_with_min_and_max():
    figure = ratio("speedup/kv_cache", [6.0, 10.0, 2.0], [1.0, 1.0, 1.0])
    assert (figure.value, figure.low, figure.high) == (6.0, 2.0, 10.0)
    assert figure.passed is True
    assert ratio("ratio/window_train", [1.0], [2.0]).passed is False  # 0.5 > 0.45


def test_window_is_three_of_ten_steps():
    assert Sizes().window == 3 and QUICK.window == 1


def test_the_built_in_recipe_is_the_single_round_recipe_file():
    """The bench carries recipes/unified_single_round.py merged (an installed kit has no
    recipes/ folder); this keeps the two the same."""
    shipped = load_recipe(REPO / "recipes" / "unified_single_round.py")
    assert bench_recipe().to_dict() == shipped.to_dict()
    assert bench_recipe(REPO / "recipes" / "unified_single_round.py").to_dict() == shipped.to_dict()


def test_a_missing_recipe_is_a_one_line_error_before_any_measurement():
    app = typer.Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, ["--quick", "--recipe", "no/such/recipe.py"])
    assert result.exit_code == 2
    assert "error: recipe file 'no/such/recipe.py' does not exist" in result.stderr
    assert "measuring" not in result.stderr


@pytest.fixture(scope="module")
def small_bench(make_tiny_model):
    model, tokenizer = make_tiny_model()
    return Bench(model.eval(), tokenizer, Sizes(batch=3, steps=4, tokens=5), torch.device("cpu"))


def test_text_rollout_and_its_floor_cache_the_same_tokens(small_bench):
    prompt = small_bench.prompt_ids.shape[1]
    assert small_bench.generate(finish=True).length == prompt + 5
    assert small_bench.bare_decodes().length == prompt + 5
    assert small_bench.generate().tokens.shape == (3, 5)
    assert small_bench.generate_without_cache().shape == (3, prompt + 5)


def test_window_batches_differ_only_in_the_trained_steps(small_bench):
    _, windowed, full = small_bench.trainer_and_batches()
    window, every = windowed.segments[-1].trajectory, full.segments[-1].trajectory
    assert int(window.sde_mask.sum()) == 1 and bool(every.sde_mask.all())
    assert torch.equal(window.latents, every.latents)
    assert windowed.segments[1].generated and windowed.segments[1].ids is full.segments[1].ids


def test_the_timed_training_step_is_on_policy(small_bench):
    trainer, windowed, _ = small_bench.trainer_and_batches()
    _, _, deviation = trainer.loss(windowed)
    assert set(deviation) == {"text", "image"}
    assert max(deviation.values()) < 1e-4
