"""Bad recipes, bad arguments and checkpoint files that do not fit: each is refused before any
work starts, with exit code 2 and one ``error:`` line that names the key (or the file), the
value and what is allowed; no traceback, no work dir left behind."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY_EVAL, TINY_RUN, assert_user_error, options
from typer.testing import CliRunner

from unigrpo_kit import cli
from unigrpo_kit.cli import app
from unigrpo_kit.models.tiny_unified import TinyUnifiedConfig
from unigrpo_kit.models.tokenizer import WordTokenizer
from unigrpo_kit.recipe import RecipeError, load_recipe
from unigrpo_kit.validation import (
    MAX_EVAL_PROMPTS,
    REQUIRED_SECTIONS,
    RULES,
    cap_num_prompts,
    eval_split_size,
    validate_recipe,
)

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
MULTIROUND = str(RECIPES / "unified_multiround.py")
SHIPPED = sorted(p for p in RECIPES.rglob("*.py") if not {"_base_", "ablations"} & set(p.parts))
runner = CliRunner()

TINY = (*TINY_RUN, "schedule.steps=2", *TINY_EVAL)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run every command from a scratch folder so default work_dirs/ land there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if a command gets as far as loading a policy."""

    def refuse(*args, **kwargs):
        raise AssertionError("a policy was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_load_for_eval", refuse)


