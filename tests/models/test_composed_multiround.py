"""ComposedMultiRound: a vision-language reasoner and an image editor, over several rounds.

A tiny random Qwen2.5-VL (language model and vision tower from their config classes, a ChatML
tokenizer with the vision tokens trained in memory, Qwen2-VL's image processor) and a tiny
random FLUX.1 Kontext pipeline (``save_pretrained``) are read back through
``model.reasoner.path`` / ``model.painter.path`` of ``recipes/composed/multiround_edit.py``,
shrunk: float32, 2 prompts x 4 episodes, 2 rounds, 4 denoising steps, 6-8 token texts. The
engine, the recomputation and the trainer are the kit's own. A row ends its episode when its
reflection's first letter falls in the first half of the alphabet (a random tiny VLM never says
"done"; the rule splits a batch into rows that edit and rows that stop). What is pinned: the
on-policy self-check of every segment kind (reasoning, image 1, reflection, image 2); the
reasoner's recorded and recomputed log-probs against its HF model's own forward with the
images; one advantage on every token and every trained step of every round, none for the
second image of a row that stopped; the direction of learning with both parts trained.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from unigrpo_kit.models.composed_multiround import ComposedMultiRound, EpisodeContext
from unigrpo_kit.models.protocol import UnifiedPolicy
from unigrpo_kit.models.tiny_diffusers import save_tiny_flux_kontext
from unigrpo_kit.models.tiny_random import save_tiny_vision_lm
from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.registry import MODELS
from unigrpo_kit.rewards.base import Reward, RewardOutput
from unigrpo_kit.rollout.recompute import Recomputed
from unigrpo_kit.trainer import UniGRPOTrainer

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "composed" / "multiround_edit.py"
STEPS = 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("multiround")
    return save_tiny_vision_lm(root / "reasoner"), save_tiny_flux_kontext(root / "painter")


def stops_early(reflection: str) -> bool:
    """The test's end of an episode: the reflection starts with a letter in a..m."""
    letters = [c for c in reflection.lower() if c.isalpha()]
    return bool(letters) and letters[0] <= "m"


def recipe(folders, *, window="full", tokens=6, group=4, lr=3e-3, rounds=2):
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
            f"rollout.max_rounds={rounds}",
            f"rollout.window.window_range=(0,{STEPS})",
            f"rollout.text_sampler.max_new_tokens={tokens}",
            f"rollout.reflection_sampler.max_new_tokens={tokens}",
            f"algorithm.minibatch_size={2 * group}",
            "algorithm.inner_epochs=1",
            "algorithm.self_check_tol=1e-3",
            f"optimizer.lr_text={lr}",
            f"optimizer.lr_image={lr}",
        ],
    )
    cfg.model.reasoner.lora = None
    cfg.model.painter.lora = None
    if window == "full":
        cfg.rollout.window = dict(type="FullWindow")
    cfg.task = dict(type="ShapeWorld", resolution=32, seed=0)
    cfg.threads = 1
    return cfg


def trainer_of(cfg, reward=None) -> UniGRPOTrainer:
    torch.manual_seed(0)
    trainer = UniGRPOTrainer(cfg, MODELS.build(cfg.model))
    trainer.engine.ends_episode = stops_early
    if reward is not None:
        trainer.reward = reward
    return trainer


def rollout(trainer):
    batch = trainer.collect()
    trainer.score(batch)
    return batch


def kinds(batch):
    """The names of the batch's segments: prompt, reasoning, image 1, look, reflection,
    image 2."""
    return [s.kind for s in batch.segments]


# ----------------------------------------------------------------------------- the protocol


def test_a_unified_policy_of_two_parts(folders):
    policy = MODELS.build(recipe(folders).model)
    assert isinstance(policy, ComposedMultiRound) and isinstance(policy, UnifiedPolicy)
    groups = policy.parameter_groups()
    text, image = ({id(p) for p in groups[part]} for part in ("text", "image"))
    assert text and image and not text & image
    trainable = {id(p) for p in policy.module.parameters() if p.requires_grad}
    assert text | image == trainable
    vision = {id(p) for p in policy.reasoner._lm.model.visual.parameters()}
    assert not vision & trainable  # the vision tower is frozen
    assert policy.reference().parameter_groups() == {"text": [], "image": []}


# ----------------------------------------------------------------------------- exactness


def per_segment_deviation(trainer, batch) -> dict[str, float]:
    """max |log pi_new - log pi_old| of each generated text segment and each image, at the
    first minibatch (the trainer's recomputation)."""
    with torch.no_grad():
        current = trainer._recompute(trainer.policy, batch)
    out, column, step = {}, 0, 0
    names = iter(["reasoning", "reflection"])
    for index, seg in enumerate(batch.segments):
        if seg.kind == "text" and seg.generated:
            n = seg.ids.shape[1]
            t = current.text
            gap = (t.log_probs - t.old_log_probs)[:, column : column + n][
                t.mask[:, column : column + n]
            ]
            out[next(names)] = float(gap.abs().max()) if gap.numel() else 0.0
            column += n
        elif seg.kind == "image":
            k = int(seg.trajectory.sde_mask.sum())
            i = current.image
            gap = (i.log_probs - i.old_log_probs)[:, step : step + k][i.mask[:, step : step + k]]
            out[f"image {len(out) - len([k for k in out if not k.startswith('image')]) + 1}"] = (
                float(gap.abs().max()) if gap.numel() else 0.0
            )
            step += k
    return out


@pytest.mark.parametrize("window", ["full", "fixed"])
def test_every_segment_of_a_two_round_episode_is_on_policy(folders, window):
    trainer = trainer_of(recipe(folders, window=window))
    batch = rollout(trainer)
    assert kinds(batch) == ["text", "text", "image", "text", "text", "image"]
    second = batch.image_segments[1].active
    assert bool(second.any()) and not bool(second.all())  # some rows edit, some stopped
    deviation = per_segment_deviation(trainer, batch)
    print(deviation)
    assert set(deviation) == {"reasoning", "image 1", "reflection", "image 2"}
    assert max(deviation.values()) < 1e-3, deviation  # the trainer's default tolerance
    metrics = trainer.train_step().metrics
    assert metrics["ratio/self_check_max_dev"] < 1e-3 and metrics["grad_norm"] > 0
