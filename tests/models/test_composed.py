"""ComposedUnified: a Hugging Face causal LM reasoner and a diffusers painter as one policy.

A tiny random Qwen2 and a tiny random SD3 pipeline (the real classes, ``save_pretrained``)
are read back through ``model.reasoner.path`` and ``model.painter.path`` of the
``recipes/composed/think_then_paint.py`` recipe, shrunk as the dry run shrinks it (float32,
2 prompts x 8 episodes, 4 denoising steps, 8-12 reasoning tokens). The engine, the
recomputation and the trainer are the kit's own, unchanged. What is pinned: the protocol and the
parameter groups; the on-policy self-check of both segment kinds and the reasoner's log-probs
against the HF model's own forward; one advantage per episode on every token and every trained
step; the direction of learning from a text reward and from an image reward with both parts
trained; checkpoints that stock loaders read and the registry rebuilds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from unigrpo_kit.models.checkpoint import policy_spec
from unigrpo_kit.models.composed import ComposedUnified, PainterContext
from unigrpo_kit.models.protocol import ImagePolicy, TextPolicy, UnifiedPolicy
from unigrpo_kit.models.tiny_diffusers import save_tiny_sd3
from unigrpo_kit.models.tiny_random import save_tiny_causal_lm
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.registry import MODELS
from unigrpo_kit.rewards.base import Reward, RewardOutput
from unigrpo_kit.rollout.recompute import Recomputed, model_segments
from unigrpo_kit.trainer import UniGRPOTrainer

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "composed" / "think_then_paint.py"
STEPS = 4
LORA_TEXT = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
LORA_IMAGE = dict(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The tiny reasoner and painter folders, saved once."""
    root = tmp_path_factory.mktemp("composed")
    return save_tiny_causal_lm(root / "reasoner", "qwen2"), save_tiny_sd3(root / "painter")


def recipe(folders, *, window="fixed", tokens=8, group=8, lr=3e-3, **model):
    """The think-then-paint recipe, shrunk: float32, no LoRA unless ``model`` asks, 2 prompts x
    ``group``, ``STEPS`` steps (``window``: "fixed", its 3-step window, or "full"), one inner
    epoch, the trainer's default self-check tolerance 1e-3, ShapeWorld's prompts."""
    reasoner, painter = folders
    cfg = load_recipe(
        RECIPE,
        [
            f"model.reasoner.path={reasoner}",
            f"model.painter.path={painter}",
            "model.reasoner.dtype=float32",
            "model.painter.dtype=float32",
            "model.painter.gradient_checkpointing=False",
            "model.painter.resolution=32",
            "model.painter.max_sequence_length=16",
            "model.device=cpu",
            "rollout.prompts_per_step=2",
            f"rollout.group_size={group}",
            f"rollout.num_steps={STEPS}",
            f"rollout.window.window_range=(0,{STEPS})",
            f"rollout.text_sampler.max_new_tokens={tokens}",
            f"algorithm.minibatch_size={2 * group}",
            "algorithm.inner_epochs=1",
            "algorithm.self_check_tol=1e-3",
            f"optimizer.lr_text={lr}",
            f"optimizer.lr_image={lr}",
        ],
    )
    cfg.model.reasoner.lora = model.pop("lora_text", None)
    cfg.model.painter.lora = model.pop("lora_image", None)
    cfg.model.update(model)
    if window == "full":
        cfg.rollout.window = dict(type="FullWindow")
    cfg.task = dict(type="ShapeWorld", resolution=32, seed=0)
    cfg.threads = 1
    return cfg


def without_velocity_mse(cfg):
    """``cfg`` without the velocity MSE: at a tiny random transformer's rate (3e-3) the
    recipe's weight holds the painter at its reference (brightness moved < 0.001 in 30 steps
    with it, +0.058 without); a real SD3.5 trains at the recipe's 3e-4."""
    cfg.algorithm.regularizers = []
    return cfg


def trainer_of(cfg, reward=None) -> UniGRPOTrainer:
    """The trainer of ``cfg`` on its policy, seeded; ``reward``: a built reward to use instead
    of the recipe's (the test's own, unregistered)."""
    torch.manual_seed(0)
    trainer = UniGRPOTrainer(cfg, MODELS.build(cfg.model))
    if reward is not None:
        trainer.reward = reward
    return trainer


def rollout(trainer):
    """One scored batch of the trainer's current policy."""
    batch = trainer.collect()
    trainer.score(batch)
    return batch


