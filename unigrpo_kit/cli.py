"""The ``unigrpo-kit`` command line: one function per command on a typer app."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unigrpo_kit import __version__
from unigrpo_kit.cli_help import hide_flag_types
from unigrpo_kit.registry import ALL_REGISTRIES, KitRegistry

app = typer.Typer(
    name="unigrpo-kit",
    help="RL post-training (GRPO, Flow-GRPO, UniGRPO) of generators that write and paint.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"unigrpo-kit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """RL post-training (GRPO, Flow-GRPO, UniGRPO) of generators that write and paint."""


def _registry_key(kind: str) -> str:
    """The ``ALL_REGISTRIES`` key for a plural or singular kind (``samplers`` or ``sampler``)."""
    aliases = {key: key for key in ALL_REGISTRIES}
    aliases.update({registry.name: key for key, registry in ALL_REGISTRIES.items()})
    key = aliases.get(kind.lower())
    if key is None:
        # typer.echo, not rich: rich would wrap the line at the terminal width.
        typer.echo(
            f"error: unknown kind {kind!r}; valid kinds: {', '.join(ALL_REGISTRIES)} "
            "(singular works too)",
            err=True,
        )
        raise typer.Exit(code=2)
    return key


def _summary(component: object) -> str:
    """The first sentence of a component's own docstring (not one inherited from a base
    class), in plain words: :func:`unigrpo_kit.docstrings.summary`."""
    from unigrpo_kit.docstrings import summary

    return summary(component)


def _component_table(key: str, registry: KitRegistry, names: list[str]) -> Table:
    """One table titled ``key``: each registered name and its docstring summary."""
    table = Table(title=key, title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("summary")
    for name in names:
        table.add_row(name, _summary(registry.get(name)))
    if not names:
        table.add_row("-", "nothing registered")
    return table


@app.command("list")
def list_components(
    kind: Annotated[
        str | None,
        typer.Argument(
            help=f"Registry to show, plural or singular: {', '.join(ALL_REGISTRIES)}. "
            "All of them when left out.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List the registered components of every registry, or of one."""
    keys = list(ALL_REGISTRIES) if kind is None else [_registry_key(kind)]
    console = Console()
    listed = 0
    for key in keys:
        registry = ALL_REGISTRIES[key]
        try:
            names = registry.known_names()
        except Exception as error:  # a module of the registry failed to import
            reason = (str(error).strip().splitlines() or [""])[0]
            typer.echo(
                f"warning: could not import the {key} registry: {type(error).__name__}: {reason}",
                err=True,
            )
            continue
        console.print(_component_table(key, registry, names))
        listed += 1
    if not listed:
        raise typer.Exit(code=1)


# --------------------------------------------------------------------------- runs
def _fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit: the way every user error leaves the CLI (naming the
    rank in a torchrun launch)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        message = f"rank {os.environ.get('RANK', '?')}: {message}"
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def _user_errors():
    """The exceptions that mean bad input (a recipe, a key, a name, a checkpoint), not a bug;
    safetensors' error is a weights file that is truncated or corrupt."""
    from safetensors import SafetensorError

    from unigrpo_kit.recipe import RecipeError
    from unigrpo_kit.registry import UnknownComponentError

    return (
        RecipeError,
        UnknownComponentError,
        FileNotFoundError,
        FileExistsError,
        ValueError,
        SafetensorError,
    )


def _error_line(error: BaseException, checkpoint: str | None = None) -> str:
    """The one line a user error prints: its first line; a safetensors error says which
    checkpoint's weights could not be read."""
    from safetensors import SafetensorError

    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, SafetensorError):
        where = f"checkpoint {checkpoint}: " if checkpoint else ""
        return (
            f"{where}a .safetensors weights file could not be read ({first}); it is truncated "
            "or corrupt: save or copy the checkpoint again"
        )
    return first


def _recipe(path: Path, options: list[str] | None, ctx: typer.Context | None = None):
    """Load the recipe; key=value words after ``--cfg-options`` count as more overrides, as in
    mmengine's ``--cfg-options a=1 b=2``."""
    from unigrpo_kit.recipe import load_recipe

    options = list(options or [])
    for extra in ctx.args if ctx is not None else []:
        if extra.startswith("-") or "=" not in extra:
            _fail(f"unexpected argument {extra!r}; overrides are key=value after --cfg-options")
        options.append(extra)
    try:
        return load_recipe(path, options)
    except _user_errors() as error:
        _fail(str(error))


def _work_dir(cfg, work_dir: Path | None) -> Path:
    return work_dir if work_dir is not None else Path("work_dirs") / cfg.recipe_name


