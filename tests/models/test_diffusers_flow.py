"""diffusers flow-matching pipelines (SD3, Flux) as image policies, against diffusers itself.

Tiny random pipelines of the real classes (``tiny_diffusers``) are saved with
``save_pretrained`` and read back through ``model.path`` exactly as a user's folder is. The key
test is parity: the kit's ODE rollout over the policy's sigma schedule is
``pipe(..., output_type="latent")`` from the same noise, with and without classifier-free
guidance, and ``decode_images`` is the pipeline's decoding. Then the trainer on the policy: the
on-policy self-check, the frozen reference under LoRA, the direction of learning on the
brightness reward, checkpoints that a stock pipeline loads, and one-line errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

from unigrpo_kit.models.checkpoint import policy_spec
from unigrpo_kit.models.diffusers import (
    DiffusersFlowPolicy,
    FluxPolicy,
    SD3Policy,
)
from unigrpo_kit.models.protocol import ImagePolicy, TextPolicy
from unigrpo_kit.models.tiny_diffusers import save_tiny_flux, save_tiny_sd3
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.registry import MODELS
from unigrpo_kit.rollout.engine import guided
from unigrpo_kit.rollout.painter import paint
from unigrpo_kit.tasks.shapeworld import ShapeWorld

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "image_flowgrpo.py"
RESOLUTION, STEPS, TOKENS = 32, 4, 16
PROMPTS = ["a red circle above a blue square", "two green triangles"]
FAMILIES = ("sd3", "flux")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The two tiny pipelines, saved once (their tokenizers know ShapeWorld's words)."""
    root = tmp_path_factory.mktemp("pipelines")
    words = ShapeWorld().vocabulary()
    return {
        "sd3": save_tiny_sd3(root / "sd3", words=words),
        "flux": save_tiny_flux(root / "flux", words=words),
    }


def build(folder, **kw):
    """The policy of ``folder`` through the registry, as a recipe's ``model`` builds it."""
    spec = dict(type="DiffusersFlowPolicy", path=str(folder), resolution=RESOLUTION)
    spec.update(max_sequence_length=TOKENS, device="cpu", **kw)
    return MODELS.build(spec)


