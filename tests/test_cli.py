from __future__ import annotations

import pytest
from typer.testing import CliRunner

import unigrpo_kit.samplers.text  # noqa: F401  (registers TextSampler)
from unigrpo_kit.cli import app
from unigrpo_kit.registry import ALL_REGISTRIES, KitRegistry

runner = CliRunner()


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == "unigrpo-kit 0.1.0\n"


def test_help_lists_the_list_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "list" in result.stdout
    assert "--version" in result.stdout


@pytest.mark.parametrize("kind", ["samplers", "sampler", "SAMPLERS"])
def test_list_one_kind_by_plural_or_singular_name(kind: str) -> None:
    result = runner.invoke(app, ["list", kind])
    assert result.exit_code == 0, result.output
    assert "samplers" in result.stdout
    assert "TextSampler" in result.stdout
    assert "Temperature, top-k and top-p sampling of tokens" in result.stdout
    # Only the requested registry is shown.
    assert "regularizers" not in result.stdout and "tasks" not in result.stdout


def tables_by_title(stdout: str) -> dict[str, str]:
    """Split ``list`` output into each table's text, keyed by the title line above it."""
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.strip() in ALL_REGISTRIES:
            current = tables.setdefault(line.strip(), [])
        else:
            current.append(line)
    return {title: "\n".join(lines) for title, lines in tables.items()}


def test_list_shows_every_registry_with_text_sampler_under_samplers() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    tables = tables_by_title(result.stdout)
    failed = {key for key in ALL_REGISTRIES if f"import the {key} registry" in result.stderr}
    # Each registry is either tabled or reported, so none goes missing silently.
    assert set(tables) | failed == set(ALL_REGISTRIES)
    assert "TextSampler" in tables["samplers"]
    assert all("TextSampler" not in text for title, text in tables.items() if title != "samplers")


def test_unknown_kind_exits_2_with_one_line_naming_the_valid_kinds() -> None:
    result = runner.invoke(app, ["list", "widgets"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "unknown kind 'widgets'" in result.stderr
    assert all(key in result.stderr for key in ALL_REGISTRIES)
    assert "Traceback" not in result.output


def test_a_registry_that_fails_to_import_is_reported_and_the_rest_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = KitRegistry("widget", locations=["unigrpo_kit.no_such_module"])
    monkeypatch.setitem(ALL_REGISTRIES, "widgets", broken)
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "TextSampler" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "widgets" in line]
    assert warnings == [
        "warning: could not import the widgets registry: "
        "ModuleNotFoundError: No module named 'unigrpo_kit.no_such_module'"
    ]


def test_listing_only_a_broken_registry_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = KitRegistry("widget", locations=["unigrpo_kit.no_such_module"])
    monkeypatch.setitem(ALL_REGISTRIES, "widgets", broken)
    result = runner.invoke(app, ["list", "widget"])
    assert result.exit_code == 1
    assert "could not import the widgets registry" in result.stderr
    assert "Traceback" not in result.output