RecipeArg = Annotated[Path, typer.Argument(help="Recipe file, e.g. recipes/unified_multiround.py")]
CfgOptions = Annotated[
    list[str] | None,
    typer.Option("--cfg-options", help="Override recipe keys: key=value (repeatable)."),
]


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Check the recipe on tiny random models of its own classes (no weights needed): "
        "2 steps, a checkpoint, an eval; nothing is written outside a temporary folder.",
    ),
]


@app.command(context_settings=EXTRA_ARGS)
def train(
    ctx: typer.Context,
    recipe: RecipeArg,
    cfg_options: CfgOptions = None,
    work_dir: Annotated[Path | None, typer.Option(help="Default: work_dirs/<recipe name>.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the work dir's last checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    dry_run: DryRun = False,
    nproc: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes on this machine (torchrun, data parallel: one per GPU, or CPU "
            "processes with gloo). Default: one process, or torchrun's own launch.",
        ),
    ] = None,
) -> None:
    """Train a recipe: metrics, samples and checkpoints go to the work dir.

    Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and prints how to resume
    (a second Ctrl-C stops at once); a full disk ends the run with one line."""
    import shlex
    import signal

    from unigrpo_kit import runner
    from unigrpo_kit.guard import RunStopped

    overrides = [*(cfg_options or []), *ctx.args]  # read before _recipe checks them
    cfg = _recipe(recipe, cfg_options, ctx)
    if dry_run:
        from unigrpo_kit.dry_run import dry_run_train

        try:
            report = dry_run_train(cfg)
        except RunStopped as error:
            _fail(str(error), code=1)
        except _user_errors() as error:
            _fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
        typer.echo(
            f"dry run of {recipe}: {report['steps']} steps (reward {report['reward/mean']:.3f}), "
            f"checkpoint {report['checkpoint']}, eval {_brief(report['eval'])}"
        )
        return
    directory = _work_dir(cfg, work_dir)
    if nproc is not None and nproc > 1:
        from unigrpo_kit.launch import launch

        argv = [str(recipe), "--work-dir", str(directory)]
        argv += ["--resume"] if resume else []
        argv += ["--quiet"] if quiet else []
        for option in overrides:
            argv += ["--cfg-options", option]
        code, message = launch(nproc, argv, directory)
        if code:
            _fail(message, code=code)
        return  # rank 0 said "done"
    try:
        runner.train(cfg, directory, resume=resume, quiet=quiet)
    except runner.RunInterrupted as stop:
        again = ["unigrpo-kit", "train", str(recipe), "--resume"]
        again += ["--work-dir", str(work_dir)] if work_dir is not None else []
        again += ["--cfg-options", *overrides] if overrides else []
        typer.echo(f"interrupted at step {stop.step}; resume with: {shlex.join(again)}", err=True)
        code = 128 + int(getattr(signal, stop.signal_name, signal.SIGINT))  # 130, 143
        raise typer.Exit(code=code) from None
    except (RunStopped, runner.RunStorageError) as error:
        _fail(str(error), code=1)
    except _user_errors() as error:
        _fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"done: {directory}")


def _brief(scores: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in list(scores.items())[:3])


def _load_for_eval(cfg, checkpoint: str | None, work_dir: Path | None, dry_run: bool, tmp):
    """The policy to evaluate: a tiny random one (``--dry-run``), the checkpoint given, else
    the recipe's latest checkpoint, else the recipe's base model; and what it is."""
    from unigrpo_kit.models.checkpoint import load_policy
    from unigrpo_kit.runner import build_policy, find_resume_point, warn

    try:
        if dry_run:
            from unigrpo_kit.dry_run import dry_run_policy

            cfg, policy = dry_run_policy(cfg, Path(tmp))
            return cfg, policy, "a tiny random model (dry run)"
        if checkpoint is None:  # the run's newest intact checkpoint, else the recipe's model
            point = find_resume_point(_work_dir(cfg, work_dir))
            for name, why in point.damaged.items():
                warn(f"checkpoint {name} is damaged ({why}); evaluating an older one")
            if point.folder is None and point.damaged:
                _fail(f"no intact checkpoint in {_work_dir(cfg, work_dir)}; nothing to evaluate")
            checkpoint = None if point.folder is None else str(point.folder)
        if checkpoint is None:
            return cfg, build_policy(cfg.model), "the recipe's model"
        return cfg, load_policy(checkpoint, device=cfg.model.get("device")), checkpoint
    except _user_errors() as error:
        _fail(_error_line(error, checkpoint))


def _check_seed(seed: int | None) -> None:
    """``--seed`` must be a non-negative int (it seeds Python's and torch's generators)."""
    if seed is not None and seed < 0:
        _fail(f"--seed {seed} must be an int >= 0")


