"""The untrained base row of an ablation: the recipe's own model, evaluated once per sweep.

A sweep's table compares cells with one another; this row says what training bought at all.
The base model is the recipe's ``model`` (e.g. ``tiny-base``) under the sweep's shared options
(``--cfg-options`` and the grid file's ``base_overrides``, not any cell's), evaluated with the
recipe's evaluation protocol, as ``unigrpo-kit eval`` would. A cell that changes the protocol
itself (``rollout.max_rounds``, ``evaluation.*``) is scored under its own protocol, so its
distance to this row mixes the two effects; the report says which options the row used.

The result goes to ``<sweep>/untrained_base/result.json`` (atomically) and is reused by every
later run of the same command, so the tables stay a function of the result files.
"""

from __future__ import annotations

import time
from pathlib import Path

from .plan import Sweep, write_json_atomic

BASE_DIR = "untrained_base"


def base_result_path(sweep: Sweep) -> Path:
    return sweep.root / BASE_DIR / "result.json"


def evaluate_base(sweep: Sweep) -> dict:
    """The base row's result (``status``, ``eval`` scores or ``error``, ``model``), computed
    and written if the sweep has none yet."""
    import json

    path = base_result_path(sweep)
    if path.exists():
        return json.loads(path.read_text())
    from ..evaluation import evaluate_recipe
    from ..recipe import load_recipe
    from ..runner import build_policy
    from .worker import one_line

    start = time.perf_counter()
    try:
        cfg = load_recipe(sweep.recipe, list(sweep.base_options))
        if cfg.get("threads"):
            import torch

            torch.set_num_threads(cfg.threads)
        model = cfg.model.get("checkpoint") or cfg.model.get("path") or cfg.model.get("type")
        result = {"status": "done", "model": str(model)}
        result["eval"] = evaluate_recipe(cfg, build_policy(cfg.model))
    except Exception as error:  # recorded in the row, as a failed run's error is
        result = {"status": "failed", "error": one_line(error)}
    result["eval_s"] = round(time.perf_counter() - start, 1)
    result["options"] = list(sweep.base_options)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, result)
    return result


def read_base(sweep: Sweep) -> dict | None:
    """The base row's result, or None when the sweep has none (``--no-baseline``)."""
    import json

    path = base_result_path(sweep)
    return json.loads(path.read_text()) if path.exists() else None
