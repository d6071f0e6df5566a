"""Docstring summaries as plain sentences, for ``unigrpo-kit list`` and anything else that
prints a component's description to a terminal.

A docstring's summary is written for the docs site (reStructuredText roles, double-backquoted
literals) and often ends in a colon that introduces an equation below it. On a terminal that
reads as noise, so :func:`summary` keeps the first sentence of the summary paragraph, turns
markup into its text and ends it with a full stop.
"""

from __future__ import annotations

import inspect
import re

# :class:`~pkg.mod.Name` -> Name; :func:`text <target>` -> text; :mod:`pkg.mod` -> pkg.mod
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`<]*?)\s*(?:<[^`>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"`([^`]+)`")
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}([^*\s][^*]*?)\*{1,2}(?![\w*])")
# Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "vs.", "cf.", "approx.", "Eq.", "eq.", "No.", "Dr.")
# "; see the module docstring (...)": a pointer that helps in the source, not on a terminal.
_SEE_DOCSTRING = re.compile(
    r";\s*see the (?:module|package|class) docstring(?:\s*\([^)]*\))?[^.;]*"
)


def _role(match: re.Match) -> str:
    shorten, text = match.group(1), match.group(2).strip()
    return text.rsplit(".", 1)[-1] if shorten else text


def plain(text: str) -> str:
    """``text`` with reStructuredText roles, literals and emphasis replaced by their words."""
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = re.sub(r"(\w/) (\w)", r"\1\2", text)  # a URL the line wrap cut after a slash
    return _EMPHASIS.sub(r"\1", text)


def first_sentence(text: str) -> str:
    """The text up to the first full stop that ends a sentence outside brackets: followed by
    a space and a capital letter, and not an abbreviation such as "e.g." or "et al."."""
    depth = 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char in ".!?" and depth == 0:
            rest = text[index + 1 :]
            if not re.match(r"\s+[A-Z]", rest):
                continue
            if any(text[: index + 1].endswith(a) for a in _ABBREVIATIONS):
                continue
            return text[: index + 1]
    return text


def summary(component: object) -> str:
    """The first sentence of a component's own docstring summary (the paragraph before the
    first blank line, its lines joined), in plain text, ending with a full stop; "" if it has
    no docstring."""
    docstring = inspect.cleandoc(getattr(component, "__doc__", None) or "")
    paragraph = " ".join(docstring.split("\n\n", 1)[0].split())
    if not paragraph:
        return ""
    sentence = first_sentence(_SEE_DOCSTRING.sub("", plain(paragraph))).rstrip()
    sentence = re.sub(r"\s*[:;,]$", "", sentence)  # a colon that introduced an equation below
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."