def _check_num_prompts(num_prompts: int | None) -> None:
    """``--num-prompts``, when given, must be at least 1 (before anything loads)."""
    if num_prompts is not None and num_prompts < 1:
        _fail(
            f"--num-prompts {num_prompts} must be an int >= 1 (leave it out for the recipe's "
            "evaluation.num_prompts)"
        )


def _eval_prompt_count(cfg, num_prompts: int | None) -> int | None:
    """``--num-prompts`` capped at the task's eval split (a prompt file's) and at
    :data:`~unigrpo_kit.validation.MAX_EVAL_PROMPTS`, with a one-line note on stderr when
    capped; None (the recipe's ``evaluation.num_prompts``, validated) when not given."""
    from unigrpo_kit.registry import TASKS
    from unigrpo_kit.validation import cap_num_prompts, eval_split_size

    if num_prompts is None:
        return None
    split = cfg.evaluation.get("split", "eval")
    count, note = cap_num_prompts(num_prompts, eval_split_size(TASKS.build(cfg.task), split))
    if note:
        typer.echo(f"note: {note}", err=True)
    return count


@app.command("eval", context_settings=EXTRA_ARGS)
def evaluate(
    ctx: typer.Context,
    recipe: RecipeArg,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint folder, run work dir, or shipped name (tiny-base). "
            "Default: the recipe's latest checkpoint, else its base model."
        ),
    ] = None,
    num_prompts: Annotated[
        int | None,
        typer.Option(
            help="Eval prompts, >= 1 (default: recipe); capped at the task's eval split and at "
            "10000."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Eval seed (default: recipe).")] = None,
    cfg_options: CfgOptions = None,
    work_dir: Annotated[Path | None, typer.Option(help="Default: work_dirs/<recipe name>.")] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object last.")
    ] = False,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Also score this model (checkpoint folder or shipped name, e.g. tiny-base) on "
            "the same prompts; print the difference and its standard error. Default: the "
            "recipe's model, when a checkpoint is evaluated."
        ),
    ] = None,
    no_baseline: Annotated[
        bool, typer.Option("--no-baseline", help="Score the checkpoint alone.")
    ] = False,
    dry_run: DryRun = False,
) -> None:
    """Score a checkpoint with the task's evaluation protocol (for ShapeWorld: strict,
    partial, per category, quality), beside its base model's scores."""
    import json
    import tempfile

    import torch

    from unigrpo_kit import baseline as baseline_mod
    from unigrpo_kit.evaluation import evaluate_recipe
    from unigrpo_kit.guard import RunStopped

    _check_num_prompts(num_prompts)
    _check_seed(seed)
    cfg = _recipe(recipe, cfg_options, ctx)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="unigrpo-eval-") as tmp:
        cfg, policy, source = _load_for_eval(cfg, checkpoint, work_dir, dry_run, tmp)
        try:
            count = _eval_prompt_count(cfg, num_prompts)
            if not (no_baseline or dry_run):
                base = baseline_mod.base_policy(cfg, baseline, source, checkpoint or source)
                if base is not None:
                    _eval_with_baseline(cfg, policy, source, base, count, seed, json_output)
                    return
            scores = evaluate_recipe(cfg, policy, num_prompts=count, seed=seed)
        except (*_user_errors(), RunStopped) as error:
            _fail(_error_line(error))
    table = Table(title=f"eval of {source}", title_justify="left")
    table.add_column("metric", style="bold cyan")
    table.add_column("value", justify="right")
    for key, value in scores.items():
        table.add_row(key, f"{value:.4f}")
    Console(stderr=json_output).print(table)
    if json_output:
        typer.echo(json.dumps({"checkpoint": source, **scores}))


def _eval_with_baseline(cfg, policy, source, base, count, seed, json_output) -> None:
    """``eval``'s table and JSON with the base model's scores, the differences and their
    standard errors (:mod:`unigrpo_kit.baseline`)."""
    import json

    from unigrpo_kit import baseline as baseline_mod

    base_policy, base_name = base
    ours = baseline_mod.scored(cfg, policy, num_prompts=count, seed=seed)
    theirs = baseline_mod.scored(cfg, base_policy, num_prompts=count, seed=seed)
    diff = baseline_mod.compare(ours, theirs)
    title = f"eval of {source}\nagainst {base_name} (diff: paired over the same prompts)"
    table = baseline_mod.comparison_table(title, ours, theirs, diff)
    Console(stderr=json_output).print(table)
    if json_output:
        extra = {"baseline": baseline_mod.baseline_json(base_name, theirs, diff)}
        typer.echo(json.dumps({"checkpoint": source, **ours.scores, **extra}))


