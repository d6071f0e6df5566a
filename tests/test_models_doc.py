"""docs/models.md's worked example (a character-level GRU as a new model family) runs as
written: it registers, builds by type, trains one step under the kit's trainer with the
on-policy self-check, and its checkpoint loads back through ``load_policy``."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from unigrpo_kit.models.checkpoint import load_policy
from unigrpo_kit.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def test_the_worked_example_of_a_new_model_family_trains_and_round_trips(tmp_path, monkeypatch):
    blocks = [b for tag, b in FENCE.findall((ROOT / "docs" / "models.md").read_text())]
    example = next(b for b in blocks if "class CharGRUPolicy" in b)
    monkeypatch.chdir(ROOT)  # the example reads recipes/hf/text_grpo.py
    namespace: dict = {"__name__": "models_doc_example"}
    try:
        exec(compile(example, "docs/models.md", "exec"), namespace)
        check(namespace, tmp_path)
    finally:  # the example's class leaves the registry (the README table lists the kit's own)
        MODELS._module_dict.pop("CharGRUPolicy", None)


def check(namespace: dict, tmp_path: Path) -> None:
    metrics = namespace["metrics"]
    assert 0 <= metrics["ratio/self_check_max_dev"] < 1e-5
    assert metrics["episodes/trained"] in (0, 16)
    policy = namespace["trainer"].policy
    policy.save(tmp_path)
    loaded = load_policy(tmp_path)
    assert type(loaded).__name__ == "CharGRUPolicy"
    for a, b in zip(policy.module.parameters(), loaded.module.parameters()):
        assert torch.equal(a, b)
