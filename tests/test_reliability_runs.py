"""Issue 14 (reliability) on the tiny model: no pickle on any load path, checkpoint integrity
and fallback, metrics that stay valid JSON, kills and a full disk during saves, SIGINT and
SIGTERM, --resume with changed options, and work dirs that are not kit runs.

Every resumed run is compared with an uninterrupted one: the same metrics (times aside) and
bit-identical final weights."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY_RUN
from safetensors.torch import load_file
from typer.testing import CliRunner

from unigrpo_kit import runner
from unigrpo_kit.cli import app
from unigrpo_kit.models import checkpoint as ckpt
from unigrpo_kit.models.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_policy,
    verify_checkpoint,
)

REPO = Path(__file__).resolve().parent.parent
MULTIROUND = str(REPO / "recipes" / "unified_multiround.py")
CLI_TINY = [*TINY_RUN, "schedule.sample_every=0"]


# ----------------------------------------------------------------------------- helpers
def varying_reward() -> dict:
    """A reward that differs within a group even for a random model (so updates are not 0)."""
    return {"reward": dict(type="JpegCompressibility", _delete_=True)}


@pytest.fixture(scope="module")
def cfg(small_cfg):
    """``cfg(steps, **overrides)``: the multi-round recipe on the tiny model."""

    def make(steps: int = 3, **overrides):
        options = {"schedule.steps": steps, **varying_reward(), **overrides}
        return small_cfg("unified_multiround", **options)

    return make


def read_metrics(work_dir: Path) -> list[dict]:
    def strict(constant):
        raise ValueError(f"metrics.jsonl holds {constant}, which is not JSON")

    text = (work_dir / "metrics.jsonl").read_text()
    return [json.loads(line, parse_constant=strict) for line in text.splitlines()]


def without_time(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


def final_weights(work_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(runner.latest_checkpoint(work_dir) / "model.safetensors"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def folders(work_dir: Path) -> list[str]:
    return sorted(p.name for p in (work_dir / "checkpoints").iterdir())


def one_line(text: str, *needles: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def straight(cfg, tmp_path_factory):
    """An uninterrupted 3-step run: its work dir, metrics (no times) and final weights."""
    work_dir = tmp_path_factory.mktemp("straight") / "run"
    runner.train(cfg(3), work_dir, quiet=True)
    lines = read_metrics(work_dir)
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert lines[0]["reward/std"] > 0
    return work_dir, without_time(lines), final_weights(work_dir)


@pytest.fixture(scope="module")
def two_steps(cfg, tmp_path_factory):
    """The same 3-step run stopped (KeyboardInterrupt) after its 2nd step: checkpoints 1, 2."""
    work_dir = tmp_path_factory.mktemp("two") / "run"
    original = runner.UniGRPOTrainer.train_step

    def stop_after_two(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.UniGRPOTrainer, "train_step", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            runner.train(cfg(3), work_dir, quiet=True)
    assert folders(work_dir) == ["latest", "step_000001", "step_000002"]
    return work_dir


def assert_same_run(work_dir: Path, straight) -> None:
    _, lines, weights = straight
    assert without_time(read_metrics(work_dir)) == lines
    final = final_weights(work_dir)
    assert final.keys() == weights.keys()
    for key in weights:
        assert torch.equal(final[key], weights[key]), key
    leftovers = [p.name for p in (work_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers


def make_legacy(folder: Path, state: dict) -> None:
    """Turn a checkpoint into one of an older kit: a pickled trainer_state.pt, no checksums."""
    for name in (runner.STATE_TENSORS, runner.STATE_JSON, ckpt.CHECKSUMS_FILE):
        (folder / name).unlink()
    torch.save(state, folder / runner.LEGACY_STATE)


class Payload:
    """A pickle that writes a file when unpickled by anything that runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