def stock(folder, **parts):
    """The folder's pipeline loaded with diffusers alone."""
    pipe = DiffusionPipeline.from_pretrained(str(folder), **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipe_latents(pipe, family, noise, *, scale=1.0, output_type="latent"):
    """``pipe(...)`` from ``noise`` (Flux: packed, as its latents argument takes them)."""
    kwargs = dict(
        num_inference_steps=STEPS, latents=noise.clone(), output_type=output_type,
        height=RESOLUTION, width=RESOLUTION, max_sequence_length=TOKENS,
    )  # fmt: skip
    if family == "sd3":
        kwargs["guidance_scale"] = scale
    elif scale != 1.0:  # Flux: its default distilled guidance, plus true CFG against ""
        kwargs.update(true_cfg_scale=scale, negative_prompt="")
    return pipe(PROMPTS, **kwargs).images


def ode_rollout(policy, noise, *, scale=1.0, texts=PROMPTS):
    """The kit's rollout with every step an Euler ODE step (no SDE step)."""
    _, context = policy.prompt_context(texts)
    guidance = None
    if scale != 1.0:
        guidance = guided(policy, context, policy.null_context(len(texts)), scale)
    sigmas = policy.sigma_schedule(STEPS, shift=3.0)
    sde_mask = torch.zeros(STEPS, dtype=torch.bool)
    trajectory = paint(
        policy, context, sigmas, sde_mask=sde_mask, noise=noise, guidance=guidance,
        num_rows=len(texts),
    )  # fmt: skip
    return trajectory.final


def noise_for(policy, seed=0):
    shape = (len(PROMPTS), *policy.latent_shape())
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


def perturb_(parameters, scale, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


# ----------------------------------------------------------------------------- the policy


@pytest.mark.parametrize("family", FAMILIES)
def test_the_base_type_picks_the_family_and_trains_the_transformer_alone(folders, family):
    policy = build(folders[family])
    assert type(policy) is {"sd3": SD3Policy, "flux": FluxPolicy}[family]
    assert isinstance(policy, ImagePolicy) and not isinstance(policy, TextPolicy)
    assert policy.attention_backend_used == "sdpa"
    groups = policy.parameter_groups()
    assert groups["text"] == []
    transformer = {id(p) for p in policy.pipe.transformer.parameters()}
    assert {id(p) for p in groups["image"]} == transformer
    frozen = [policy.pipe.vae, policy.pipe.text_encoder, policy.pipe.text_encoder_2]
    assert not any(p.requires_grad for part in frozen for p in part.parameters())
    # SD3 latents are the VAE's image (C, H/2, W/2); Flux's are packed 2x2: (H/4 * W/4, 4C)
    expected = {"sd3": (4, 16, 16), "flux": (64, 16)}[family]
    assert policy.latent_shape() == expected
    # a group's G rows share one encoding: a repeated prompt is encoded once
    _, context = policy.prompt_context([PROMPTS[0]] * 3 + [PROMPTS[1]])
    assert len(policy._prompt_cache) == 2
    assert torch.equal(context.prompt_embeds[0], context.prompt_embeds[2])
    assert context.prefix(5) is context
    assert len(context.select(torch.tensor([3, 0])).repeat_interleave(2)) == 4


@pytest.mark.parametrize("family,scale", [("sd3", 1.0), ("sd3", 4.5), ("flux", 1.0), ("flux", 2.0)])
def test_an_ode_rollout_is_the_pipelines_own_sampling(folders, family, scale):
    """The kit's ``paint`` (Euler ODE on every step) over ``policy.sigma_schedule`` equals
    ``pipe(..., output_type="latent")`` from the same noise, with CFG (SD3 4.5; Flux's true CFG)
    and without (SD3 1.0; Flux's distilled guidance alone)."""
    policy = build(folders[family])
    pipe = stock(folders[family])
    noise = noise_for(policy)
    ours = ode_rollout(policy, noise, scale=scale)
    theirs = pipe_latents(pipe, family, noise, scale=scale)
    assert ours.shape == theirs.shape
    assert relative(ours, theirs) < 1e-4
    # the schedule is the one the pipeline stepped through, ending in 0
    assert torch.allclose(policy.sigma_schedule(STEPS, 1.0), pipe.scheduler.sigmas.float())
    if scale == 1.0:
        # decoding is the pipeline's: unpack (Flux), scale and shift, VAE, [0, 1]
        images = policy.decode_images(ours)
        reference = pipe_latents(pipe, family, noise, scale=scale, output_type="pt")
        assert images.shape == (len(PROMPTS), 3, RESOLUTION, RESOLUTION)
        assert float((images - reference).abs().max()) < 1e-4


# ----------------------------------------------------------------------------- training


def make_trainer(
    policy, *, window="full", scale=1.0, sign=1.0, lr=1e-3, group=4, velocity_mse=0.046
):
    """The image Flow-GRPO recipe, tiny (2 prompts x ``group``, 4 steps), on ``policy`` with
    the Brightness reward; ``velocity_mse``: the VelocityMSE weight (0: no regularizer)."""
    from unigrpo_kit.trainer import UniGRPOTrainer

    windows = {
        "full": dict(type="FullWindow"),
        "fixed": dict(type="FixedWindow", window_size=3, window_range=(0, STEPS)),
    }
    cfg = load_recipe(
        RECIPE,
        [
            "rollout.prompts_per_step=2",
            f"rollout.group_size={group}",
            f"rollout.num_steps={STEPS}",
            f"rollout.guidance_scale={scale}",
            f"optimizer.lr_image={lr}",
            "optimizer.warmup_steps=0",  # the tests measure a few steps at the full rate
            f"algorithm.minibatch_size={2 * group}",
            "algorithm.inner_epochs=1",
            "rollout.window.window_range=(0,4)",
            "threads=1",
        ],
    )
    cfg.rollout.window = windows[window]
    # one round: no reflection (training_engine builds a configured reflection sampler, which
    # asks the policy for text stop tokens that an image policy does not have)
    cfg.rollout.pop("reflection_sampler")
    cfg.rollout.image_sampler = dict(type="FlowSDE", noise_level=0.7)
    cfg.algorithm.regularizers = (
        [dict(type="VelocityMSE", weight=velocity_mse)] if velocity_mse else []
    )
    cfg.reward = dict(type="Brightness", sign=sign)
    cfg.task = dict(type="ShapeWorld", resolution=RESOLUTION, seed=0)
    assert cfg.rollout.mode == "image" and not cfg.rollout.reasoning
    torch.manual_seed(0)
    return UniGRPOTrainer(cfg, policy)


@pytest.mark.parametrize(
    "family,window,scale",
    [("sd3", "full", 1.0), ("sd3", "fixed", 4.5), ("flux", "full", 1.0), ("flux", "fixed", 1.0)],
)
def test_a_train_step_is_on_policy(folders, family, window, scale):
    trainer = make_trainer(build(folders[family]), window=window, scale=scale)
    metrics = trainer.train_step().metrics
    assert metrics["ratio/self_check_max_dev"] < 1e-3  # the trainer's default tolerance
    assert metrics["episodes/trained"] > 0 and metrics["grad_norm"] > 0


def test_the_recipes_bf16_lora_with_checkpointing_trains_on_policy(folders):
    """The diffusers recipes' setting: LoRA, bfloat16 autocast, gradient checkpointing. The
    self-check holds to bf16 rounding (the recipes' tolerance 5e-2) and only the adapter, in
    float32, gets gradients."""
    lora = dict(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=["to_q", "to_v"])
    policy = build(folders["sd3"], lora=lora, dtype="bfloat16", gradient_checkpointing=True)
    adapter = policy.parameter_groups()["image"]
    trainer = make_trainer(policy, window="fixed")
    metrics = trainer.train_step().metrics
    assert metrics["ratio/self_check_max_dev"] < 5e-2 and metrics["grad_norm"] > 0
    assert all(p.dtype == torch.float32 for p in adapter)
    trained = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in adapter}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_lora_reference_is_the_base_transformer(folders, family):
    lora = dict(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"])
    policy = build(folders[family], lora=lora)
    trainable = policy.parameter_groups()["image"]
    assert trainable and all("lora_" in n for n, p in policy.module.named_parameters()
                             if p.requires_grad)  # fmt: skip
    perturb_(trainable, 0.3)
    reference, base = policy.reference(), build(folders[family])
    assert reference.parameter_groups() == {"text": [], "image": []}
    _, context = base.prompt_context(PROMPTS)
    noise, sigma = noise_for(base), torch.tensor([0.9, 0.4])
    with torch.no_grad():
        expected = base.velocity(context, noise, sigma)
        assert float((reference.velocity(context, noise, sigma) - expected).abs().max()) < 1e-6
        assert float((policy.velocity(context, noise, sigma) - expected).abs().max()) > 1e-3
        # the adapter is back on after the reference's call
        assert float((policy.velocity(context, noise, sigma) - expected).abs().max()) > 1e-3


def test_the_full_fine_tuning_reference_is_a_frozen_copy(folders):
    policy = build(folders["sd3"])
    reference = policy.reference()
    perturb_(policy.parameter_groups()["image"], 0.05)
    base = build(folders["sd3"])
    _, context = base.prompt_context(PROMPTS)
    noise, sigma = noise_for(base), torch.tensor([0.9, 0.4])
    with torch.no_grad():
        expected = base.velocity(context, noise, sigma)
        assert torch.allclose(reference.velocity(context, noise, sigma), expected, atol=1e-6)
        assert not torch.allclose(policy.velocity(context, noise, sigma), expected, atol=1e-3)


def fresh_brightness(trainer, seed=99) -> float:
    """Mean brightness of rollouts drawn with a fixed seed (the trainer's streams kept)."""
    batch = trainer.collect(stream_seed=seed)
    return float(batch.final_images().mean())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_flow_grpo_moves_brightness_the_way_the_reward_asks(folders, family, sign):
    """30 steps of Flow-GRPO (16 episodes each) raise the brightness of fresh rollouts for the
    reward and lower it for its negative. No velocity MSE here: it holds a tiny random model
    near its reference (the rate is a tiny random transformer's, not a real model's)."""
    trainer = make_trainer(build(folders[family]), sign=sign, lr=3e-3, group=8, velocity_mse=0)
    before = fresh_brightness(trainer)
    for _ in range(30):
        trainer.train_step()
    after = fresh_brightness(trainer)
    # measured: SD3 +0.018 / -0.011, Flux +0.027 / -0.032; a sign error moves it the other way
    assert sign * (after - before) > 0.005, (before, after)


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lora_checkpoint_loads_into_a_stock_pipeline(folders, family, tmp_path):
    lora = dict(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    policy = build(folders[family], lora=lora)
    trainer = make_trainer(policy, lr=1e-2)
    for _ in range(2):
        trainer.train_step()
    policy.save(tmp_path)
    noise = noise_for(policy)
    trained = ode_rollout(policy, noise)

    pipe = stock(folders[family])
    base = pipe_latents(pipe, family, noise)
    pipe.load_lora_weights(str(tmp_path))  # diffusers alone, no kit code
    loaded = pipe_latents(pipe, family, noise)
    assert relative(loaded, base) > 1e-3  # the adapter changes the pipeline's output
    assert relative(loaded, trained) < 1e-4  # into the trained policy's

    spec = policy_spec(tmp_path)
    assert spec["type"] == type(policy).__name__ and spec["adapter"] == str(tmp_path)
    rebuilt = MODELS.build(spec)
    assert relative(ode_rollout(rebuilt, noise), trained) < 1e-5
    # in place: a fresh LoRA policy's parameters keep their identity
    fresh = build(folders[family], lora=lora)
    ids = [id(p) for p in fresh.parameter_groups()["image"]]
    fresh.load_weights(tmp_path)
    assert [id(p) for p in fresh.parameter_groups()["image"]] == ids
    assert relative(ode_rollout(fresh, noise), trained) < 1e-5


def test_a_full_fine_tuning_checkpoint_round_trips(folders, tmp_path):
    from diffusers import SD3Transformer2DModel

    policy = build(folders["sd3"])
    trainer = make_trainer(policy, lr=1e-2)
    for _ in range(2):
        trainer.train_step()
    policy.save(tmp_path)
    noise = noise_for(policy)
    trained = ode_rollout(policy, noise)
    spec = policy_spec(tmp_path)
    assert spec["transformer"] == str(tmp_path) and spec["path"] == str(folders["sd3"])
    assert relative(ode_rollout(MODELS.build(spec), noise), trained) < 1e-5
    fresh = build(folders["sd3"])
    ids = [id(p) for p in fresh.parameter_groups()["image"]]
    fresh.load_weights(tmp_path)
    assert [id(p) for p in fresh.parameter_groups()["image"]] == ids
    assert relative(ode_rollout(fresh, noise), trained) < 1e-5
    # diffusers alone: the trained transformer over the base pipeline
    transformer = SD3Transformer2DModel.from_pretrained(tmp_path / "transformer")
    pipe = stock(folders["sd3"], transformer=transformer)
    assert relative(pipe_latents(pipe, "sd3", noise), trained) < 1e-4
    assert relative(pipe_latents(stock(folders["sd3"]), "sd3", noise), trained) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_dry_run_spec_saves_a_tiny_pipeline_of_the_family(folders, family, tmp_path):
    task = ShapeWorld()
    cls = {"sd3": SD3Policy, "flux": FluxPolicy}[family]
    spec = cls.dry_run_spec(dict(type=cls.__name__, path="org/some-model"), task, tmp_path / "a")
    assert type(MODELS.build(spec)) is cls and spec["resolution"] == 32
    # the auto-detecting base builds the family of a local pipeline folder
    auto = dict(type="DiffusersFlowPolicy", path=str(folders[family]))
    spec = DiffusersFlowPolicy.dry_run_spec(auto, task, tmp_path / "b")
    assert json.loads((tmp_path / "b" / "model_index.json").read_text())["_class_name"] == (
        cls.pipeline_class_name
    )


# ----------------------------------------------------------------------------- errors


def one_line_error(match, **spec):
    with pytest.raises(ValueError, match=match) as error:
        MODELS.build(spec)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_errors_are_one_line_and_name_the_key(folders, tmp_path):
    # a pipeline family no policy supports
    unknown = tmp_path / "sdxl"
    unknown.mkdir()
    (unknown / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionXLPipeline"})
    )
    message = one_line_error("model.path", type="DiffusersFlowPolicy", path=str(unknown))
    assert "StableDiffusion3Pipeline" in message and "FluxPipeline" in message
    # a folder that is not a pipeline, a path that is not a folder
    one_line_error("model.path.*model_index.json", type="SD3Policy", path=str(tmp_path))
    one_line_error("model.path", type="DiffusersFlowPolicy", path=str(tmp_path / "nowhere"))
    # the wrong family for the type
    one_line_error("model.path.*FluxPipeline", type="SD3Policy", path=str(folders["flux"]))
    # a resolution the VAE and patching cannot take: the nearest valid values
    message = one_line_error(
        "model.resolution", type="SD3Policy", path=str(folders["sd3"]), resolution=30
    )
    assert "28" in message and "32" in message
    message = one_line_error(  # past the position embeddings (32 patches of 2 x 2 pixels)
        "model.resolution", type="SD3Policy", path=str(folders["sd3"]), resolution=256
    )
    assert "at most 128" in message
    one_line_error("model.resolution", type="FluxPolicy", path=str(folders["flux"]), resolution=2)
    one_line_error(
        "model.lora and model.adapter", type="FluxPolicy", path=str(folders["flux"]),
        lora=dict(r=2), adapter=str(tmp_path),
    )  # fmt: skip
    # a broken pipeline folder (a part is missing)
    broken = tmp_path / "broken"
    shutil.copytree(folders["sd3"], broken)
    shutil.rmtree(broken / "vae")
    one_line_error("model.path", type="SD3Policy", path=str(broken))
