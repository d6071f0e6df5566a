"""run_report.py: log lines without a terminal, plots at sample steps, TensorBoard's images and
config text; one tiny ``train`` through the CLI checks them together."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import TINY_RUN, options
from mmengine.config import Config
from PIL import Image
from typer.testing import CliRunner

from unigrpo_kit.cli import app
from unigrpo_kit.run_report import RunReport, log_line
from unigrpo_kit.visualize import MARK_COLORS

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


class FakeWriter:
    def __init__(self):
        self.texts, self.images = {}, []

    def add_text(self, tag, text):
        self.texts[tag] = text

    def add_image(self, tag, image, step, dataformats):
        self.images.append((tag, image.shape, step, dataformats))


def metrics(step: int) -> dict:
    return {"step": step, "reward/mean": 0.5, "loss/text": -0.01, "loss/image": 0.002,
            "time/step_s": 1.25}  # fmt: skip


def report(tmp_path, *, terminal: bool, quiet: bool = False, log_every: int = 3):
    cfg = Config(dict(schedule=dict(steps=7, log_every=log_every), seed=0))
    return RunReport(cfg, tmp_path, FakeWriter(), quiet=quiet, terminal=terminal)


def test_log_line_reads_at_a_glance():
    line = log_line(metrics(20), 120, elapsed_s=3725)
    assert (
        line == "step 20/120  reward 0.500  loss text -0.0100 image +0.0020  1.25 s/step  1:02:05"
    )


def test_lines_every_n_steps_without_a_terminal(tmp_path, capsys):
    rep = report(tmp_path, terminal=False)
    for step in range(1, 8):
        rep.logged(metrics(step))
    steps = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert steps == ["1/7", "3/7", "6/7", "7/7"]  # the first, every third, the last


def test_no_lines_on_a_terminal_or_when_quiet(tmp_path, capsys):
    for rep in (report(tmp_path, terminal=True), report(tmp_path, terminal=False, quiet=True)):
        for step in range(1, 8):
            rep.logged(metrics(step))
    assert capsys.readouterr().out == ""


def test_config_goes_to_tensorboard_as_a_code_block(tmp_path):
    rep = report(tmp_path, terminal=True)
    text = rep.writer.texts["config"]
    assert "    schedule = dict(" in text and all(
        line.startswith("    ") for line in text.split("\n")
    )


def test_a_failing_plot_warns_once_and_the_run_goes_on(tmp_path, capsys):
    rep = report(tmp_path, terminal=True)
    rep.logged(metrics(1))
    rep.plot()  # no metrics.jsonl in tmp_path: plotting fails
    rep.logged(metrics(2))
    rep.plot()
    assert capsys.readouterr().err.count("warning: plotting failed") == 1


def test_train_without_a_terminal_logs_plots_and_feeds_tensorboard(tiny_checkpoint, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work_dir = tmp_path / "run"
    args = ["train", str(REPO / "recipes" / "unified_multiround.py"), "--work-dir", str(work_dir)]
    args += options(*TINY_RUN, f"model.checkpoint={tiny_checkpoint}", "schedule.steps=3")
    args += options("schedule.sample_every=2", "schedule.log_every=2", "schedule.save_every=0")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "s/step" in lines[0] and "reward" in lines[0]
    assert {p.name for p in (work_dir / "plots").iterdir()} == {"overview.png", "reward.png"}
    with Image.open(work_dir / "samples" / "step_000002.png") as grid:
        bar = grid.convert("RGB").getpixel((1, 10))  # each row: the judge's pass / fail bar
    assert bar in MARK_COLORS.values()
    events = EventAccumulator(str(work_dir / "tb"), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Images("samples")] == [2, 3]
    assert "config/text_summary" in events.Tags()["tensors"]