# ----------------------------------------------------------------------------- 1. no pickle
def test_the_trainer_state_is_safetensors_and_json(straight):
    folder = runner.latest_checkpoint(straight[0])
    names = sorted(p.name for p in folder.iterdir())
    assert runner.STATE_TENSORS in names and runner.STATE_JSON in names
    assert not [n for n in names if n.endswith((".pt", ".pkl", ".bin"))]
    state = runner.read_trainer_state(folder)
    assert state["step"] == 3 and state["torch_rng"].dtype == torch.uint8
    assert all(isinstance(k, int) for k in state["optimizer"]["state"])  # param ids stay ints


def test_a_planted_pickle_is_refused_in_one_line_and_never_runs(two_steps, cfg, tmp_path):
    work_dir = copy_run(two_steps, tmp_path / "run")
    marker = tmp_path / "PWNED"
    folder = work_dir / "checkpoints" / "step_000002"
    make_legacy(folder, {"step": Payload(marker)})
    with pytest.raises(UnsafeCheckpointError) as caught:
        runner.train(cfg(3), work_dir, resume=True, quiet=True)
    one_line(str(caught.value), "trainer_state.pt", "refused", "could run code")
    assert not marker.exists()
    assert (folder / "trainer_state.pt").exists()  # refused, not "fallen back" from silently

    args = ["train", MULTIROUND, "--work-dir", str(work_dir), "--resume", "--quiet"]
    args += [
        w
        for o in CLI_TINY + [f"model.checkpoint={cfg(3).model.checkpoint}"]
        for w in ("--cfg-options", o)
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    one_line(result.output, "error:", "trainer_state.pt", "could run code")
    assert not marker.exists()


@pytest.mark.parametrize("tool", ["pretrain", "world_report"])
def test_the_tools_refuse_a_planted_pickle(tool, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{tool}_tool", REPO / "tools" / f"{tool}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    marker = tmp_path / "PWNED"
    state = tmp_path / "snapshots" / "state.pt"
    state.parent.mkdir()
    torch.save({"step": 1, "model": Payload(marker)}, state)
    with pytest.raises(SystemExit) as caught:
        if tool == "pretrain":
            module.load_state(state)
        else:
            module.snapshot_curve(state.parent, None, None, num_prompts=1)
    one_line(str(caught.value), "error:", "state.pt", "could run code")
    assert not marker.exists()


def test_an_old_pt_state_still_resumes_exactly(two_steps, cfg, straight, tmp_path):
    work_dir = copy_run(two_steps, tmp_path / "run")
    folder = work_dir / "checkpoints" / "step_000002"
    state = runner.read_trainer_state(folder)
    state.pop("format")
    make_legacy(folder, state)  # what kit versions before this one wrote
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight)


# ----------------------------------------------------------------------------- 2. integrity
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated-weights": lambda f: _truncate(f / "model.safetensors"),
    "truncated-state": lambda f: _truncate(f / runner.STATE_TENSORS),
    "altered-weights": lambda f: _flip_a_byte(f / "model.safetensors"),
    "altered-state-json": lambda f: (f / runner.STATE_JSON).write_text('{"step": 3}'),
    "missing-folder": lambda f: shutil.rmtree(f),
    "missing-checksums": lambda f: (f / ckpt.CHECKSUMS_FILE).unlink(),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(
    damage, straight, cfg, tmp_path, capsys
):
    work_dir = copy_run(straight[0], tmp_path / "run")
    assert folders(work_dir) == ["latest", "step_000002", "step_000003"]
    DAMAGES[damage](work_dir / "checkpoints" / "step_000003")
    capsys.readouterr()
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "resuming from" in line]
    one_line("\n".join(warning), "warning:", "step_000003", "resuming from step_000002")
    assert_same_run(work_dir, straight)
    assert folders(work_dir) == ["latest", "step_000002", "step_000003"]
    verify_checkpoint(work_dir / "checkpoints" / "step_000003")


def test_latest_naming_nothing_resumes_from_the_newest_intact_checkpoint(
    straight, cfg, tmp_path, capsys
):
    work_dir = copy_run(straight[0], tmp_path / "run")
    (work_dir / "checkpoints" / "latest").write_text("step_000009")
    capsys.readouterr()
    trainer = runner.train(cfg(3), work_dir, resume=True, quiet=True)
    one_line(capsys.readouterr().err, "warning:", "step_000009", "resuming from step_000003")
    assert trainer.step == 3
    assert (work_dir / "checkpoints" / "latest").read_text() == "step_000003"
    assert_same_run(work_dir, straight)


