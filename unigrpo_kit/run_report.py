"""What a training run shows besides its metrics file: log lines, plots, TensorBoard extras.

:class:`RunReport` is called by the runner's loop at three points (:meth:`~RunReport.logged`
after every step's metrics are written, :meth:`~RunReport.sampled` after a sample grid is
written, :meth:`~RunReport.finish` at the end); it

- prints one compact line every ``schedule.log_every`` steps (default
  :data:`DEFAULT_LOG_EVERY`, and always the first and the last step) when the output is not a
  terminal, where a progress bar would leave only its last state in a log file (CI, ``nohup``,
  ``| tee``); on a terminal the progress bar is enough;
- redraws ``plots/`` (:func:`~unigrpo_kit.plots.plot_run`) at every sample step and at the end;
- gives TensorBoard the resolved recipe as text and every sample grid as an image;
- forwards the same to the optional trackers the recipe names (:mod:`unigrpo_kit.trackers`).

A plot or a tracker that fails warns once and is left out from then on: a picture must never
stop a run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_LOG_EVERY = 10


def log_line(metrics: dict, total_steps: int, elapsed_s: float) -> str:
    """``step 20/120  reward 0.312  loss text -0.0012 image +0.0003  1.84 s/step  0:00:36``:
    the step, the mean reward, the two losses, the last step's seconds and the time since the
    run (or the resume) started."""
    minutes, seconds = divmod(int(elapsed_s), 60)
    hours, minutes = divmod(minutes, 60)
    nan = float("nan")
    return (
        f"step {metrics['step']}/{total_steps}  reward {metrics.get('reward/mean', nan):.3f}"
        f"  loss text {metrics.get('loss/text', 0.0):+.4f}"
        f" image {metrics.get('loss/image', 0.0):+.4f}"
        f"  {metrics.get('time/step_s', nan):.2f} s/step  {hours}:{minutes:02d}:{seconds:02d}"
    )


def output_is_terminal() -> bool:
    """Whether the progress bar can redraw in place (rich's own test: FORCE_TERMINAL counts)."""
    from rich.console import Console

    return Console().is_terminal


class RunReport:
    """The run's readable outputs beside ``metrics.jsonl`` (see the module docstring).

    ``writer``: the run's TensorBoard ``SummaryWriter`` (scalars are the runner's); ``quiet``:
    no log lines; ``terminal``: whether stdout is a terminal (default: asked of rich)."""

    def __init__(self, cfg, work_dir: Path, writer, *, quiet: bool, terminal: bool | None = None):
        from .trackers import build_trackers

        self.work_dir = Path(work_dir)
        self.writer = writer
        self.total_steps = cfg.schedule.steps
        self.log_every = cfg.schedule.get("log_every", DEFAULT_LOG_EVERY) or 0
        self.terminal = output_is_terminal() if terminal is None else terminal
        self.print_lines = not quiet and not self.terminal
        self.start = time.perf_counter()
        self.failed: set[str] = set()
        self.plotted_step: int | None = None
        self.last_step: int | None = None
        config_text = cfg.pretty_text
        # TensorBoard renders text as Markdown: indent it as a code block.
        writer.add_text("config", "\n".join("    " + line for line in config_text.splitlines()))
        self.trackers = build_trackers(cfg, work_dir)  # a bad entry stops the run before step 1
        for tracker in self.trackers:
            self._guard(tracker.name, lambda t=tracker: t.log_config(cfg, config_text))

    def _guard(self, what: str, action, default=None):
        """Run ``action``; on any error, warn once about ``what`` and skip it from then on."""
        if what in self.failed:
            return default
        try:
            return action()
        except Exception as error:  # a picture or a tracker must not stop the run
            self.failed.add(what)
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            print(
                f"warning: {what} failed ({type(error).__name__}: {first}); the run goes on "
                f"without it",
                file=sys.stderr,
                flush=True,
            )
            return default

    def logged(self, metrics: dict) -> None:
        """After a step's metrics are written: a log line when due, the trackers' scalars."""
        step = metrics["step"]
        self.last_step = step
        due = step == 1 or step == self.total_steps
        due = due or (self.log_every > 0 and step % self.log_every == 0)
        if self.print_lines and due:
            print(log_line(metrics, self.total_steps, time.perf_counter() - self.start), flush=True)
        for tracker in self.trackers:
            self._guard(tracker.name, lambda t=tracker: t.log_metrics(metrics, step))

    def sampled(self, grid: Path, step: int) -> None:
        """After a sample grid is written: it goes to TensorBoard and the trackers; the plots
        are redrawn."""
        image = self._guard("the sample image for TensorBoard", lambda: _read_png(grid))
        if image is not None:
            self._guard(
                "the sample image for TensorBoard",
                lambda: self.writer.add_image("samples", image, step, dataformats="HWC"),
            )
        for tracker in self.trackers:
            self._guard(tracker.name, lambda t=tracker: t.log_image("samples", grid, step))
        self.plot()

    def plot(self) -> None:
        """Redraw ``plots/`` unless it already shows the last step."""
        from .plots import plot_run

        if self.last_step is None or self.plotted_step == self.last_step:
            return
        self._guard("plotting", lambda: plot_run(self.work_dir))
        self.plotted_step = self.last_step

    def finish(self) -> None:
        """At the end of the loop (finished or interrupted): the last plots; trackers close."""
        self.plot()
        for tracker in self.trackers:
            self._guard(tracker.name, tracker.close)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
