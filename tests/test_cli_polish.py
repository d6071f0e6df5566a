"""What a new user reads first: ``--help`` without types on flags, ``list`` in plain sentences,
no issue-tracker numbers anywhere the kit prints, tables within 80 columns."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unigrpo_kit import __version__
from unigrpo_kit.cli import app
from unigrpo_kit.docstrings import first_sentence, plain, summary
from unigrpo_kit.registry import ALL_REGISTRIES

PACKAGE = Path(__file__).resolve().parent.parent / "unigrpo_kit"
runner = CliRunner()


def test_version_is_a_flag_in_help_and_prints_the_version():
    help_text = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}).output
    assert "--version" in help_text and "<bool>" not in help_text
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"unigrpo-kit {__version__}"


def test_flags_have_no_type_but_valued_options_keep_theirs():
    text = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "100"}).output
    assert "<bool>" not in text
    assert re.search(r"--seed\s+<int>", text)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("Flow-GRPO-Fast (arXiv 2505.05470): ``window_size`` SDE steps.", None),
        (":class:`~unigrpo_kit.models.protocol.TextPolicy` of *packed* latents", "TextPolicy"),
        (":func:`the loop <unigrpo_kit.trainer.train>` runs", "the loop runs"),
    ],
)
def test_plain_drops_markup(raw, clean):
    text = plain(raw)
    assert "`" not in text and ":class:" not in text and "*" not in text
    if clean is not None:
        assert text.startswith(clean)


def test_first_sentence_skips_abbreviations_and_brackets():
    text = "Dr. GRPO (e.g. Liu et al. 2025. Two) uses a mean. More here."
    assert first_sentence(text) == "Dr. GRPO (e.g. Liu et al. 2025. Two) uses a mean."


def test_every_listed_summary_is_one_plain_sentence():
    for registry in ALL_REGISTRIES.values():
        for name in registry.known_names():
            line = summary(registry.get(name))
            assert line.endswith("."), (name, line)
            assert not re.search(r"``|:[a-z]+:`|[:;,]\.$|see the module docstring", line), line
    from unigrpo_kit.registry import ADVANTAGES, SAMPLERS

    assert summary(SAMPLERS.get("FixedWindow")).endswith(": window_size consecutive SDE steps.")
    assert summary(ADVANTAGES.get("GroupMean")).startswith("Dr. GRPO's advantage")


def test_list_fits_80_columns_without_raw_markup():
    output = runner.invoke(app, ["list"], env={"COLUMNS": "80"}).output
    assert "``" not in output and ":class:" not in output
    assert max(len(line) for line in output.splitlines()) <= 80


def string_constants(path: Path) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_issue_numbers_in_anything_the_kit_prints():
    found = [
        (path.name, text)
        for path in PACKAGE.rglob("*.py")
        for text in string_constants(path)
        if re.search(r"\bissue\s*#?\d+", text, re.IGNORECASE)
    ]
    assert found == []
