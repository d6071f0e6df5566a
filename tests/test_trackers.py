"""trackers.py: Weights & Biases (offline mode) and MLflow (a local file store) get the recipe,
every step's metrics and the sample grids; a bad entry is a one-line error before step 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config
from PIL import Image

from unigrpo_kit.run_report import RunReport
from unigrpo_kit.trackers import TrackerError, build_trackers


class NoWriter:
    def add_text(self, *args):
        pass

    def add_image(self, *args, **kwargs):
        pass


def run_with(trackers: list[dict], work_dir: Path, tmp_path: Path) -> None:
    """Two steps and a sample grid through a RunReport with ``trackers``."""
    cfg = Config(dict(schedule=dict(steps=2), seed=3, optimizer=dict(lr_text=1e-4)))
    cfg.trackers = trackers
    grid = tmp_path / "grid.png"
    Image.new("RGB", (8, 8), "red").save(grid)
    report = RunReport(cfg, work_dir, NoWriter(), quiet=True, terminal=True)
    report.logged({"step": 1, "reward/mean": 0.25, "loss/text": -0.5})
    report.logged({"step": 2, "reward/mean": 0.75, "loss/text": -0.25})
    report.sampled(grid, 2)
    report.finish()


def test_mlflow_gets_params_metrics_and_artifacts(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 deprecates the file store
    uri = f"file:{tmp_path / 'mlruns'}"
    run_with([dict(type="mlflow", tracking_uri=uri, experiment="t")], tmp_path / "run", tmp_path)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    history = client.get_metric_history(run.info.run_id, "reward/mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.75)]
    assert run.data.params["optimizer.lr_text"] == "0.0001" and run.data.params["seed"] == "3"
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.py", "samples"}


def test_wandb_offline_writes_a_run_to_sync_later(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_with([dict(type="wandb", project="t", mode="offline")], tmp_path / "run", tmp_path)
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    records = next(folder.glob("run-*.wandb")).read_bytes()
    assert b"reward/mean" in records and b"optimizer.lr_text" in records
    assert len(list((folder / "files" / "media" / "images").glob("samples_2_*.png"))) == 1


def test_an_unknown_tracker_is_refused_in_one_line(tmp_path):
    cfg = Config(dict(trackers=[dict(type="neptune")]))
    with pytest.raises(TrackerError, match=r"trackers\[0\].type 'neptune'.*wandb, mlflow"):
        build_trackers(cfg, tmp_path)


def test_a_client_that_refuses_its_settings_is_a_tracker_error(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    cfg = Config(dict(trackers=[dict(type="mlflow", tracking_uri="nosuchscheme://x")]))
    with pytest.raises(TrackerError, match=r"trackers\[0\] \(mlflow\) could not start"):
        build_trackers(cfg, tmp_path)


def test_a_recipe_naming_an_unknown_tracker_is_refused_before_anything_is_written(tmp_path):
    from cli_helpers import assert_user_error
    from typer.testing import CliRunner

    from unigrpo_kit.cli import app

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "unified_single_round.py")
    args = ["train", recipe, "--work-dir", str(tmp_path / "run")]
    args += ["--cfg-options", "trackers=[{'type': 'neptune'}]"]
    assert_user_error(CliRunner().invoke(app, args), "trackers", "wandb", "mlflow")
    assert not (tmp_path / "run").exists()