@app.command(context_settings=EXTRA_ARGS)
def sample(
    ctx: typer.Context,
    recipe: RecipeArg,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
    checkpoint: Annotated[
        str | None,
        typer.Option(help="Checkpoint folder, run work dir, or shipped name (tiny-base)."),
    ] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option("--prompt", help="A prompt (repeatable). Default: eight eval prompts."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the painting noise.")] = 0,
    cfg_options: CfgOptions = None,
    work_dir: Annotated[Path | None, typer.Option(help="Default: work_dirs/<recipe name>.")] = None,
    dry_run: DryRun = False,
) -> None:
    """Paint an image grid (prompt, reasoning, reflections and images) with a checkpoint,
    under the recipe's evaluation protocol."""
    import tempfile
    from types import SimpleNamespace

    import torch

    from unigrpo_kit.registry import TASKS
    from unigrpo_kit.rollout.build import evaluation_engine
    from unigrpo_kit.visualize import episode_grid

    _check_out(out)
    _check_seed(seed)
    texts = _prompt_texts(prompt)
    cfg = _recipe(recipe, cfg_options, ctx)
    with tempfile.TemporaryDirectory(prefix="unigrpo-sample-") as tmp:
        cfg, policy, _ = _load_for_eval(cfg, checkpoint, work_dir, dry_run, tmp)
        try:
            task = TASKS.build(cfg.task)
            if texts:
                prompts = [SimpleNamespace(text=t) for t in _in_vocabulary(texts, policy)]
            else:
                prompts = task.eval_prompts(8, seed=seed)
            engine = evaluation_engine(cfg, policy, task)
            # A CPU generator on every device: the same noise, and so the same grid, on CPU
            # and CUDA.
            batch = engine.rollout(prompts, 1, generator=torch.Generator().manual_seed(seed))
        except _user_errors() as error:
            _fail(_error_line(error))
    try:
        episode_grid(batch, out, max_rows=len(prompts))
    except OSError as error:
        _fail(f"--out {out} could not be written: {error.strerror or error}")
    typer.echo(f"wrote {out}")


def _check_out(out: Path) -> None:
    """``sample --out``: a ``.png`` file (not a folder) in a folder that exists and can be
    written, checked before the model loads."""
    import os

    if out.is_dir():
        _fail(f"--out {out} is a directory; name a .png file, e.g. --out {out / 'grid.png'}")
    if out.suffix.lower() != ".png":
        _fail(f"--out {out} must be a .png file, e.g. --out grid.png")
    parent = out.parent
    if not parent.exists():
        _fail(f"--out {out}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        _fail(f"--out {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"--out {out}: the folder {parent} is not writable; choose another --out")
    if out.exists() and not os.access(out, os.W_OK):
        _fail(f"--out {out} exists and is not writable; choose another --out")


def _prompt_texts(prompts: list[str] | None) -> list[str]:
    """The ``--prompt`` texts, each refused in one line if it has no words."""
    for text in prompts or []:
        if not text.split():
            _fail(f"--prompt {text!r} is empty; give the words of a prompt, e.g. 'a red circle'")
    return list(prompts or [])


def _in_vocabulary(texts: list[str], policy) -> list[str]:
    """The prompts as the policy takes them: a word-level tokenizer's (ShapeWorld's, lower
    case) gets them lower-cased and whitespace-normalized, and refuses words outside its
    vocabulary in one line; a real tokenizer takes the texts as written."""
    tokenizer = getattr(policy, "tokenizer", None)
    vocabulary = getattr(tokenizer, "words", None) or getattr(tokenizer, "stoi", None)
    if vocabulary is None:
        return texts
    texts = [" ".join(text.lower().split()) for text in texts]
    unknown = sorted({w for text in texts for w in text.split()} - set(vocabulary))
    if unknown:
        _fail(
            f"--prompt uses words outside the model's vocabulary: {', '.join(unknown[:5])} "
            "(the word-level tokenizer knows the task's words, e.g. 'a red circle')"
        )
    return texts


def _register_tools() -> None:
    """Commands whose logic lives in their own modules."""
    from unigrpo_kit.bench.command import bench
    from unigrpo_kit.plot_command import plot
    from unigrpo_kit.reward_server import serve_reward_command
    from unigrpo_kit.sweep.command import ablate

    app.command("bench")(bench)
    app.command("ablate")(ablate)
    app.command("plot")(plot)
    app.command("serve-reward")(serve_reward_command)


_register_tools()
hide_flag_types()


if __name__ == "__main__":  # python -m unigrpo_kit.cli, where the kit is not pip-installed
    app(prog_name="unigrpo-kit")
