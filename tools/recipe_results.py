"""The results table of docs/training.md: every built-in recipe under the 6-run protocol.

    python tools/recipe_results.py [--recipes unified_multiround ...] [--jobs 1] [--write-docs]

The protocol (issue "Learning that holds"): each recipe trained with its defaults for seeds
0, 1, 2 at 1 and 2 torch threads (float rounding differs between thread counts, so a run at
another thread count, or on another machine, takes another path: six runs sample that spread);
each final checkpoint scored on **300 eval prompts with eval seed 1** (not a training seed);
the base model ``tiny-base`` scored on the same prompts. Reported per recipe: the base, the mean
and sample std over the six runs, the mean gain and the smallest, and seconds per step.

Each recipe's six runs are one resumable ``unigrpo-kit ablate`` sweep
(``work_dirs/ablate_protocol_<recipe>``); rerunning the tool skips finished runs and resumes a
killed one from its checkpoint, and the base scores are kept in ``<out>/<recipe>/base.json``.
``--write-docs`` puts the table into docs/training.md between its ``protocol`` markers and the
numbers into docs/assets/protocol_results.json (recipes not run this time keep their recorded
rows).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
from pathlib import Path

RECIPES = ("unified_multiround", "unified_single_round", "text_grpo", "image_flowgrpo")
SEEDS = (0, 1, 2)
THREADS = (1, 2)
EVAL = ("evaluation.num_prompts=300", "evaluation.seed=1")
DOC = Path("docs/training.md")
BEGIN, END = "<!-- protocol:begin -->", "<!-- protocol:end -->"


def run(command: list[str]) -> str:
    """Run a command; its stdout. Exits with its stderr's tail if it fails."""
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def sweep_folder(recipe: str) -> Path:
    return Path("work_dirs") / f"ablate_protocol_{recipe}"


def train_runs(recipe: str, jobs: int) -> list[dict]:
    """The six runs' ``result.json`` (running or resuming the sweep first)."""
    command = ["unigrpo-kit", "ablate", f"recipes/{recipe}.py", "--grid",
               "threads=" + ",".join(map(str, THREADS)), "--seeds", ",".join(map(str, SEEDS)),
               "--jobs", str(jobs), "--name", f"protocol_{recipe}", "--quiet"]  # fmt: skip
    for option in EVAL:
        command += ["--cfg-options", option]
    run(command)
    runs = []
    for threads in THREADS:
        for seed in SEEDS:
            path = sweep_folder(recipe) / f"threads={threads}" / f"seed{seed}" / "result.json"
            result = json.loads(path.read_text())
            runs.append({"threads": threads, "seed": seed, **result})
    return runs


def base_scores(recipe: str, out: Path) -> dict:
    target = out / recipe / "base.json"
    if target.exists():
        return json.loads(target.read_text())
    command = ["unigrpo-kit", "eval", f"recipes/{recipe}.py", "--checkpoint", "tiny-base",
               "--num-prompts", "300", "--seed", "1", "--json", "--no-baseline"]  # fmt: skip
    scores = json.loads(run(command).strip().splitlines()[-1])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(scores, indent=1))
    return scores


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return mean, math.sqrt(var)


def summarize(recipe: str, base: dict, runs: list[dict]) -> dict:
    key = "judge/strict" if "judge/strict" in base else "reasoning/strict"
    rows = {}
    for metric in (key, key.replace("strict", "partial"), "quality"):
        if metric not in base:
            continue
        values = [r["eval"][metric] for r in runs]
        mean, std = mean_std(values)
        gains = [v - base[metric] for v in values]
        rows[metric] = {"base": base[metric], "mean": round(mean, 4), "std": round(std, 4),
                        "gain": round(mean - base[metric], 4), "min_gain": round(min(gains), 4),
                        "runs": values}  # fmt: skip
    two = [r for r in runs if r["threads"] == 2]
    minutes = [(r["wall_s"] - r.get("eval_s", 0)) / 60 for r in two]
    return {
        "recipe": recipe,
        "metrics": rows,
        "runs": len(runs),
        "step_s_threads2": round(sum(r["step_s"] for r in two) / len(two), 2),
        "train_minutes_threads2": round(sum(minutes) / len(minutes), 1),
    }


def table(summaries: list[dict]) -> str:
    lines = [
        "| recipe | metric | base | trained, mean +- std of 6 | gain | smallest gain |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s in summaries:
        for metric, m in s["metrics"].items():
            lines.append(
                f"| `{s['recipe']}` | {metric} | {m['base']:.4f} | {m['mean']:.4f} +- "
                f"{m['std']:.4f} | {m['gain']:+.4f} | {m['min_gain']:+.4f} |"
            )
    lines.append("")
    lines.append("| recipe | s/step (2 threads) | training minutes (2 threads) |")
    lines.append("|---|---:|---:|")
    for s in summaries:
        lines.append(
            f"| `{s['recipe']}` | {s['step_s_threads2']:.2f} | {s['train_minutes_threads2']:.1f} |"
        )
    return "\n".join(lines)


def merged(summaries: list[dict]) -> list[dict]:
    """These summaries, and the recorded ones (docs/assets/protocol_results.json) of the
    recipes not run this time, in the order of RECIPES: a recipe's six runs need not be
    repeated to write another's."""
    recorded = Path("docs/assets/protocol_results.json")
    by_recipe = {}
    if recorded.exists():
        by_recipe = {s["recipe"]: s for s in json.loads(recorded.read_text())}
    by_recipe.update({s["recipe"]: s for s in summaries})
    order = [r for r in RECIPES if r in by_recipe] + sorted(set(by_recipe) - set(RECIPES))
    return [by_recipe[r] for r in order]


def write_docs(summaries: list[dict]) -> None:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"error: {DOC} has no {BEGIN} ... {END} markers to put the table between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    machine = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    note = f"(Written by `python tools/recipe_results.py --write-docs` on {machine}.)"
    body = f"\n{table(summaries)}\n\n{note}\n"
    DOC.write_text(head + BEGIN + body + END + tail)
    Path("docs/assets/protocol_results.json").write_text(json.dumps(summaries, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work_dirs/protocol"))
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (ablate --jobs)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    summaries = []
    for recipe in args.recipes:
        base = base_scores(recipe, args.out)
        summaries.append(summarize(recipe, base, train_runs(recipe, args.jobs)))
        print(table(summaries), flush=True)
    if args.write_docs:
        write_docs(merged(summaries))


if __name__ == "__main__":
    main()
