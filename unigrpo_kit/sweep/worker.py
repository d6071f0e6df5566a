"""One run of an ablation sweep in its own process: train (resuming), evaluate, write result.json.

``python -m unigrpo_kit.sweep.worker RUN_DIR THREADS``, started by
:mod:`unigrpo_kit.sweep.command` after it wrote ``RUN_DIR/run.json`` (the recipe and the run's
``--cfg-options``).

- Training is ``runner.train(cfg, RUN_DIR, resume=True)``: a run killed midway continues from
  its last checkpoint, exactly (the runner restores weights, optimizer and every RNG state).
- The final checkpoint is then scored by ``evaluation.evaluate`` with the recipe's evaluation
  settings, as ``unigrpo-kit eval`` does.
- ``result.json`` is written atomically at the very end; an exception in training or evaluation
  is recorded there as a one-line error (the traceback goes to worker.log). A worker killed by a
  signal writes nothing, so its run stays unfinished and resumes next time.
- An exclusive lock on ``RUN_DIR/.lock`` keeps two sweeps from training the same run at once,
  and the worker exits when its parent dies, so no orphan trains behind a killed sweep.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from .. import runner
from ..evaluation import evaluate_recipe
from ..models.checkpoint import load_policy
from ..recipe import load_recipe
from .plan import write_json_atomic

FINAL_REWARD_STEPS = 5  # final training reward: mean reward/mean of the last this-many steps


def exit_with_parent(parent_pid: int) -> None:
    """End this process soon after the process that started it is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def evaluate_checkpoint(cfg, folder: Path) -> dict:
    """``unigrpo-kit eval``'s scores of a checkpoint under the recipe's evaluation settings."""
    return evaluate_recipe(cfg, load_policy(folder, device=cfg.model.get("device")))


def train_and_evaluate(spec: dict, run_dir: Path, threads: int) -> dict:
    """The finished run's result: eval scores, training reward curve and times."""
    cfg = load_recipe(spec["recipe"], [*spec["options"], f"threads={threads}"])
    trainer = runner.train(cfg, run_dir, resume=True, quiet=True)
    start = time.perf_counter()
    scores = evaluate_checkpoint(cfg, runner.latest_checkpoint(run_dir))
    eval_s = time.perf_counter() - start
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [m["reward/mean"] for m in metrics]
    step_times = [m["time/step_s"] for m in metrics]
    # a step whose rewards were all invalid logs null: left out of the final reward
    last = [r for r in rewards[-FINAL_REWARD_STEPS:] if r is not None]
    train_s = sum(step_times)  # every step once, however often the run was resumed
    return {
        "status": "done",
        "steps": trainer.step,
        "eval": scores,
        "final_reward": sum(last) / max(len(last), 1),
        "reward_curve": rewards,
        "step_s": train_s / max(len(step_times), 1),
        "train_s": train_s,
        "eval_s": eval_s,
        "wall_s": train_s + eval_s,
    }


def run_threads(options: list[str], default: int) -> int:
    """The run's CPU threads: ``threads=K`` where the sweep sets it, else cpus // jobs."""
    explicit = [option.split("=", 1)[1] for option in options if option.startswith("threads=")]
    return int(explicit[-1]) if explicit else default


def one_line(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    run_dir_arg, threads_arg = argv if argv is not None else sys.argv[1:]
    run_dir = Path(run_dir_arg)
    exit_with_parent(os.getppid())
    result_path = run_dir / "result.json"
    with open(run_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another sweep on this run: wait, then see its result
        if result_path.exists():
            print("already finished by another sweep", flush=True)
            return 0
        spec = json.loads((run_dir / "run.json").read_text())
        threads = run_threads(spec["options"], int(threads_arg))
        torch.set_num_threads(threads)
        previous = runner.latest_checkpoint(run_dir)
        start = "resuming from " + previous.name if previous is not None else "starting"
        print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {start}, {threads} threads", flush=True)
        head = {"cell": spec["cell"], "seed": spec["seed"], "options": spec["options"]}
        try:
            result = {**head, **train_and_evaluate(spec, run_dir, threads)}
        except Exception as error:
            traceback.print_exc()
            result = {**head, "status": "failed", "error": one_line(error)}
        write_json_atomic(result_path, result)
        print(f"=== {result['status']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
