"""The base checkpoint that ships inside the package loads by name and fits the world."""

from __future__ import annotations

import pytest

from unigrpo_kit.models.checkpoint import PACKAGE_CHECKPOINTS, load_model
from unigrpo_kit.tasks.shapeworld import ShapeWorld

SHIPPED = PACKAGE_CHECKPOINTS / "tiny-base"


def test_tiny_base_is_shipped_small_and_complete():
    files = {p.name: p.stat().st_size for p in SHIPPED.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(files)
    assert sum(files.values()) <= 20 * 2**20  # the 20 MB budget


def test_tiny_base_loads_by_name_with_the_world_vocabulary():
    model, tokenizer = load_model("tiny-base")
    # a lexicon change that the shipped tokenizer does not know would turn words into <unk>
    assert tokenizer.words == ShapeWorld().vocabulary()
    assert model.config.vocab_size == len(tokenizer)
    assert set(model.config.banned_token_ids) == set(tokenizer.never_generated_ids)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(2.13e6, rel=0.05)
