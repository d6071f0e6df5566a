"""``--dry-run``: a recipe checked end to end on tiny random models, before renting a GPU.

Every model the recipe names is built from its own class with tiny random weights and a
tokenizer built in memory (no user file, no download): each policy class offers
``dry_run_spec(model_cfg, task, folder) -> model_cfg``, which saves such a model into ``folder``
the way a user's checkpoint is laid out and returns the recipe's ``model`` pointed at it, so
the dry run also loads it through the path a user's folder takes. A ``PromptFile`` task whose
``path`` is not set yet reads ShapeWorld's prompts from a stand-in file. The recipe is then shrunk
(2 prompts x 2 episodes, short texts, 4 denoising steps, 2 steps that each save a checkpoint)
and run for real: 2 training steps, a checkpoint written and loaded back by registry type,
and an evaluation on a few prompts.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from .recipe import flat_keys
from .registry import MODELS, TASKS

# The keys a dry run shrinks, where the recipe has them.
SHRINK = {
    "rollout.prompts_per_step": 2,
    "rollout.group_size": 2,
    "rollout.num_steps": 4,
    "rollout.text_sampler.max_new_tokens": 6,
    "rollout.reflection_sampler.max_new_tokens": 4,
    "algorithm.minibatch_size": 4,
    "schedule.steps": 2,
    "schedule.save_every": 1,
    "schedule.sample_every": 1,
    "evaluation.num_prompts": 7,
    "evaluation.steps": 4,
}


def tiny_model_cfg(cfg, folder: Path) -> dict:
    """The recipe's ``model`` config pointed at a tiny random model of the same class, saved
    under ``folder``."""
    spec = dict(cfg.model)
    policy_class = MODELS.get(spec.get("type", "TinyUnified"))
    task = TASKS.build(cfg.task)
    return policy_class.dry_run_spec(spec, task, Path(folder))


def shrunk(cfg, folder: Path):
    """A copy of the recipe with a tiny model and tiny sizes (the keys of ``SHRINK`` that it
    has, an SDE window that fits 4 steps, one thread)."""
    small = copy.deepcopy(cfg)
    keys = set(flat_keys(small._cfg_dict.to_dict()))
    small.merge_from_dict({key: value for key, value in SHRINK.items() if key in keys})
    window = small.rollout.get("window")
    if window is not None and "window_size" in window:
        small.merge_from_dict({"rollout.window.window_size": 2})
        if "window_range" in window:
            small.merge_from_dict({"rollout.window.window_range": (0, 4)})
    small.threads = 1
    if small.task.get("type") == "PromptFile" and not small.task.get("path"):
        small.task.path = str(_stand_in_prompts(folder / "prompts.txt"))
    small.model = tiny_model_cfg(small, folder / "model")
    return small


def _stand_in_prompts(path: Path) -> Path:
    """A prompt file for a recipe whose ``task.path`` is not set yet: ShapeWorld's prompts."""
    from .tasks.shapeworld import ShapeWorld

    prompts = ShapeWorld().sample_prompts(60, generator=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p.text}\n" for p in prompts))
    return path


def dry_run_train(cfg) -> dict:
    """Two training steps, a checkpoint loaded back, an evaluation; returns what it measured."""
    from .evaluation import evaluate_recipe
    from .models.checkpoint import latest_checkpoint, load_policy
    from .runner import train

    with tempfile.TemporaryDirectory(prefix="unigrpo-dry-run-") as tmp:
        small = shrunk(cfg, Path(tmp))
        work_dir = Path(tmp) / "run"
        trainer = train(small, work_dir, quiet=True)
        last = json.loads((work_dir / "metrics.jsonl").read_text().splitlines()[-1])
        folder = latest_checkpoint(work_dir)
        policy = load_policy(folder, device=small.model.get("device"))
        scores = evaluate_recipe(small, policy)
        return {
            "steps": trainer.step,
            "reward/mean": last["reward/mean"],
            "checkpoint": f"{folder.name} ({type(policy).__name__}, loaded back)",
            "eval": scores,
        }


def dry_run_policy(cfg, folder: Path):
    """A tiny random policy of the recipe's model class (for ``eval`` and ``sample``)."""
    from .runner import build_policy

    small = shrunk(cfg, Path(folder))
    return small, build_policy(small.model)
