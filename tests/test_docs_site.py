"""The docs site's set-up: equations rendered by a MathJax served from docs/ (no CDN), no ASCII
equations left in the prose, a quickstart whose five commands are the README's and the CLI's,
and a gallery whose pictures exist and stay small."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from unigrpo_kit.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^ *```.*?^ *```", re.MULTILINE | re.DOTALL)


class Loader(yaml.SafeLoader):
    """mkdocs.yml may use !!python/name tags (material's emoji); none are needed here."""


Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def mkdocs() -> dict:
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def prose(path: Path) -> str:
    """A page without its code blocks (fenced; indented ones are checked: an indented
    equation is what this test catches), inline code and math."""
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.DOTALL)
    text = re.sub(r"\$[^$\n]+\$", "", text)
    return re.sub(r"`[^`\n]+`", "", text)


def test_math_is_rendered_by_a_local_mathjax():
    config = mkdocs()
    extensions = {
        next(iter(e)) if isinstance(e, dict) else e: e for e in config["markdown_extensions"]
    }
    assert extensions["pymdownx.arithmatex"] == {"pymdownx.arithmatex": {"generic": True}}
    scripts = config["extra_javascript"]
    assert all(not s.startswith(("http:", "https:", "//")) for s in scripts)
    for script in scripts:
        assert (DOCS / script).is_file(), script
    mathjax = (DOCS / "assets" / "mathjax" / "tex-svg.js").read_bytes()
    assert len(mathjax) > 1_000_000 and b"MathJax" in mathjax
    assert scripts.index("javascripts/mathjax-config.js") < scripts.index(
        "assets/mathjax/tex-svg.js"
    )  # the settings must exist when MathJax starts


def test_no_ascii_equations_left_in_the_prose():
    ascii_math = re.compile(r"sum_[a-z]\b|\|\|\s*v_theta|\(1/G\)|pi_theta|mean_group\(")
    for page in DOCS.rglob("*.md"):
        found = ascii_math.findall(prose(page))
        assert not found, (page.name, found)


def test_the_quickstart_is_five_commands_the_readme_and_cli_agree_with():
    text = (DOCS / "quickstart.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, re.DOTALL).group(1)
    commands = [line for line in first.splitlines() if line.strip()]
    assert len(commands) == 5
    readme = (ROOT / "README.md").read_text()
    assert commands[0] in readme and commands[1] in readme  # the same install
    registered = {c.name or c.callback.__name__ for c in app.registered_commands}
    for command in commands[2:]:
        words = command.split()
        assert words[0] == "unigrpo-kit" and words[1] in registered
        assert (ROOT / words[2]).exists() or words[2].startswith("work_dirs/")


def test_the_gallery_shows_small_grids_that_exist():
    text = (DOCS / "gallery.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(images) >= 2
    for image in images:
        path = DOCS / image
        assert path.is_file() and path.stat().st_size < 150_000, image
