"""``unigrpo-kit ablate``: grid parsing, cell names, the shipped grid files, a bad key, and real
sweeps of the tiny random model: one uninterrupted (two good cells and one that fails), and the
same sweep killed with SIGKILL in the middle of a run and resumed, which must end with the same
runs and the same table.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import unigrpo_kit.sweep.command as sweep_command
from unigrpo_kit.sweep.command import ablate
from unigrpo_kit.sweep.plan import (
    MAX_CELL_NAME,
    GridError,
    build_cells,
    build_spec,
    cell_name,
    load_grid_file,
    parse_grid_option,
    parse_seeds,
    plan_sweep,
    split_top_level,
    write_json_atomic,
)
from unigrpo_kit.sweep.report import write_report

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "unified_single_round.py"
SAFE_NAME = re.compile(r"[A-Za-z0-9._,+=-]+")

app = typer.Typer(add_completion=False)
app.command()(ablate)  # what cli.py registers as ``unigrpo-kit ablate``
cli = CliRunner()


# --------------------------------------------------------------------------- grid parsing
@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("1,2", ["1", "2"]),
        ("(0,5),(2,7)", ["(0,5)", "(2,7)"]),
        ("[1,[2,3]],{'a':1,'b':2}", ["[1,[2,3]]", "{'a':1,'b':2}"]),
        ("'a,b',\"c,(d\",e", ["'a,b'", '"c,(d"', "e"]),
        ("FlowSDE", ["FlowSDE"]),
    ],
)
def test_split_top_level_splits_only_at_depth_zero(text: str, items: list[str]) -> None:
    assert split_top_level(text) == items


@pytest.mark.parametrize("text", ["(0,5", "0,5)", "(0,5]", "'open,1"])
def test_split_top_level_rejects_unbalanced_text(text: str) -> None:
    with pytest.raises(GridError, match="unbalanced|unclosed"):
        split_top_level(text)


def test_grid_values_parse_as_python_literals() -> None:
    key, values = parse_grid_option("rollout.x=1, 2.5,1e-4,None,True,FlowSDE,(0,5),[1,2],'x,y'")
    assert key == "rollout.x"
    assert values == [1, 2.5, 1e-4, None, True, "FlowSDE", (0, 5), [1, 2], "x,y"]
    assert [type(v) for v in values] == [int, float, float, type(None), bool, str, tuple, list, str]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("rollout.max_rounds", "is not key=v1,v2"),
        ("=1,2", "is not key=v1,v2"),
        ("rollout.max_rounds=", "empty value"),
        ("rollout.max_rounds=1,,2", "empty value"),
        ("rollout.window.window_range=(0,5", "unclosed"),
    ],
)
def test_bad_grid_syntax_is_a_one_line_error(option: str, message: str) -> None:
    with pytest.raises(GridError, match=re.escape(message)) as error:
        parse_grid_option(option)
    assert "\n" not in str(error.value)


def test_seeds_and_spec_errors() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("0,a", "0,,1", "1,1"):
        with pytest.raises(GridError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(GridError, match="given twice"):
        build_spec(["a.b=1,2", "a.b=3"], None, None)
    with pytest.raises(GridError, match="repeats a value"):
        build_spec(["a.b=1,2,1"], None, None)
    with pytest.raises(GridError, match="nothing to sweep"):
        build_spec([], None, None)
    assert build_spec(["a.b=1"], None, None).seeds == [0]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_grid_file_dict_form_with_seeds_base_overrides_and_cli_keys(tmp_path: Path) -> None:
    grid_file = write(
        tmp_path / "g.py",
        "import math\n"
        "_steps = 2 * 2\n"
        "grid = {'rollout.max_rounds': [1, 2], 'rollout.window.window_range': [(0, 5), (2, 7)]}\n"
        "seeds = [0, 1]\n"
        "base_overrides = {'schedule.steps': _steps}\n",
    )
    spec = build_spec(["algorithm.inner_epochs=1,2"], grid_file, None)
    assert spec.grid == {
        "rollout.max_rounds": [1, 2],
        "rollout.window.window_range": [(0, 5), (2, 7)],
        "algorithm.inner_epochs": [1, 2],
    }
    assert spec.seeds == [0, 1] and spec.base_overrides == {"schedule.steps": 4}
    assert build_spec([], grid_file, "5").seeds == [5]  # --seeds wins over the file
    cells = build_cells(spec)
    assert len(cells) == 8
    # The first key varies slowest; a cell's overrides are exactly its grid values.
    assert cells[0].overrides == {
        "rollout.max_rounds": 1,
        "rollout.window.window_range": (0, 5),
        "algorithm.inner_epochs": 1,
    }
    assert [c.overrides["algorithm.inner_epochs"] for c in cells] == [1, 2] * 4
    assert len({c.name for c in cells}) == 8


def test_grid_file_variants_form_crossed_with_a_grid(tmp_path: Path) -> None:
    grid_file = write(
        tmp_path / "v.py",
        "variants = [\n"
        "    dict(name='none', overrides={'algorithm.regularizers': []}),\n"
        "    dict(name='vmse', overrides={'algorithm.regularizers': [dict(type='VelocityMSE')]}),\n"
        "]\n"
        "grid = {'rollout.max_rounds': [1, 2]}\n",
    )
    cells = build_cells(build_spec([], grid_file, None))
    assert [c.name for c in cells] == [
        "none__rollout.max_rounds=1",
        "none__rollout.max_rounds=2",
        "vmse__rollout.max_rounds=1",
        "vmse__rollout.max_rounds=2",
    ]
    assert cells[2].overrides == {
        "algorithm.regularizers": [{"type": "VelocityMSE"}],
        "rollout.max_rounds": 1,
    }
    only_variants = write(tmp_path / "o.py", "variants = [dict(name='a', overrides={'x.y': 1})]\n")
    assert [c.name for c in build_cells(build_spec([], only_variants, None))] == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grid = {'a.b': [1]}\nseed = [0]\n", "defines seed"),
        ("grid = {'a.b': 1}\n", "non-empty list"),
        ("grid = {'a.b': []}\n", "non-empty list"),
        ("variants = [dict(name='a', x=1)]\n", "dict(name='...', overrides="),
        ("variants = [dict(name='a b', overrides={})]\n", "must match"),
        ("variants = [dict(name='a', overrides={}), dict(name='a', overrides={})]\n", "share"),
        ("seeds = [0]\n", "neither a grid dict nor a variants list"),
        ("grid = {'a.b': [1]}\nseeds = ['0']\n", "list of ints"),
        ("grid = {'a.b': [1]\n", "could not be read"),
        ("grid = {'a.b': [float('inf')]}\n", "not a Python literal"),
    ],
)
def test_bad_grid_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(GridError, match=re.escape(message)) as error:
        build_spec([], write(tmp_path / "bad.py", text), None)
    assert "\n" not in str(error.value)


def test_a_missing_grid_file_names_the_examples_folder(tmp_path: Path) -> None:
    with pytest.raises(GridError, match="recipes/ablations"):
        load_grid_file(tmp_path / "nope.py")


# --------------------------------------------------------------------------- cell names
def test_cell_names_are_readable_stable_and_filesystem_safe() -> None:
    overrides = {"rollout.max_rounds": 2, "algorithm.inner_epochs": 1}
    assert cell_name(overrides) == "rollout.max_rounds=2__algorithm.inner_epochs=1"
    assert cell_name({"rollout.image_sampler.type": "CPS"}) == "rollout.image_sampler.type=CPS"
    assert cell_name({"optimizer.lr_text": 1e-4}) == "optimizer.lr_text=0.0001"
    assert cell_name({"a.b": 1}, "joint") == "joint__a.b=1"
    # Labels that lose information get a hash of the exact value, so they never collide.
    lossy = [(0, 5), [0, 5], "2", 2, "a b", "a_b", {"type": "CPS"}]
    names = [cell_name({"k": value}) for value in lossy]
    assert len(set(names)) == len(names)
    assert names[0].startswith("k=0,5--") and names[3] == "k=2" and names[5] == "k=a_b"
    assert all(SAFE_NAME.fullmatch(name) for name in names)
    assert cell_name({"k": (0, 5)}) == names[0]  # a pure function of the overrides


def test_long_cell_names_are_shortened_with_a_hash() -> None:
    keys = [f"rollout.some_rather_long_key_{i}" for i in range(6)]
    first = cell_name(dict.fromkeys(keys, 1))
    second = cell_name(dict.fromkeys(keys, 2))
    assert len(first) <= MAX_CELL_NAME and len(second) <= MAX_CELL_NAME
    assert first != second and SAFE_NAME.fullmatch(first)


def test_the_default_name_hashes_the_grid_and_overrides_but_not_the_seeds(tmp_path: Path) -> None:
    def name(grid: str, seeds: str, options: list[str]) -> str:
        return plan_sweep(
            RECIPE, build_spec([grid], None, seeds), options, None, tmp_path
        ).root.name

    first = name("rollout.max_rounds=1,2", "0", [])
    assert re.fullmatch(r"ablate_unified_single_round_[0-9a-f]{6}", first)
    assert name("rollout.max_rounds=1,2", "0,1,2", []) == first  # more seeds: same sweep
    assert name("rollout.max_rounds=1,3", "0", []) != first
    assert name("rollout.max_rounds=1,2", "0", ["schedule.steps=5"]) != first


def test_a_run_folder_left_with_other_overrides_is_refused(tmp_path: Path) -> None:
    spec = build_spec(["rollout.max_rounds=1"], None, None)
    run = plan_sweep(RECIPE, spec, [], "x", tmp_path).runs[0]
    assert run.options[-2:] == ("rollout.max_rounds=1", "seed=0")
    run.directory.mkdir(parents=True)
    spec_file = run.directory / "run.json"
    spec_file.write_text(json.dumps({"recipe": str(RECIPE), "options": ["seed=0"]}))
    with pytest.raises(GridError, match="other overrides.*pass --name"):
        plan_sweep(RECIPE, spec, [], "x", tmp_path)
    spec_file.write_text(json.dumps({"recipe": str(RECIPE), "options": list(run.options)}))
    assert plan_sweep(RECIPE, spec, [], "x", tmp_path).runs == [run]


# --------------------------------------------------------------------------- grid files and keys
def shipped_grid_files() -> list[Path]:
    return sorted((REPO / "recipes" / "ablations").glob("*.py"))


@pytest.mark.parametrize("grid_file", shipped_grid_files(), ids=lambda p: p.stem)
def test_shipped_grid_files_plan_against_their_documented_recipe(
    grid_file: Path, tmp_path: Path
) -> None:
    """Each file documents its command; that command's keys all exist, nothing is written."""
    text = grid_file.read_text()
    command = re.search(r"unigrpo-kit ablate (\S+)\s+(?:\\\s*#\s*)?--grid-file (\S+)", text)
    assert command, f"{grid_file.name} has no command comment"
    assert command.group(2) == f"recipes/ablations/{grid_file.name}"
    # how long the sweep takes (measured, or estimated before a first run) is written down
    assert re.search(r"\d+ min(utes)?\b", text), f"{grid_file.name} does not say its cost"
    spec = build_spec([], grid_file, None)
    sweep = plan_sweep(REPO / command.group(1), spec, [], grid_file.stem, tmp_path)
    assert len(spec.seeds) >= 2 and len(sweep.runs) == len(sweep.cells) * len(spec.seeds) >= 4
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "closest"),
    [
        (["--grid", "rollout.num_step=1,2"], "rollout.num_steps"),
        (["--grid", "algorithm.inner_epoch=1,2"], "algorithm.inner_epochs"),
    ],
)
def test_a_bad_grid_key_names_the_closest_keys_and_writes_nothing(
    args: list[str], closest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli.invoke(app, [str(RECIPE), *args, "--seeds", "0,1"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: --grid key")
    assert closest in result.stderr and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_bad_key_in_a_variant_names_the_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid_file = write(tmp_path / "v.py", "variants = [dict(name='x', overrides={'seeed': 1})]\n")
    monkeypatch.chdir(tmp_path)
    result = cli.invoke(app, [str(RECIPE), "--grid-file", str(grid_file)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "variant 'x' key 'seeed'" in result.stderr and "seed" in result.stderr
    assert not (tmp_path / "work_dirs").exists()


# --------------------------------------------------------------------------- real sweeps
# A tolerance no recomputation meets: the run fails at its first step's on-policy self-check
# (a value the recipe validation would refuse up front, such as minibatch_size=0, stops the
# whole sweep before it starts instead).
TOLERANCES = {0: "1e-300", 4: "0.001", 2: "0.01"}  # cell index as the old minibatch sizes


def sweep_options(tiny_checkpoint: Path) -> list[str]:
    """The tiny model: 2 prompts x 2 samples, 4 denoising steps, 6 reasoning tokens, 4 training
    steps each saved, one thread, eval on 7 prompts with 4 steps; JPEG reward, which is non-zero
    and depends on the weights, so the resume check compares real numbers."""
    return [
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.num_steps=4",
        "rollout.window.window_size=2",
        "rollout.window.window_range=(0,4)",
        "rollout.text_sampler.max_new_tokens=6",
        "schedule.steps=4",
        "schedule.save_every=1",
        "schedule.sample_every=0",
        "threads=1",
        "evaluation.num_prompts=7",
        "evaluation.steps=4",
        "reward={'_delete_': True, 'type': 'JpegCompressibility'}",
        f"model.checkpoint={tiny_checkpoint}",
    ]


def sweep_args(tiny_checkpoint: Path, jobs: int) -> list[str]:
    """Three cells x seed 3: the failing one first, then two that train."""
    args = [str(RECIPE), "--grid", GRID, "--seeds", "3"]
    args += ["--jobs", str(jobs), "--quiet"]
    for option in sweep_options(tiny_checkpoint):
        args += ["--cfg-options", option]
    return args


def sweep_root(cwd: Path) -> Path:
    (root,) = (cwd / "work_dirs").iterdir()
    return root


GRID = "algorithm.self_check_tol=" + ",".join(TOLERANCES.values())


def cell(minibatch: int) -> str:
    return f"algorithm.self_check_tol={TOLERANCES[minibatch]}"


def run_dir(root: Path, minibatch: int) -> Path:
    return root / cell(minibatch) / "seed3"


TIME_COLUMNS = ("step_s_mean", "step_s_std", "wall_s_mean", "wall_s_std")


def without_times(csv_text: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in rows]


@pytest.fixture(scope="module")
def finished_sweep(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted sweep, two runs at a time; returns (cwd, CLI result)."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = cli.invoke(app, sweep_args(tiny_checkpoint, jobs=2), env={"COLUMNS": "200"})
    finally:
        os.chdir(previous)
    return cwd, result


def test_a_sweep_records_the_failed_cell_and_finishes_the_others(finished_sweep) -> None:
    cwd, result = finished_sweep
    assert result.exit_code == 1, result.output  # a failed run makes the exit code 1
    assert "1 runs failed, 0 unfinished" in result.stderr
    root = sweep_root(cwd)
    assert root.name.startswith("ablate_unified_single_round_")
    failed = json.loads((run_dir(root, 0) / "result.json").read_text())
    assert failed["status"] == "failed"
    assert re.fullmatch(r"\w+: .+", failed["error"]) and "\n" not in failed["error"]
    for minibatch in (4, 2):
        directory = run_dir(root, minibatch)
        done = json.loads((directory / "result.json").read_text())
        assert done["status"] == "done" and done["steps"] == 4
        rewards = [json.loads(ln)["reward/mean"] for ln in open(directory / "metrics.jsonl")]
        assert done["reward_curve"] == rewards and len(rewards) == 4
        assert done["final_reward"] == pytest.approx(sum(rewards) / 4)  # last 5 of 4 steps
        assert done["final_reward"] != 0
        assert {"judge/strict", "judge/partial", "quality"} <= set(done["eval"])
        config = (directory / "config.py").read_text()
        assert "seed = 3" in config and f"self_check_tol={TOLERANCES[minibatch]}" in config
        assert "threads = 1" in config
    rows = {row["cell"]: row for row in csv.DictReader(open(root / "results.csv"))}
    assert list(rows) == ["untrained_base", *(cell(m) for m in (0, 4, 2))]
    base = json.loads((root / "untrained_base" / "result.json").read_text())
    assert base["status"] == "done" and base["model"] == str(tiny_checkpoint_of(root))
    assert rows["untrained_base"]["strict_mean"] == f"{base['eval']['judge/strict']:.4f}"
    assert rows["untrained_base"]["runs_done"] == "" and rows["untrained_base"]["step_s_mean"] == ""
    assert not list(root.rglob(".lock"))  # finished runs leave no lock files
    assert rows[cell(0)]["runs_failed"] == "1"
    assert rows[cell(0)]["errors"] == f"seed3: {failed['error']}"
    assert rows[cell(2)]["runs_done"] == "1"
    final = json.loads((run_dir(root, 2) / "result.json").read_text())["final_reward"]
    assert rows[cell(2)]["final_reward_mean"] == f"{final:.4f}"
    markdown = (root / "results.md").read_text()
    assert "## Failed runs" in markdown and failed["error"] in markdown
    for png in ("reward_curves.png", "eval_strict.png"):
        assert (root / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = [ln for ln in result.stdout.splitlines() if re.match(r"│\s+\d", ln)]
    assert [[c.strip() for c in ln.split("│")[1:3]] for ln in table] == [
        [TOLERANCES[0], "0 (1 failed)"],  # one short column per swept key, then the seeds done
        [TOLERANCES[4], "1"],
        [TOLERANCES[2], "1"],
    ]


def tiny_checkpoint_of(root: Path) -> str:
    """The model.checkpoint option the sweep's runs were given."""
    options = json.loads((run_dir(root, 2) / "run.json").read_text())["options"]
    return next(o for o in options if o.startswith("model.checkpoint=")).split("=", 1)[1]


def test_the_untrained_row_is_the_recipes_model_evaluated_alone(finished_sweep) -> None:
    from unigrpo_kit.evaluation import evaluate_recipe
    from unigrpo_kit.recipe import load_recipe
    from unigrpo_kit.runner import build_policy

    cwd, result = finished_sweep
    root = sweep_root(cwd)
    base = json.loads((root / "untrained_base" / "result.json").read_text())
    cfg = load_recipe(RECIPE, base["options"])
    assert base["eval"] == evaluate_recipe(cfg, build_policy(cfg.model))
    (line,) = [ln for ln in result.stdout.splitlines() if "untrained" in ln and "│" in ln]
    assert f"{base['eval']['judge/strict']:.3f}" in line
    assert "untrained base" in (root / "results.md").read_text()


def test_the_terminal_table_fits_80_columns_with_spreads(tmp_path: Path) -> None:
    from rich.console import Console

    from unigrpo_kit.sweep.report import CellSummary, terminal_table

    spec = build_spec(["algorithm.self_check_tol=0.001,0.01"], None, "0,1,2")
    sweep = plan_sweep(RECIPE, spec, [], "t", tmp_path)
    spread = {c: (0.4286, 0.1010) for c in ("strict", "partial", "quality", "final_reward")}
    spread.update(step_s=(12.34, 1.2), wall_s=(1234.5, 80.1))
    summaries = [CellSummary(c, [{}] * 3, [], [], spread) for c in sweep.cells]
    console = Console(width=80, record=True)
    console.print(terminal_table(sweep, summaries))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert sum("0.429±0.101" in line for line in lines) == 2  # one unwrapped line per cell


def test_tables_are_a_deterministic_function_of_the_result_files(
    finished_sweep, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, _ = finished_sweep
    root = sweep_root(cwd)
    before = {name: (root / name).read_bytes() for name in ("results.csv", "results.md")}
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.parent.name == "seed3"}
    monkeypatch.chdir(cwd)
    rerun = cli.invoke(app, sweep_args(tiny_checkpoint, jobs=2))  # everything is finished
    assert rerun.exit_code == 1 and "1 runs failed" in rerun.stderr
    assert stamps == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.parent.name == "seed3"}
    spec = build_spec([GRID], None, "3")
    name = root.name.removeprefix("ablate_")
    write_report(plan_sweep(RECIPE, spec, sweep_options(tiny_checkpoint), name, root.parent))
    assert before == {name: (root / name).read_bytes() for name in before}


def test_retry_failed_starts_the_failed_run_again_and_nothing_else(
    finished_sweep, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a stand-in worker (the real one is exercised above): only the failed run starts,
    after its old result.json is gone."""
    shutil.copytree(finished_sweep[0] / "work_dirs", tmp_path / "work_dirs")
    root = sweep_root(tmp_path)
    failed = json.loads((run_dir(root, 0) / "result.json").read_text())
    good = [run_dir(root, 4), run_dir(root, 2)]
    stamps = {p: p.stat().st_mtime_ns for d in good for p in d.rglob("*")}
    table = (root / "results.csv").read_bytes()
    started = []

    class Exited:
        returncode = 0

        def poll(self) -> int:
            return 0

    def stand_in(run, recipe, threads):
        assert not run.result_path.exists()
        started.append(run.label)
        write_json_atomic(run.result_path, failed)
        return Exited()

    monkeypatch.setattr(sweep_command, "start_worker", stand_in)
    monkeypatch.chdir(tmp_path)
    rerun = cli.invoke(app, [*sweep_args(tiny_checkpoint, jobs=2), "--retry-failed"])
    assert rerun.exit_code == 1 and "1 runs failed" in rerun.stderr
    assert started == [f"{cell(0)}/seed3"]
    assert stamps == {p: p.stat().st_mtime_ns for d in good for p in d.rglob("*")}
    assert (root / "results.csv").read_bytes() == table


def test_a_sweep_killed_midway_resumes_to_the_same_runs_and_table(
    finished_sweep, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the whole sweep (parent and workers) while the last run is between checkpoints,
    then rerun the same command: the runs finished by then are untouched, the others resume
    from their checkpoints to exactly the uninterrupted numbers, and the table is the same."""
    command = [sys.executable, "-m", "unigrpo_kit.sweep", *sweep_args(tiny_checkpoint, jobs=2)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(tmp_path / "killed.log", "w")
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while True:  # the last run starts once a first one is finished
        last = next(tmp_path.glob(f"work_dirs/*/{cell(2)}/seed3"), None)
        if last is not None and (last / "checkpoints" / "latest").exists():
            break
        assert process.poll() is None and time.monotonic() < deadline, "sweep ended too early"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    root = sweep_root(tmp_path)
    runs = [run_dir(root, minibatch) for minibatch in (0, 4, 2)]
    finished = [d for d in runs if (d / "result.json").exists()]
    assert finished and last not in finished, "the kill missed the middle of the last run"
    # the files of finished runs stay untouched, but for the .lock the rerun cleans away
    stamps = {p: p.stat().st_mtime_ns for d in finished for p in d.rglob("*") if p.name != ".lock"}
    results = {d: (d / "result.json").read_bytes() for d in finished}
    checkpointed = [d for d in runs if d not in finished and (d / "checkpoints/latest").exists()]

    monkeypatch.chdir(tmp_path)
    rerun = cli.invoke(app, sweep_args(tiny_checkpoint, jobs=2))
    assert rerun.exit_code == 1 and "1 runs failed, 0 unfinished" in rerun.stderr

    assert stamps == {p: p.stat().st_mtime_ns for d in finished for p in d.rglob("*")}
    assert not list(root.rglob(".lock"))
    assert results == {d: (d / "result.json").read_bytes() for d in finished}
    for directory in checkpointed:
        log_lines = (directory / "worker.log").read_text().splitlines()
        headers = [line for line in log_lines if re.match(r"=== .* threads$", line)]
        assert len(headers) == 2 and re.search(r"resuming from step_00000[1-4]", headers[1])
        steps = [json.loads(line)["step"] for line in open(directory / "metrics.jsonl")]
        assert steps == [1, 2, 3, 4]
    reference_root = sweep_root(finished_sweep[0])
    assert root.name == reference_root.name  # the default name depends on the grid, not the run
    for minibatch in (0, 4, 2):
        resumed = json.loads((run_dir(root, minibatch) / "result.json").read_text())
        reference = json.loads((run_dir(reference_root, minibatch) / "result.json").read_text())
        for key in ("status", "error", "reward_curve", "eval", "final_reward"):
            assert resumed.get(key) == reference.get(key), key
    reference_csv = (reference_root / "results.csv").read_text()
    assert without_times((root / "results.csv").read_text()) == without_times(reference_csv)


def test_a_cell_the_recipe_validation_refuses_stops_the_sweep_before_it_starts(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [str(RECIPE), "--grid", "algorithm.minibatch_size=0,4", "--seeds", "3", "--quiet"]
    for option in sweep_options(tiny_checkpoint):
        args += ["--cfg-options", option]
    result = cli.invoke(app, args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "algorithm.minibatch_size=0" in result.stderr
    assert not (tmp_path / "work_dirs").exists()