# ----------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("lora", [False, True])
def test_a_text_and_an_image_policy_whose_groups_are_its_parts(folders, lora):
    extra = dict(lora_text=LORA_TEXT, lora_image=LORA_IMAGE) if lora else {}
    policy = MODELS.build(recipe(folders, **extra).model)
    assert isinstance(policy, ComposedUnified)
    assert isinstance(policy, TextPolicy) and isinstance(policy, ImagePolicy)
    assert not isinstance(policy, UnifiedPolicy)  # single round: it does not look at images
    groups = policy.parameter_groups()
    text, image = ({id(p) for p in groups[part]} for part in ("text", "image"))
    assert text == {id(p) for p in policy.reasoner.parameter_groups()["text"]}
    assert image == {id(p) for p in policy.painter.parameter_groups()["image"]}
    assert text and image and not text & image  # disjoint
    trainable = {id(p) for p in policy.module.parameters() if p.requires_grad}
    assert text | image == trainable  # complete: nothing else in the module trains
    frozen = policy.painter.pipe.text_encoder_3.parameters()
    assert not {id(p) for p in frozen} & trainable  # the painter's text encoders never train
    if lora:
        names = [n for n, p in policy.module.named_parameters() if p.requires_grad]
        assert all("lora_" in name for name in names)
    assert policy.reference().parameter_groups() == {"text": [], "image": []}


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("window", ["full", "fixed"])
def test_a_step_is_on_policy_for_both_kinds(folders, window):
    trainer = trainer_of(recipe(folders, window=window))
    batch = rollout(trainer)
    image = batch.image_segments[0]
    assert int(image.trajectory.sde_mask.sum()) == (STEPS if window == "full" else 3)
    deviation = trainer.first_minibatch_deviation(batch)
    assert set(deviation) == {"text", "image"}
    assert max(deviation.values()) < 1e-3, deviation  # the trainer's default tolerance
    metrics = trainer.train_step().metrics
    assert metrics["ratio/self_check_max_dev"] < 1e-3 and metrics["grad_norm"] > 0


