"""plots.py and ``unigrpo-kit plot``: a run's panels from metrics.jsonl, seeds grouped into a mean
curve with a min-max band, and the command's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import assert_user_error
from PIL import Image
from typer.testing import CliRunner

from unigrpo_kit import plots
from unigrpo_kit.cli import app

runner = CliRunner()


def fake_run(folder: Path, rewards: list[float], seed: int = 0, lr: float = 1e-4) -> Path:
    """A run folder: a config.py the runner could have dumped and one metrics line per reward."""
    folder.mkdir(parents=True)
    (folder / "config.py").write_text(
        f"recipe_name = 'fake'\nmodel = dict(checkpoint='tiny-base')\nrollout = dict()\n"
        f"schedule = dict(steps={len(rewards)})\noptimizer = dict(lr_text={lr})\nseed = {seed}\n"
    )
    lines = []
    for step, reward in enumerate(rewards, 1):
        record = {
            "step": step,
            "reward/mean": reward,
            "reward/std": 0.1,
            "judge/strict": reward / 2,
            "loss/text": -0.01 * step,
            "loss/image": 0.0,
            "text/clip_frac": 0.02,
            "text/approx_kl": 0.001,
            "grad_norm": 3.0,
            "time/step_s": 0.5,
        }
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 9, "rew')  # torn
    return folder


def test_panels_select_their_keys():
    keys = ["step", "reward/mean", "judge/strict", "quality", "loss/text", "text/clip_frac"]
    keys += ["image/clip_frac", "reg/TokenKL", "grad_norm", "time/step_s", "ratio/self_check"]
    by_name = {panel.name: panel.select(keys) for panel in plots.PANELS}
    assert by_name["reward_components"] == ["judge/strict", "quality"]
    assert by_name["clip_frac"] == ["text/clip_frac", "image/clip_frac"]
    assert by_name["regularizers"] == ["reg/TokenKL"]
    assert by_name["kl"] == []


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    run = fake_run(tmp_path / "run", [0.1, 0.2, 0.3])
    assert [r["step"] for r in plots.read_metrics(run)] == [1, 2, 3]


def test_smooth_is_debiased():
    assert plots.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert plots.smooth([0.0, 1.0], weight=0.5)[1] == pytest.approx(0.5 / 0.75)


def test_plot_run_writes_the_overview_and_the_reward(tmp_path):
    run = fake_run(tmp_path / "run", [0.1, 0.2, 0.3, 0.25, 0.4, 0.5])
    written = plots.plot_run(run)
    assert [p.name for p in written] == ["overview.png", "reward.png"]
    with Image.open(run / "plots" / "overview.png") as image:
        # reward, components, losses, KL, clip fraction, grad norm, time: 7 panels, 4 rows
        assert image.size == (1200, int(3.4 * 4 * 100))


def test_seeds_of_one_recipe_are_one_group(tmp_path):
    a = fake_run(tmp_path / "a0", [0.0, 0.2], seed=0)
    b = fake_run(tmp_path / "a1", [0.2, 0.4], seed=1)
    c = fake_run(tmp_path / "lr", [0.1, 0.1], seed=0, lr=1e-3)
    groups = plots.group_runs([a, c, b])
    assert [g.runs for g in groups] == [[a, b], [c]]
    assert "seeds 0, 1" in groups[0].label and groups[1].label == "lr"


def test_mean_and_band_over_the_common_steps():
    plt = plots._pyplot()
    figure, axes = plt.subplots()
    plots.draw_mean_band(axes, [([1, 2, 3], [0.0, 1.0, 2.0]), ([1, 2], [2.0, 3.0])], "x")
    line = axes.lines[0]
    assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == [1.0, 2.0]
    band = axes.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 0.0 and band[:, 1].max() == 3.0
    plt.close(figure)


def test_plot_command_overlays_runs(tmp_path):
    a = fake_run(tmp_path / "a", [0.0, 0.2, 0.3])
    b = fake_run(tmp_path / "b", [0.1, 0.1, 0.2], lr=1e-3)
    out = tmp_path / "both.png"
    args = ["plot", str(a), str(b), "--out", str(out), "--metric", "reward/mean"]
    result = runner.invoke(app, [*args, "--metric", "judge/strict"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    with Image.open(out) as image:
        assert image.size == (800, 760)  # two panels


def test_plot_command_errors_are_one_line(tmp_path):
    run = fake_run(tmp_path / "a", [0.0, 0.2])
    out = str(tmp_path / "x.png")
    assert_user_error(runner.invoke(app, ["plot", str(tmp_path), "--out", out]), "metrics.jsonl")
    args = ["plot", str(run), "--out", out, "--metric", "reward/meen"]
    assert_user_error(runner.invoke(app, args), "reward/meen", "reward/mean")
    assert_user_error(runner.invoke(app, ["plot", str(run), "--out", "x.jpg"]), ".png")


def test_a_sweep_folder_expands_to_its_runs_grouped_by_cell(tmp_path):
    sweep = tmp_path / "ablate_x"
    a0 = fake_run(sweep / "lr=1" / "seed0", [0.0, 0.2], seed=0)
    a1 = fake_run(sweep / "lr=1" / "seed1", [0.2, 0.4], seed=1)
    b0 = fake_run(sweep / "lr=2" / "seed0", [0.1, 0.1], seed=0, lr=1e-3)
    (sweep / "untrained_base").mkdir()  # the base row's folder holds no run
    runs = plots.expand_runs([sweep])
    assert runs == [a0, a1, b0]
    labels = [group.label for group in plots.group_runs(runs)]
    assert labels == ["lr=1 (seeds 0, 1: mean, min-max band)", "lr=2/seed0"]
    out = tmp_path / "sweep.png"
    result = runner.invoke(app, ["plot", str(sweep), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
