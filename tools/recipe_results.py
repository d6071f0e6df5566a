"""The results table of docs/training.md: every recipe trained with its defaults, scored
against the base model, and the same wall time of further pretraining as a control.

    python tools/recipe_results.py --out work_dirs/results --json docs/assets/recipe_results.json

For each recipe: ``unigrpo-kit train recipes/<name>.py`` (wall time measured around the
command), then ``unigrpo-kit eval`` of the base model and of the final checkpoint with the
recipe's own eval protocol. The control continues pretraining ``tiny-base`` on its own data
(``tools/pretrain.py --init tiny-base``) at the rate where its schedule ended, for as many
minutes as the multi-round recipe's training took, and is scored with that recipe's protocol.
Each finished piece is kept in ``<out>/<name>/result.json``; rerunning skips it (a killed
training run resumes from its checkpoint, and its wall time then counts from the resume).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RECIPES = ("text_grpo", "image_flowgrpo", "unified_single_round", "unified_multiround")
CONTROL_RECIPE = "unified_multiround"


def run(command: list[str]) -> str:
    """Run a command; its stdout (the last line is JSON for ``eval --json``)."""
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def evaluate(recipe: str, checkpoint: str) -> dict:
    out = run(["unigrpo-kit", "eval", f"recipes/{recipe}.py", "--checkpoint", checkpoint, "--json"])
    return json.loads(out.strip().splitlines()[-1])


def reward_curve(work_dir: Path) -> dict:
    rows = [json.loads(line) for line in (work_dir / "metrics.jsonl").open()]
    rewards = [row["reward/mean"] for row in rows]
    first, last = rewards[:10], rewards[-10:]
    return {
        "steps": len(rows),
        "reward_first10": round(sum(first) / len(first), 3),
        "reward_last10": round(sum(last) / len(last), 3),
        "step_s_total": round(sum(row["time/step_s"] for row in rows), 1),
    }


def train_recipe(recipe: str, out: Path) -> dict:
    target = out / recipe / "result.json"
    if target.exists():
        return json.loads(target.read_text())
    work_dir = out / recipe / "run"
    start = time.perf_counter()
    run(["unigrpo-kit", "train", f"recipes/{recipe}.py", "--work-dir", str(work_dir), "--resume",
         "--quiet"])  # fmt: skip
    wall = time.perf_counter() - start
    result = {
        "recipe": recipe,
        "wall_minutes": round(wall / 60, 2),
        "command": f"unigrpo-kit train recipes/{recipe}.py",
        **reward_curve(work_dir),
        "base": evaluate(recipe, "tiny-base"),
        "trained": evaluate(recipe, str(work_dir)),
    }
    target.write_text(json.dumps(result, indent=1))
    return result


def further_pretraining(minutes: float, out: Path) -> dict:
    target = out / "further_pretraining" / "result.json"
    if target.exists():
        return json.loads(target.read_text())
    folder = out / "further_pretraining" / "run"
    command = [sys.executable, "tools/pretrain.py", "--init", "tiny-base", "--constant-lr",
               "--lr", "1e-4", "--warmup", "0", "--minutes", f"{minutes:.2f}", "--steps",
               "1000000", "--eval-every", "0", "--out", str(folder)]  # fmt: skip
    start = time.perf_counter()
    run(command)
    wall = time.perf_counter() - start
    steps = json.loads((folder / "ema" / "config.json").read_text()).get("step")
    result = {
        "recipe": f"further pretraining ({CONTROL_RECIPE} protocol)",
        "wall_minutes": round(wall / 60, 2),
        "pretrain_steps": steps,
        "command": " ".join(command[1:]),
        "trained": evaluate(CONTROL_RECIPE, str(folder / "ema")),
    }
    target.write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    lines = [
        "| run | strict | partial | quality | train reward (first 10 -> last 10 steps) | "
        "wall min |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["trained"]
        if "base" in r:
            b = r["base"]
            lines.append(
                f"| `{r['recipe']}` base | {b['judge/strict']:.3f} | {b['judge/partial']:.3f} | "
                f"{b['quality']:.3f} | | |"
            )
        reward = (
            f"{r['reward_first10']:.3f} -> {r['reward_last10']:.3f}"
            if "reward_first10" in r
            else f"{r.get('pretrain_steps')} pretraining steps"
        )
        lines.append(
            f"| `{r['recipe']}` trained | {t['judge/strict']:.3f} | {t['judge/partial']:.3f} | "
            f"{t['quality']:.3f} | {reward} | {r['wall_minutes']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work_dirs/results"))
    parser.add_argument("--json", type=Path, default=None, help="also write all results here")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--no-control", action="store_true", help="skip further pretraining")
    args = parser.parse_args(argv)
    results = []
    for recipe in args.recipes:
        (args.out / recipe).mkdir(parents=True, exist_ok=True)
        results.append(train_recipe(recipe, args.out))
    if not args.no_control:
        minutes = json.loads((args.out / CONTROL_RECIPE / "result.json").read_text())
        (args.out / "further_pretraining").mkdir(parents=True, exist_ok=True)
        results.append(further_pretraining(minutes["wall_minutes"], args.out))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
