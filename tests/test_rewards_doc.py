"""docs/rewards.md's "Writing a reward" example runs as written and registers a reward that
builds by name; the registration is removed afterwards (the README table lists the kit's own)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from unigrpo_kit.registry import REWARDS

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def test_the_writing_a_reward_example_runs(capsys):
    blocks = [b for tag, b in FENCE.findall((ROOT / "docs" / "rewards.md").read_text())]
    example = next(b for b in blocks if "class Brevity" in b)
    try:
        exec(compile(example, "docs/rewards.md", "exec"), {"__name__": "rewards_doc_example"})
        reward = REWARDS.build(dict(type="Brevity", limit=4))
        out = reward(prompts=["p"] * 3, texts=["", "one two", "a b c d e f"])
        torch.testing.assert_close(out.scores, torch.tensor([1.0, 0.5, 0.0]))
    finally:
        REWARDS._module_dict.pop("Brevity", None)
    assert "tensor([1.0000, 0.5000])" in capsys.readouterr().out
