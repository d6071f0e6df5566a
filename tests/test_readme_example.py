"""The README and the docs' overview run as written: their Python examples, commands and table.

Each example is executed from the Markdown itself, so a renamed argument or a changed return
type breaks this test instead of silently breaking the documentation.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from unigrpo_kit.registry import ALL_REGISTRIES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS_INDEX = ROOT / "docs" / "index.md"
CI_SCRIPT = ROOT / ".ci" / "run"

# The CPU install: torch's CPU build from the PyTorch index (a warning, not a failure, where
# that index cannot be reached and another index or the local wheel folder has the version),
# then the kit.
INSTALL_COMMANDS = (
    'python -m pip install "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu',
    'python -m pip install -e ".[dev]"',
)
TEST_COMMAND = "python -m pytest -q"

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def code_blocks(path: Path, language: str) -> list[str]:
    """The bodies of the fenced code blocks of ``path`` tagged with ``language``, in order."""
    return [body for tag, body in FENCE.findall(path.read_text()) if tag == language]


def run_example(source: str, name: str) -> dict[str, object]:
    """Execute one example in a fresh namespace, as a script would, and return the namespace."""
    namespace: dict[str, object] = {"__name__": f"example_{name}"}
    exec(compile(source, name, "exec"), namespace)
    return namespace


def assert_zero_mean_per_group(advantages: torch.Tensor, group_ids: torch.Tensor) -> None:
    for group in group_ids.unique():
        assert abs(float(advantages[group_ids == group].mean())) < 1e-6


def test_readme_example_computes_a_finite_loss_and_a_policy_gradient(capsys) -> None:
    blocks = code_blocks(README, "python")
    assert len(blocks) == 1, "the README should hold exactly one Python example"
    example = run_example(blocks[0], "README.md")

    output = example["output"]
    advantages = example["advantages"]
    group_ids = example["group_ids"]
    data_point = example["data_point"]
    assert torch.isfinite(output.loss) and output.loss.dim() == 0
    # Group-relative advantages: zero mean in each group, and not all zero (rewards differ).
    assert advantages.shape == (8,)
    assert_zero_mean_per_group(advantages, group_ids)
    assert advantages.abs().max() > 0.5
    # First inner epoch: the re-scored log-probs equal the rollout's, so every ratio is 1 and
    # the loss is -mean(A), which is 0 because the advantages are centred per group.
    assert float(output.metrics["ratio_mean"]) == 1.0
    assert abs(float(output.loss.detach())) < 1e-6
    # ... while its gradient reaches the policy's parameter and is finite.
    assert data_point.grad is not None and torch.isfinite(data_point.grad).all()
    assert data_point.grad.abs().max() > 0
    assert capsys.readouterr().out.startswith("loss ")


def test_docs_index_examples_build_a_unigrpo_config_and_run_text_grpo() -> None:
    config_block, text_block = code_blocks(DOCS_INDEX, "python")

    built = run_example(config_block, "docs/index.md#config")
    assert type(built["sampler"]).__name__ == "FlowSDE"
    assert built["sampler"].noise_level == 0.8
    assert built["window"].select(25).sum() == 3
    assert built["image_loss"].ratio_norm is True
    assert built["velocity_mse"].weight == 1.5e-5

    text = run_example(text_block, "docs/index.md#text")
    assert torch.isfinite(text["loss"]) and text["loss"].dim() == 0
    assert_zero_mean_per_group(text["advantages"], text["group_ids"])
    assert float(text["output"].metrics["ratio_mean"]) == 1.0
    grad = text["policy"].table.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0


def test_readme_install_and_test_commands_are_the_ones_ci_runs() -> None:
    readme_commands = [
        line.strip() for block in code_blocks(README, "bash") for line in block.splitlines()
    ]
    ci_lines = [line.strip() for line in CI_SCRIPT.read_text().splitlines()]
    for commands in (readme_commands, ci_lines):
        positions = [commands.index(line) for line in (*INSTALL_COMMANDS, TEST_COMMAND)]
        assert positions == sorted(positions)  # torch, then the kit, then the tests


def test_the_readme_has_a_cpu_and_a_gpu_install() -> None:
    text = README.read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"--index-url https://download.pytorch.org/whl/cu\d+", text)
    assert '-e ".[dev,xformers]"' in text


def readme_component_table() -> dict[str, set[str]]:
    """``{kind: {name, ...}}`` from the rows ``| kind | `Name` | description |`` of the README."""
    row = re.compile(r"^\| (\w+) \| `(\w+)` \|", re.MULTILINE)
    table: dict[str, set[str]] = {}
    for kind, name in row.findall(README.read_text()):
        table.setdefault(kind, set()).add(name)
    return table


def test_readme_component_table_lists_exactly_the_registered_components() -> None:
    table = readme_component_table()
    registered = {kind: set(registry.known_names()) for kind, registry in ALL_REGISTRIES.items()}
    assert table == registered
