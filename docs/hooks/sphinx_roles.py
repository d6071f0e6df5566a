"""MkDocs hook: render the reST markup that some docstrings use as plain Markdown would.

mkdocstrings' Google-style parser leaves reST in the text, so ``:class:`StepOutput``` would read
":class:StepOutput" on the page, and a literal-block marker ("called like this::") would keep
its double colon. This hook drops the role (showing only the last component of a
``~``-prefixed path, as Sphinx does) and turns "::" before a code block into ":".
"""

from __future__ import annotations

import re

ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|mod|attr|obj|data|exc|const):<code>(~?)([^<]*)</code>"
)
LITERAL_BLOCK_MARKER = re.compile(r"::</p>(\s*<div class=\"highlight\">)")


def _plain_code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"


def on_page_content(html: str, **kwargs: object) -> str:
    html = ROLE.sub(_plain_code, html)
    return LITERAL_BLOCK_MARKER.sub(r":</p>\1", html)