def write_recipe(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- shipped recipes
@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_recipe_validates(recipe):
    cfg = load_recipe(recipe)
    for section in REQUIRED_SECTIONS:
        assert section in cfg, section


@pytest.mark.parametrize(
    "name", ["text_grpo", "image_flowgrpo", "unified_single_round", "unified_multiround"]
)
def test_the_test_suites_tiny_overrides_validate(name):
    """conftest's TINY_OPTIONS (test files cannot import conftest: TINY plus its two extras)."""
    tiny_options = [*TINY, "schedule.save_every=1", "schedule.sample_every=1"]
    load_recipe(RECIPES / f"{name}.py", [*tiny_options, "model.checkpoint=tiny-base"])


def test_shipped_recipes_are_all_found():
    names = {str(p.relative_to(RECIPES)) for p in SHIPPED}
    assert {"unified_multiround.py", "hf/text_grpo.py", "diffusers/sd3_flowgrpo.py"} <= names


def test_at_least_fifteen_keys_are_checked():
    assert len(RULES) >= 15
    for key in (
        "rollout.group_size",
        "schedule.steps",
        "optimizer.lr_text",
        "threads",
        "evaluation.num_prompts",
        "rollout.text_sampler.max_new_tokens",
        "rollout.reflection_sampler.temperature",
    ):
        assert key in RULES, key


def test_validation_leaves_the_random_state_alone():
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    load_recipe(MULTIROUND, list(TINY))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state


def test_validate_recipe_raises_a_value_error():
    cfg = load_recipe(MULTIROUND)
    cfg.merge_from_dict({"rollout.group_size": -1})
    with pytest.raises(ValueError, match=r"^recipe key rollout\.group_size=-1: must be an int"):
        validate_recipe(cfg)
    assert issubclass(RecipeError, ValueError)


# ----------------------------------------------------------------------------- bad values
# (override, what the one line must contain)
BAD_VALUES = [
    ("rollout.group_size=abc", "rollout.group_size='abc': must be an int >= 2"),
    ("rollout.group_size=-1", "rollout.group_size=-1: must be an int >= 2"),
    ("rollout.group_size=0", "rollout.group_size=0: must be an int >= 2"),
    ("rollout.group_size=True", "rollout.group_size=True: must be an int"),
    ("rollout.prompts_per_step=0", "rollout.prompts_per_step=0"),
    ("rollout.mode=both", "one of text, image, unified"),
    ("rollout.reasoning=1", "rollout.reasoning=1: must be True or False"),
    ("rollout.num_steps=2.5", "rollout.num_steps=2.5: must be an int >= 1"),
    ("rollout.shift=0", "rollout.shift=0: must be a number > 0"),
    ("rollout.max_rounds=0", "rollout.max_rounds=0"),
    ("rollout.guidance_scale=-1", "rollout.guidance_scale=-1"),
    ("rollout.text_sampler.max_new_tokens=0", "rollout.text_sampler.max_new_tokens=0"),
    ("rollout.text_sampler.temperature=-1", "rollout.text_sampler.temperature=-1"),
    ("rollout.reflection_sampler.max_new_tokens=True", "reflection_sampler.max_new_tokens=True"),
    ("algorithm.inner_epochs=0", "algorithm.inner_epochs=0"),
    ("algorithm.minibatch_size=None", "algorithm.minibatch_size=None"),
    ("algorithm.grad_clip=0", "algorithm.grad_clip=0: must be a number > 0"),
    ("algorithm.self_check_tol=-0.001", "algorithm.self_check_tol=-0.001"),
    ("algorithm.image_loss_weight=-1", "algorithm.image_loss_weight=-1"),
    ("optimizer.lr_text=fast", "optimizer.lr_text='fast': must be a number >= 0"),
    ("optimizer.lr_image=1e999", "optimizer.lr_image=inf"),
    ("optimizer.betas=(0.9,)", "optimizer.betas=(0.9,): must be a pair"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1"),
    ("optimizer.eps_image=0", "optimizer.eps_image=0: must be a number > 0"),
    ("schedule.steps=two", "schedule.steps='two': must be an int >= 1"),
    ("schedule.save_every=-1", "schedule.save_every=-1"),
    ("schedule.sample_every=x", "schedule.sample_every='x'"),
    ("evaluation.num_prompts=0", "evaluation.num_prompts=0"),
    (f"evaluation.num_prompts={MAX_EVAL_PROMPTS + 1}", f"[1, {MAX_EVAL_PROMPTS}]"),
    ("evaluation.steps=0", "evaluation.steps=0"),
    ("evaluation.seed=-1", "evaluation.seed=-1"),
    ("seed=1.5", "seed=1.5: must be an int >= 0"),
    ("threads=-1", "threads=-1: must be an int >= 1, or None"),
    ("threads=False", "threads=False"),
    # the components' own constructor checks, named by section
    ("rollout.image_sampler.noise_level=-1", "rollout.image_sampler (FlowSDE): "),
    ("rollout.image_sampler.type=FlowSDEE", "is not a registered component; did you mean FlowSDE"),
    ("algorithm.image_loss.clip_eps=abc", "algorithm.image_loss (FlowGRPOLoss): "),
    ("algorithm.text_loss.agg=bad", "algorithm.text_loss (GRPOLoss): unknown agg 'bad'"),
    ("algorithm.advantage.clip=-5", "algorithm.advantage (GroupNorm): clip must be > 0"),
    (
        "algorithm.regularizers=[{'type':'TokenKL','estimator':'k9'}]",
        "algorithm.regularizers[0] (TokenKL)",
    ),
    ("reward.mode=lenient", "reward (ShapeWorldJudge): "),
    ("task.resolution=33", "task (ShapeWorld): "),
    ("rollout.window.window_size=9", "rollout.window"),
]


def test_enough_distinct_bad_values():
    assert len({override for override, _ in BAD_VALUES}) >= 15


@pytest.mark.parametrize("override,needle", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_train_refuses_a_bad_value_before_anything_is_written(override, needle, tmp_path):
    work_dir = tmp_path / "run"
    args = ["train", MULTIROUND, "--work-dir", str(work_dir), "--quiet", *options(*TINY)]
    args += options(override)
    line = assert_user_error(runner.invoke(app, args), needle)
    assert override.split("=")[0].split(".")[0] in line  # the section, at least
    assert not work_dir.exists()
    assert not (tmp_path / "work_dirs").exists()
    assert not list(tmp_path.rglob("metrics.jsonl"))


@pytest.mark.parametrize("command", ["eval", "sample"])
@pytest.mark.parametrize(
    "override,needle",
    [("rollout.group_size=-1", "rollout.group_size=-1"), ("threads=-1", "threads=-1")],
)
def test_eval_and_sample_refuse_a_bad_value_before_the_model_loads(
    command, override, needle, no_model_loads, tmp_path
):
    args = [command, MULTIROUND, *options(*TINY, override)]
    if command == "sample":
        args += ["--out", str(tmp_path / "grid.png")]
    assert_user_error(runner.invoke(app, args), needle)


# ----------------------------------------------------------------------------- recipe files
def test_an_empty_recipe_is_named(tmp_path):
    recipe = write_recipe(tmp_path, "empty.py", "")
    assert_user_error(runner.invoke(app, ["train", str(recipe)]), "empty.py", "is empty")


def test_missing_sections_are_named(tmp_path):
    recipe = write_recipe(tmp_path, "partial.py", "task = dict(type='ShapeWorld')\nseed = 0\n")
    line = assert_user_error(runner.invoke(app, ["eval", str(recipe)]), "partial.py", "lacks")
    assert "model" in line and "algorithm" in line
    assert "AttributeError" not in line


def test_a_section_that_is_not_a_dict(tmp_path):
    text = f"_base_ = [{MULTIROUND!r}]\nrollout = 3\n"
    recipe = write_recipe(tmp_path, "scalar.py", text)
    assert_user_error(runner.invoke(app, ["train", str(recipe)]), "rollout=3", "must be a dict")


def test_a_key_the_mode_needs_is_named(tmp_path):
    text = (
        f"_base_ = [{MULTIROUND!r}]\n"
        "algorithm = dict(_delete_=True, advantage=dict(type='GroupNorm'), inner_epochs=1,\n"
        "    minibatch_size=4, grad_clip=1.0, self_check_tol=1e-3,\n"
        "    text_loss=dict(type='GRPOLoss'))\n"
    )
    recipe = write_recipe(tmp_path, "no_image_loss.py", text)
    result = runner.invoke(app, ["train", str(recipe), "--work-dir", str(tmp_path / "run")])
    assert_user_error(result, "algorithm.image_loss is missing", "trains images")
    assert not (tmp_path / "run").exists()


def test_a_directory_is_not_a_recipe(tmp_path):
    line = assert_user_error(runner.invoke(app, ["train", str(RECIPES)]), "is a directory")
    assert "does not exist" not in line


# ----------------------------------------------------------------------------- eval arguments
@pytest.mark.parametrize("count", ["0", "-3"])
def test_eval_refuses_fewer_than_one_prompt(count, no_model_loads):
    args = ["eval", MULTIROUND, "--num-prompts", count, *options(*TINY)]
    assert_user_error(runner.invoke(app, args), f"--num-prompts {count}", ">= 1")


def test_eval_refuses_a_negative_seed(no_model_loads):
    args = ["eval", MULTIROUND, "--seed", "-1", *options(*TINY)]
    assert_user_error(runner.invoke(app, args), "--seed -1")


def test_eval_caps_a_huge_number_of_prompts(tiny_checkpoint, monkeypatch):
    """The cap is MAX_EVAL_PROMPTS; patched to 7 here so that the test stays fast."""
    monkeypatch.setattr("unigrpo_kit.validation.MAX_EVAL_PROMPTS", 7)
    seen = {}

    def evaluate(cfg, policy, *, num_prompts=None, seed=None):
        seen["num_prompts"] = num_prompts
        return {"judge/strict": 0.0}

    monkeypatch.setattr("unigrpo_kit.evaluation.evaluate_recipe", evaluate)
    args = ["eval", MULTIROUND, "--checkpoint", str(tiny_checkpoint), "--json"]
    args += ["--num-prompts", "1000000000", *options(*TINY)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["num_prompts"] == 7
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--num-prompts 1000000000" in notes[0] and "7" in notes[0]


def test_cap_num_prompts_at_a_prompt_files_eval_split(tmp_path):
    from unigrpo_kit.tasks import PromptFile

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(40)))
    task = PromptFile(str(prompts), eval_fraction=0.3)
    size = eval_split_size(task, "eval")
    assert size == len(task.splits["eval"]) and 0 < size < 40
    count, note = cap_num_prompts(500, size)
    assert count == size and f"{size} prompts of the task's eval split" in note
    assert cap_num_prompts(size, size) == (size, None)
    count, note = cap_num_prompts(MAX_EVAL_PROMPTS + 1, None)
    assert count == MAX_EVAL_PROMPTS and str(MAX_EVAL_PROMPTS) in note
    assert eval_split_size(object(), "eval") is None


# ----------------------------------------------------------------------------- sample arguments
def test_sample_out_that_is_a_directory(tmp_path, no_model_loads):
    folder = tmp_path / "grid.png"
    folder.mkdir()
    args = ["sample", MULTIROUND, "--out", str(folder)]
    assert_user_error(runner.invoke(app, args), "is a directory")


def test_sample_out_in_a_folder_that_does_not_exist(tmp_path, no_model_loads):
    args = ["sample", MULTIROUND, "--out", str(tmp_path / "nowhere" / "grid.png")]
    assert_user_error(runner.invoke(app, args), "nowhere", "does not exist")


def test_sample_out_below_a_file(tmp_path, no_model_loads):
    (tmp_path / "file.txt").write_text("x")
    args = ["sample", MULTIROUND, "--out", str(tmp_path / "file.txt" / "grid.png")]
    assert_user_error(runner.invoke(app, args), "file.txt", "not a folder")


def test_sample_out_in_a_folder_that_cannot_be_written(tmp_path, monkeypatch, no_model_loads):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    args = ["sample", MULTIROUND, "--out", str(locked / "grid.png")]
    assert_user_error(runner.invoke(app, args), "not writable")


def test_sample_out_must_be_a_png(tmp_path, no_model_loads):
    args = ["sample", MULTIROUND, "--out", str(tmp_path / "grid.jpg")]
    assert_user_error(runner.invoke(app, args), "grid.jpg", ".png")


def test_sample_refuses_an_empty_prompt(tmp_path, no_model_loads):
    args = ["sample", MULTIROUND, "--out", str(tmp_path / "g.png"), "--prompt", "  "]
    assert_user_error(runner.invoke(app, args), "--prompt", "empty")


def test_sample_takes_an_upper_case_prompt(tiny_checkpoint, tmp_path):
    out = tmp_path / "upper.png"
    args = ["sample", MULTIROUND, "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    args += ["--prompt", "A RED  Circle", *options(*TINY)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_sample_names_words_outside_the_vocabulary(tiny_checkpoint, tmp_path):
    out = tmp_path / "x.png"
    args = ["sample", MULTIROUND, "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    args += ["--prompt", "a PURPLE elephant", *options(*TINY)]
    assert_user_error(runner.invoke(app, args), "elephant")
    assert not out.exists()


# ----------------------------------------------------------------------------- checkpoint files
def broken_copy(tiny_checkpoint: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def edit_config(folder: Path, **fields) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(fields)
    (folder / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "fields,needles",
    [
        ({"n_heads": 5}, ("n_heads=5", "d_model=32")),
        ({"d_model": 0}, ("d_model=0", ">= 1")),
        ({"n_layers": -1}, ("n_layers=-1",)),
        ({"patch_size": 5}, ("image_size=32", "patch_size 5")),
        ({"banned_token_ids": [999]}, ("banned_token_ids",)),
    ],
)
def test_eval_with_a_checkpoint_config_that_cannot_build_a_model(
    tiny_checkpoint, tmp_path, fields, needles
):
    folder = broken_copy(tiny_checkpoint, tmp_path, "bad-config")
    edit_config(folder, **fields)
    args = ["eval", MULTIROUND, "--checkpoint", str(folder), *options(*TINY)]
    assert_user_error(runner.invoke(app, args), *needles)


@pytest.mark.parametrize(
    "content,needle",
    [('{"special": ["<pad>", "<u', "not valid JSON"), ("[1, 2]", "needs"), ("", "not valid JSON")],
)
def test_eval_with_a_malformed_tokenizer_names_the_file(tiny_checkpoint, tmp_path, content, needle):
    folder = broken_copy(tiny_checkpoint, tmp_path, "bad-tokenizer")
    (folder / "tokenizer.json").write_text(content)
    args = ["eval", MULTIROUND, "--checkpoint", str(folder), *options(*TINY)]
    assert_user_error(runner.invoke(app, args), "tokenizer.json", needle)


def truncated_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    folder = broken_copy(tiny_checkpoint, tmp_path, "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return folder


def test_eval_with_a_truncated_weights_file(tiny_checkpoint, tmp_path):
    folder = truncated_copy(tiny_checkpoint, tmp_path)
    args = ["eval", MULTIROUND, "--checkpoint", str(folder), *options(*TINY)]
    assert_user_error(runner.invoke(app, args), str(folder), ".safetensors", "truncated")


def test_train_from_a_truncated_weights_file(tiny_checkpoint, tmp_path):
    """One line, exit 2; the line names the file once models/checkpoint.load_weights wraps
    safetensors' error (the train command prints the error's own first line)."""
    folder = truncated_copy(tiny_checkpoint, tmp_path)
    args = ["train", MULTIROUND, "--work-dir", str(tmp_path / "run"), "--quiet"]
    args += options(*TINY, f"model.checkpoint={folder}")
    assert_user_error(runner.invoke(app, args))
    assert not (tmp_path / "run").exists()


def test_config_from_file_names_the_file_and_the_field(tiny_checkpoint, tmp_path):
    folder = broken_copy(tiny_checkpoint, tmp_path, "ck")
    assert TinyUnifiedConfig.from_file(folder / "config.json").d_model == 32
    edit_config(folder, n_heads=5)
    with pytest.raises(ValueError, match=r"config\.json: config field n_heads=5 must divide"):
        TinyUnifiedConfig.from_file(folder / "config.json")
    (folder / "config.json").write_text('{"type": "TinyUni')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        TinyUnifiedConfig.from_file(folder / "config.json")


def test_config_refuses_booleans_and_strings():
    with pytest.raises(ValueError, match="n_layers=True"):
        TinyUnifiedConfig(vocab_size=10, n_layers=True)
    with pytest.raises(ValueError, match="mlp_ratio='4'"):
        TinyUnifiedConfig(vocab_size=10, mlp_ratio="4")


def test_tokenizer_load_refuses_words_with_spaces(tmp_path):
    from unigrpo_kit.models.tokenizer import SPECIAL_TOKENS

    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"special": list(SPECIAL_TOKENS), "words": ["red circle"]}))
    with pytest.raises(ValueError, match=r"tokenizer\.json: words must be"):
        WordTokenizer.load(path)