def test_no_intact_checkpoint_over_metrics_is_refused_and_changes_nothing(straight, cfg, tmp_path):
    work_dir = copy_run(straight[0], tmp_path / "run")
    for name in ("step_000002", "step_000003"):
        _truncate(work_dir / "checkpoints" / name / "model.safetensors")
    before = snapshot(work_dir)
    with pytest.raises(CheckpointError) as caught:
        runner.train(cfg(3), work_dir, resume=True, quiet=True)
    one_line(str(caught.value), "refusing to restart from scratch", "metrics.jsonl")
    assert snapshot(work_dir) == before

    shutil.rmtree(work_dir / "checkpoints")  # metrics without any checkpoint: refused too
    with pytest.raises(CheckpointError, match="no checkpoint"):
        runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert (work_dir / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]


def test_a_damaged_checkpoint_never_displaces_an_intact_one_when_pruning(straight, cfg, tmp_path):
    """Resumed from step 2 past a damaged step 3, the next save (step 4, save_every=2) keeps
    step 2, the newest intact older checkpoint, and removes the damaged step 3."""
    work_dir = copy_run(straight[0], tmp_path / "run")
    _truncate(work_dir / "checkpoints" / "step_000003" / "model.safetensors")
    runner.train(cfg(5, **{"schedule.save_every": 4}), work_dir, resume=True, quiet=True)
    assert folders(work_dir) == ["latest", "step_000004", "step_000005"]
    work_dir = copy_run(straight[0], tmp_path / "again")
    _truncate(work_dir / "checkpoints" / "step_000003" / "model.safetensors")
    with pytest.MonkeyPatch.context() as patch:  # stop right after the step-4 save
        original = runner.save_checkpoint

        def save_then_stop(trainer, *args):
            folder = original(trainer, *args)
            if trainer.step == 4:
                raise KeyboardInterrupt
            return folder

        patch.setattr(runner, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            runner.train(cfg(5, **{"schedule.save_every": 2}), work_dir, resume=True, quiet=True)
    assert folders(work_dir) == ["latest", "step_000002", "step_000004"]
    verify_checkpoint(work_dir / "checkpoints" / "step_000002")


def test_load_policy_and_eval_verify_a_run_checkpoint(straight, tmp_path):
    folder = shutil.copytree(runner.latest_checkpoint(straight[0]), tmp_path / "step_000003")
    load_policy(folder)  # intact
    _flip_a_byte(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors was altered"):
        load_policy(folder)
    args = ["eval", MULTIROUND, "--checkpoint", str(folder), "--num-prompts", "1"]
    result = CliRunner().invoke(app, [*args, "--cfg-options", "threads=1"])
    assert result.exit_code == 2, result.output
    one_line(result.output, "error:", "model.safetensors", "altered")


def test_leftover_temporary_folders_are_removed_at_the_next_start(two_steps, cfg, tmp_path):
    work_dir = copy_run(two_steps, tmp_path / "run")
    checkpoints = work_dir / "checkpoints"
    dead = checkpoints / ".step_000003.tmp-999999999"  # a pid that cannot be alive
    mine = checkpoints / f".step_000002.old-{os.getpid()}"
    for leftover in (dead, mine):
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"half")
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert not dead.exists() and not mine.exists()


# ----------------------------------------------------------------------------- 3. metrics
def test_a_torn_last_metrics_line_is_cut_with_a_note(two_steps, cfg, straight, tmp_path, capsys):
    work_dir = copy_run(two_steps, tmp_path / "run")
    with open(work_dir / "metrics.jsonl", "a") as log:
        log.write('{"step": 5, "rew')
    capsys.readouterr()
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    one_line(capsys.readouterr().err, "metrics.jsonl", "cut back to step 2", "torn")
    assert_same_run(work_dir, straight)


def test_non_finite_metrics_are_written_as_null(cfg, tmp_path, monkeypatch):
    line = runner.metrics_line({"step": 1, "a": math.nan, "b": math.inf, "c": -math.inf, "d": 2.5})
    assert json.loads(line) == {"step": 1, "a": None, "b": None, "c": None, "d": 2.5}
    original = runner.UniGRPOTrainer.train_step

    def nan_loss(self):
        result = original(self)
        result.metrics["loss/text"] = math.nan
        return result

    monkeypatch.setattr(runner.UniGRPOTrainer, "train_step", nan_loss)
    runner.train(cfg(2), tmp_path / "run", quiet=True)
    assert [line["loss/text"] for line in read_metrics(tmp_path / "run")] == [None, None]


# ----------------------------------------------------------------------------- kills, ENOSPC
class KillSwitch:
    """Patches the functions a checkpoint save writes through; during the save of step 3 the
    ``kill_at``-th call raises KeyboardInterrupt before it runs (``None``: only count)."""

    def __init__(self, patch: pytest.MonkeyPatch, kill_at: int | None):
        self.kill_at, self.calls, self.active = kill_at, [], False
        targets = [
            (ckpt, "save_file"),  # model.safetensors
            (runner, "save_file"),  # trainer_state.safetensors
            (Path, "write_text"),  # config, tokenizer, policy, state json, checksums, latest
            (os, "fsync"),
            (os, "replace"),
            (shutil, "rmtree"),
        ]
        for owner, name in targets:
            patch.setattr(owner, name, self.wrap(getattr(owner, name), name))
        original = runner.save_checkpoint

        def save(trainer, *args):
            self.active = trainer.step == 3
            try:
                return original(trainer, *args)
            finally:
                self.active = False

        patch.setattr(runner, "save_checkpoint", save)

    def wrap(self, function, name):
        def wrapped(*args, **kwargs):
            if self.active:
                self.calls.append(name)
                if len(self.calls) == self.kill_at:
                    raise KeyboardInterrupt(f"killed before {name} (call {len(self.calls)})")
            return function(*args, **kwargs)

        return wrapped


@pytest.fixture(scope="module")
def save_calls(two_steps, cfg, tmp_path_factory) -> list[str]:
    """The calls of one save (step 3's), counted on a resumed run."""
    work_dir = copy_run(two_steps, tmp_path_factory.mktemp("count") / "run")
    with pytest.MonkeyPatch.context() as patch:
        switch = KillSwitch(patch, None)
        runner.train(cfg(3), work_dir, resume=True, quiet=True)
    return switch.calls


KILL_POINTS = range(1, 21)  # a TinyUnified save makes 19 calls; 20: after the last


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_kill_at_any_point_of_a_save_keeps_the_previous_checkpoint(
    kill_at, save_calls, two_steps, cfg, straight, tmp_path
):
    assert len(save_calls) >= 15 and save_calls.count("write_text") >= 6, save_calls
    if kill_at > len(save_calls) + 1:
        pytest.skip(f"a save makes {len(save_calls)} calls")
    work_dir = copy_run(two_steps, tmp_path / "run")
    with pytest.MonkeyPatch.context() as patch:
        KillSwitch(patch, kill_at)
        if kill_at <= len(save_calls):
            with pytest.raises(KeyboardInterrupt):
                runner.train(cfg(3), work_dir, resume=True, quiet=True)
        else:  # after the last call: the save completed
            runner.train(cfg(3), work_dir, resume=True, quiet=True)
    verify_checkpoint(work_dir / "checkpoints" / "step_000002")
    newest = runner.find_resume_point(work_dir)
    assert newest.folder is not None and not newest.damaged, newest.damaged
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_a_save_ends_in_one_line_and_keeps_the_last_checkpoint(
    two_steps, cfg, straight, tmp_path, monkeypatch
):
    work_dir = copy_run(two_steps, tmp_path / "run")
    monkeypatch.setattr(runner, "save_file", _enospc)  # trainer_state.safetensors
    with pytest.raises(runner.RunStorageError) as caught:
        runner.train(cfg(3), work_dir, resume=True, quiet=True)
    one_line(str(caught.value), "step_000003", "No space left", "nothing older was lost")
    assert folders(work_dir) == ["latest", "step_000001", "step_000002"]
    verify_checkpoint(work_dir / "checkpoints" / "step_000002")

    args = ["train", MULTIROUND, "--work-dir", str(work_dir), "--resume", "--quiet"]
    options = [*CLI_TINY, f"model.checkpoint={cfg(3).model.checkpoint}", "schedule.steps=3"]
    result = CliRunner().invoke(app, args + [w for o in options for w in ("--cfg-options", o)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    one_line("\n".join(errors), "step_000003", "No space left", "nothing older was lost")
    monkeypatch.undo()
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight)


def test_a_full_disk_during_the_metrics_append_ends_in_one_line(
    two_steps, cfg, straight, tmp_path, monkeypatch
):
    work_dir = copy_run(two_steps, tmp_path / "run")

    def half_then_full(fd, data):
        if len(data) > 20:
            return os.write(fd, data[: len(data) // 2])  # a torn line on disk
        _enospc()

    monkeypatch.setattr(runner, "_write_bytes", half_then_full)
    with pytest.raises(runner.RunStorageError) as caught:
        runner.train(cfg(3), work_dir, resume=True, quiet=True)
    one_line(str(caught.value), "metrics.jsonl", "No space left", "nothing older was lost")
    assert '"step": 3' in (work_dir / "metrics.jsonl").read_text()  # torn, half written
    monkeypatch.undo()
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight)


# ----------------------------------------------------------------------------- 5. signals
def _signal_at_step(monkeypatch, signum: int, step: int) -> None:
    original = runner.UniGRPOTrainer.train_step

    def signalled(self):
        if self.step == step - 1:
            os.kill(os.getpid(), signum)  # arrives mid-step: the step must still finish
        return original(self)

    monkeypatch.setattr(runner.UniGRPOTrainer, "train_step", signalled)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_saves_that_step_and_resumes_exactly(
    signum, cfg, straight, tmp_path, monkeypatch
):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    work_dir = tmp_path / "run"
    _signal_at_step(monkeypatch, signum, 2)
    rare_saves = cfg(3, **{"schedule.save_every": 10})  # no periodic save at step 2
    with pytest.raises(runner.RunInterrupted) as caught:
        runner.train(rare_saves, work_dir, quiet=True)
    assert caught.value.step == 2 and caught.value.signal_name == signal.Signals(signum).name
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored
    assert folders(work_dir) == ["latest", "step_000002"]
    assert [line["step"] for line in read_metrics(work_dir)] == [1, 2]
    monkeypatch.undo()
    runner.train(rare_saves, work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight)


def test_the_cli_prints_how_to_resume_after_a_signal(tiny_checkpoint, tmp_path, monkeypatch):
    _signal_at_step(monkeypatch, signal.SIGTERM, 1)
    work_dir = tmp_path / "run"
    options = [*CLI_TINY, f"model.checkpoint={tiny_checkpoint}", "schedule.steps=2"]
    args = ["train", MULTIROUND, "--work-dir", str(work_dir), "--quiet"]
    result = CliRunner().invoke(app, args + [w for o in options for w in ("--cfg-options", o)])
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    line = one_line(result.output, "interrupted at step 1; resume with: unigrpo-kit train")
    assert f"--resume --work-dir {work_dir}" in line and "schedule.steps=2" in line
    assert (work_dir / "checkpoints" / "step_000001").is_dir()


def test_a_second_sigint_stops_at_once_and_keeps_the_last_checkpoint(
    cfg, straight, tmp_path, monkeypatch
):
    work_dir = tmp_path / "run"
    _signal_at_step(monkeypatch, signal.SIGINT, 2)
    original = runner.write_trainer_state

    def second_sigint_mid_save(state, folder):
        if state["step"] == 2:  # the save of the step the first SIGINT arrived in
            os.kill(os.getpid(), signal.SIGINT)
        return original(state, folder)

    monkeypatch.setattr(runner, "write_trainer_state", second_sigint_mid_save)
    with pytest.raises(KeyboardInterrupt) as caught:
        runner.train(cfg(3), work_dir, quiet=True)
    assert type(caught.value) is KeyboardInterrupt  # not a RunInterrupted: no save finished
    assert [line["step"] for line in read_metrics(work_dir)] == [1, 2]  # step 2 did finish
    assert folders(work_dir) == ["latest", "step_000001"]  # step 1 was saved before both
    monkeypatch.undo()
    verify_checkpoint(work_dir / "checkpoints" / "step_000001")
    runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert_same_run(work_dir, straight)


def test_training_outside_the_main_thread_installs_no_handlers(cfg, tmp_path):
    errors = []

    def train():
        try:
            runner.train(cfg(1), tmp_path / "run", quiet=True)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert not errors, errors


# ----------------------------------------------------------------------------- 4. options, dirs
def test_resume_with_a_changed_lr_applies_it_and_says_so(two_steps, cfg, tmp_path, capsys):
    work_dir = copy_run(two_steps, tmp_path / "run")
    capsys.readouterr()
    trainer = runner.train(cfg(3), work_dir, resume=True, quiet=True)
    assert "differ" not in capsys.readouterr().err  # same options: nothing to report
    work_dir = copy_run(two_steps, tmp_path / "changed")
    trainer = runner.train(cfg(3, **{"optimizer.lr_text": 0.01}), work_dir, resume=True, quiet=True)
    one_line(capsys.readouterr().err, "warning:", "optimizer.lr_text 0.0003 -> 0.01", "step 3")
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    warm = min(1.0, 3 / trainer.cfg.optimizer.warmup_steps)  # step 3 of the recipe's warm-up
    assert lrs == pytest.approx({"text": 0.01 * warm, "image": 1e-05 * warm})
    state = runner.read_trainer_state(work_dir / "checkpoints" / "step_000003")
    saved = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert saved == pytest.approx([0.01 * warm, 1e-05 * warm])
    assert "lr_text=0.01" in (work_dir / "config.py").read_text()


@pytest.mark.parametrize(
    "entries",
    [{"config.py": "import os\nepochs = 10\n"}, {"notes.txt": "mine"}, {"data": None}],
    ids=["foreign-config", "other-files", "other-folder"],
)
def test_a_work_dir_that_is_not_a_kit_run_is_refused(entries, cfg, tmp_path):
    work_dir = tmp_path / "mine"
    work_dir.mkdir()
    for name, text in entries.items():
        (work_dir / name).mkdir() if text is None else (work_dir / name).write_text(text)
    before = snapshot(work_dir)
    for resume in (False, True):
        with pytest.raises(FileExistsError) as caught:
            runner.train(cfg(1), work_dir, resume=resume, quiet=True)
        one_line(str(caught.value), str(work_dir), "not a kit", "nothing was overwritten")
    assert snapshot(work_dir) == before
    assert sorted(p.name for p in work_dir.iterdir()) == sorted(entries)


def test_a_sweep_run_dir_and_an_empty_dir_are_not_foreign(tmp_path):
    sweep = tmp_path / "sweep-run"
    sweep.mkdir()
    for name in ("run.json", "worker.log", ".lock"):
        (sweep / name).write_text("{}")
    assert runner.check_work_dir(sweep, resume=True) is False
    (tmp_path / "empty").mkdir()
    assert runner.check_work_dir(tmp_path / "empty", resume=False) is False


def test_resume_that_unfreezes_a_part_is_refused_in_one_line(cfg, tmp_path):
    work_dir = tmp_path / "run"
    runner.train(cfg(1, **{"optimizer.lr_image": 0.0}), work_dir, quiet=True)
    with pytest.raises(ValueError) as caught:
        runner.train(cfg(2), work_dir, resume=True, quiet=True)
    one_line(str(caught.value), "step_000001", "['text']", "['text', 'image']", "frozen (0)")
    assert [line["step"] for line in read_metrics(work_dir)] == [1]
