"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow, through their own clients.

TensorBoard is always written (``tb/`` in the work dir). A recipe adds trackers with a list::

    trackers = [
        dict(type="wandb", project="unigrpo", mode="offline"),  # pip install ".[wandb]"
        dict(type="mlflow", tracking_uri="file:./mlruns", experiment="unigrpo"),  # ".[mlflow]"
    ]

Every other key of an entry goes to the client as it is (``wandb.init(**kwargs)``; MLflow's
``experiment`` and ``run_name``). Each tracker gets the resolved recipe (as the run's config
and as a ``config.py`` file), every step's metrics and the sample grids. The clients are
imported only when a recipe names them; a missing one, or an unknown ``type``, is a one-line
error (:class:`TrackerError`) before the first step. A tracker that fails later (a network
error, a full disk) warns once and is dropped: the run goes on. The plain clients rather than
mmengine's visualisation backends: those need ``mmengine`` proper (with OpenCV), and the kit
depends on ``mmengine-lite``.
"""

from __future__ import annotations

from pathlib import Path

# The pip extra that installs each tracker's client.
EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}


def _flat(tree, prefix: str = "") -> dict:
    """``{dotted key: value}`` of a nested recipe, for the trackers' flat parameter tables."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numbers(metrics: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TrackerError(ValueError):
    """A recipe's ``trackers`` entry that cannot be built: an unknown type, a missing client."""


def _import(module: str, tracker: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrackerError(
            f"trackers: type={tracker!r} needs the {module} package: "
            f'pip install "unigrpo-kit[{EXTRAS[tracker]}]" (or pip install {module})'
        ) from None


class WandbTracker:
    """Weights & Biases: ``wandb.init(dir=<work dir>, name=<work dir's name>, **kwargs)``;
    ``mode="offline"`` writes the run under ``<work dir>/wandb`` for ``wandb sync`` later."""

    name = "wandb"

    def __init__(self, work_dir: Path, **kwargs):
        self.wandb = _import("wandb", "wandb")
        kwargs.setdefault("dir", str(work_dir))
        kwargs.setdefault("name", Path(work_dir).resolve().name)
        self.run = self.wandb.init(**kwargs)

    def log_config(self, cfg, text: str) -> None:
        self.run.config.update(_flat(cfg.to_dict()), allow_val_change=True)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.run.log(_numbers(metrics), step=step)

    def log_image(self, tag: str, path: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowTracker:
    """MLflow: a run in ``experiment`` (default ``unigrpo-kit``) at ``tracking_uri`` (default
    MLflow's own, ``./mlruns``); the recipe's scalars as parameters, ``config.py`` and the
    sample grids as artifacts."""

    name = "mlflow"

    def __init__(
        self,
        work_dir: Path,
        tracking_uri: str | None = None,
        experiment: str = "unigrpo-kit",
        run_name: str | None = None,
    ):
        mlflow = _import("mlflow", "mlflow")
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run_name = run_name or Path(work_dir).resolve().name
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_config(self, cfg, text: str) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:500]) for k, v in _flat(cfg.to_dict()).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.client.log_text(self.run_id, text, "config.py")

    def log_metrics(self, metrics: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(k, v, now, step) for k, v in _numbers(metrics).items()]
        self.client.log_batch(self.run_id, metrics=values)

    def log_image(self, tag: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=tag)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"wandb": WandbTracker, "mlflow": MLflowTracker}


def build_trackers(cfg, work_dir: Path) -> list:
    """The trackers the recipe's ``trackers`` list names (none when it has no such key); a
    :class:`TrackerError` names an unknown ``type`` or a client that is not installed."""
    built = []
    for index, entry in enumerate(cfg.get("trackers") or []):
        spec = dict(entry)
        kind = spec.pop("type", None)
        if kind not in TRACKERS:
            raise TrackerError(
                f"trackers[{index}].type {kind!r} is not a tracker; known: "
                f"{', '.join(TRACKERS)} (TensorBoard is always on)"
            )
        try:
            built.append(TRACKERS[kind](Path(work_dir), **spec))
        except TrackerError:
            raise
        except Exception as error:  # the client refused its settings (a URI, a project)
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise TrackerError(
                f"trackers[{index}] ({kind}) could not start: {type(error).__name__}: {first}"
            ) from None
    return built