def test_recorded_log_probs_are_the_hf_models_own(folders):
    """Each row's recorded reasoning log-probs are log_softmax of the reasoner's HF model over
    that row alone, prompt and reasoning without padding."""
    from transformers import AutoModelForCausalLM

    trainer = trainer_of(recipe(folders, tokens=10))
    batch = trainer.collect()
    model = AutoModelForCausalLM.from_pretrained(str(folders[0]), dtype=torch.float32).eval()
    prompt, reasoning = batch.segments[0], batch.segments[1]
    worst = 0.0
    for row in range(len(batch)):
        given = prompt.ids[row][prompt.mask[row]]
        generated = reasoning.ids[row][reasoning.mask[row]]
        ids = torch.cat([given, generated])[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        predicting = logits[len(given) - 1 : -1]
        expected = predicting.log_softmax(-1).gather(-1, generated[:, None]).squeeze(-1)
        recorded = reasoning.log_probs[row][reasoning.mask[row]]
        worst = max(worst, float((recorded - expected).abs().max()))
    assert worst < 1e-5, worst


def test_the_painter_is_told_the_template_filled_with_prompt_and_reasoning(folders):
    cfg = recipe(folders)
    cfg.model.template = "{prompt}. {reasoning}"
    trainer = trainer_of(cfg)
    batch = trainer.collect()
    context = trainer.policy.forward_episode(model_segments(batch)).context
    assert isinstance(context, PainterContext)
    expected = [f"{p.text}. {thought}" for p, thought in zip(batch.prompts, batch.texts)]
    assert list(context.texts) == expected
    _, direct = trainer.policy.painter.prompt_context(expected)
    assert torch.equal(context.painter.prompt_embeds, direct.prompt_embeds)
    rows = torch.tensor([3, 0])
    assert list(context.select(rows).repeat_interleave(2).texts) == [
        expected[3], expected[3], expected[0], expected[0]
    ]  # fmt: skip


# ----------------------------------------------------------------------------- one advantage


def test_one_advantage_weighs_every_token_and_every_trained_step(folders):
    """At ratio 1 the gradient of the policy term with respect to each log-prob is -A_i / (N
    |y_i|) for every token of episode i (GRPO, seq-mean-token-mean) and -A_i / (N K) for each
    of its K trained steps (Flow-GRPO; RatioNorm off, which would scale each step by its std):
    the same A_i on both parts (UniGRPO, Eq. 7)."""
    cfg = recipe(folders)
    cfg.algorithm.image_loss.ratio_norm = False
    trainer = trainer_of(cfg)
    batch = rollout(trainer)
    advantages = batch.advantages.to(trainer.device)
    assert bool((advantages != 0).any())
    current = trainer._recompute(trainer.policy, batch)
    text = current.text._replace(log_probs=current.text.old_log_probs.clone().requires_grad_())
    image = current.image._replace(log_probs=current.image.old_log_probs.clone().requires_grad_())
    # every generated token and every window step of every episode is trained
    assert torch.equal(text.mask, batch.segments[1].mask)
    assert image.mask.shape == (len(batch), 3) and bool(image.mask.all())
    terms = trainer.objective.terms(
        Recomputed(text, image), trainer.reference_terms(batch), advantages
    )
    terms.policy.backward()
    n, lengths = len(batch), text.mask.sum(1, keepdim=True).float()
    token_weight = -text.log_probs.grad * n * lengths  # A_i on every generated token
    step_weight = -image.log_probs.grad * n * image.mask.shape[1]  # A_i on every trained step
    expected = advantages[:, None]
    assert torch.allclose(token_weight[text.mask], expected.expand_as(text.mask)[text.mask],
                          atol=1e-6)  # fmt: skip
    assert torch.allclose(step_weight, expected.expand_as(step_weight), atol=1e-6)
    assert not bool(text.log_probs.grad[~text.mask].any())  # nothing after a stop token


# ----------------------------------------------------------------------------- learning


class LetterCount(Reward):
    """sign * how many times ``letter`` occurs in each reasoning (test-only)."""

    needs = frozenset({"texts"})

    def __init__(self, letter: str, sign: float) -> None:
        self.letter, self.sign = letter, sign

    def compute(self, *, prompts, images, texts):
        return RewardOutput(torch.tensor([self.sign * t.count(self.letter) for t in texts]))


def fresh(trainer, measure) -> float:
    """``measure(batch)`` of rollouts drawn with a fixed seed (the trainer's streams kept)."""
    batch = trainer.collect(stream_seed=99)
    return measure(batch)


def letters(batch) -> float:
    return sum(text.count("e") for text in batch.texts) / len(batch)


def brightness(batch) -> float:
    return float(batch.final_images().mean())


def train(trainer, steps=30) -> None:
    for _ in range(steps):
        trainer.train_step()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_reasoning_reward_moves_the_reasoning_both_ways(folders, sign):
    trainer = trainer_of(recipe(folders, tokens=12), LetterCount("e", sign))
    before = fresh(trainer, letters)
    train(trainer)
    after = fresh(trainer, letters)
    # measured: 0.81 -> 1.88 / 0.81 -> 0.13 "e" per reasoning
    assert sign * (after - before) > 0.25, (before, after)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_image_reward_moves_the_image_both_ways(folders, sign):
    cfg = without_velocity_mse(recipe(folders))
    cfg.reward = dict(type="Brightness", sign=sign)
    trainer = trainer_of(cfg)
    before = fresh(trainer, brightness)
    train(trainer)
    after = fresh(trainer, brightness)
    # measured: 0.497 -> 0.558 / 0.497 -> 0.470
    assert sign * (after - before) > 0.01, (before, after)


def test_a_reward_on_both_moves_both(folders):
    from unigrpo_kit.rewards.brightness import Brightness
    from unigrpo_kit.rewards.composite import WeightedSum

    # each part's advantage normalised within the group, then summed: neither drowns the other
    reward = WeightedSum(rewards=[LetterCount("e", 1.0), Brightness()], normalize="group")
    trainer = trainer_of(without_velocity_mse(recipe(folders, tokens=12)), reward)
    before = fresh(trainer, letters), fresh(trainer, brightness)
    train(trainer)
    after = fresh(trainer, letters), fresh(trainer, brightness)
    # measured: letters 0.81 -> 1.50, brightness 0.497 -> 0.515
    assert after[0] > before[0] + 0.25 and after[1] > before[1] + 0.005, (before, after)


# ----------------------------------------------------------------------------- checkpoints


def velocity_and_logits(policy, batch):
    """The recomputation's text logits and the velocities of the painter at fixed inputs, under
    no gradients (``policy`` in eval mode)."""
    policy.eval()
    with torch.no_grad():
        out = policy.forward_episode(model_segments(batch))
        latents = batch.image_segments[0].trajectory.latents[:, 1]
        sigma = torch.full((len(batch),), 0.7)
        return torch.cat([t.flatten(1) for t in out.text_logits], 1), policy.velocity(
            out.context, latents, sigma
        )


def test_a_checkpoint_loads_with_stock_loaders_and_by_registry_type(folders, tmp_path):
    from diffusers import DiffusionPipeline
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = recipe(folders, lr=1e-2, lora_text=LORA_TEXT, lora_image=LORA_IMAGE)
    trainer = trainer_of(cfg)
    train(trainer, steps=2)
    policy = trainer.policy
    batch = trainer.collect()
    logits, velocity = velocity_and_logits(policy, batch)
    policy.save(tmp_path / "step")
    saved = json.loads((tmp_path / "step" / "unigrpo_policy.json").read_text())
    assert saved["type"] == "ComposedUnified"
    assert saved["kwargs"]["reasoner"] == "reasoner" and saved["kwargs"]["painter"] == "painter"

    # stock loaders, no kit code: the reasoner's adapter over the base LM...
    base = AutoModelForCausalLM.from_pretrained(str(folders[0]), dtype=torch.float32)
    stock_lm = PeftModel.from_pretrained(base, str(tmp_path / "step" / "reasoner")).eval()
    ids = torch.cat([batch.segments[0].ids[:1], batch.segments[1].ids[:1]], 1)
    with torch.no_grad():
        policy_logits = policy.reasoner.module(input_ids=ids).logits
        assert torch.allclose(stock_lm(input_ids=ids).logits, policy_logits, atol=1e-5)
    # ... and the painter's LoRA in a stock pipeline: its transformer's velocity
    pipe = DiffusionPipeline.from_pretrained(str(folders[1]))
    pipe.load_lora_weights(str(tmp_path / "step" / "painter"))
    context = policy.forward_episode(model_segments(batch)).context.painter
    latents = batch.image_segments[0].trajectory.latents[:, 1]
    with torch.no_grad():
        stock_v = pipe.transformer(
            hidden_states=latents, timestep=torch.full((len(batch),), 700.0),
            encoder_hidden_states=context.prompt_embeds,
            pooled_projections=context.pooled_projections, return_dict=False,
        )[0]  # fmt: skip
    assert torch.allclose(stock_v, velocity, atol=1e-5)

    # by registry type, from wherever the checkpoint moved
    moved = Path(shutil.copytree(tmp_path / "step", tmp_path / "moved"))
    shutil.rmtree(tmp_path / "step")
    rebuilt = MODELS.build(policy_spec(moved))
    assert isinstance(rebuilt, ComposedUnified)
    for new, old in zip(velocity_and_logits(rebuilt, batch), (logits, velocity)):
        assert torch.allclose(new, old, atol=1e-5)
    # in place: a fresh policy's parameters keep their identity
    fresh_policy = MODELS.build(cfg.model)
    before = [id(p) for part in fresh_policy.parameter_groups().values() for p in part]
    fresh_policy.load_weights(moved)
    assert [id(p) for part in fresh_policy.parameter_groups().values() for p in part] == before
    for new, old in zip(velocity_and_logits(fresh_policy, batch), (logits, velocity)):
        assert torch.allclose(new, old, atol=1e-5)


# ----------------------------------------------------------------------------- set-up


def test_dry_run_spec_saves_both_parts_into_sub_folders(tmp_path):
    from unigrpo_kit.registry import TASKS

    cfg = load_recipe(RECIPE)
    task = TASKS.build(dict(type="ShapeWorld", resolution=32, seed=0))
    spec = ComposedUnified.dry_run_spec(dict(cfg.model), task, tmp_path)
    assert spec["reasoner"]["path"] == str(tmp_path / "reasoner")
    assert spec["painter"]["path"] == str(tmp_path / "painter")
    assert spec["reasoner"]["lora"] == cfg.model.reasoner.lora  # the recipe's other keys kept
    assert (tmp_path / "painter" / "model_index.json").is_file()
    assert (tmp_path / "reasoner" / "config.json").is_file()


def test_errors_are_one_line_and_name_the_key(folders):
    reasoner, painter = (str(folder) for folder in folders)
    cases = {
        "model.reasoner.path=None": dict(reasoner=dict(path=None), painter=dict(path=painter)),
        "model.painter.path=": dict(reasoner=dict(path=reasoner), painter=dict(path=reasoner)),
        "model.template=": dict(
            reasoner=dict(path=reasoner), painter=dict(path=painter), template="{image}"
        ),
        "model.reasoner.type=": dict(
            reasoner=dict(type="SD3Policy", path=painter, resolution=32),
            painter=dict(path=painter),
        ),
        "model.painter='painter'": dict(reasoner=dict(path=reasoner), painter="painter"),
    }
    for start, kwargs in cases.items():
        with pytest.raises(ValueError) as error:
            ComposedUnified(**kwargs)
        message = str(error.value)
        assert message.startswith(start) and "\n" not in message, message
