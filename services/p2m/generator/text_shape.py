r"""Texts as regular-expression shapes, a digit standing for any digit: ``\d{4}-\d{2}``.

Shared by the invariants learned from demonstrations: an input's common prefix and the shapes of
keyed outputs' values.
"""

from __future__ import annotations

import re

# A token made of punctuation only, standing alone between spaces ("==", "|", "->").
SYMBOL = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")
_SPECIAL = set(".^$*+?{}[]\\|()")


def shape_pieces(text: str) -> list[str]:
    r"""The text as regex pieces: a digit becomes ``\d``, a special character is escaped."""
    return [r"\d" if ch.isdigit() else "\\" + ch if ch in _SPECIAL else ch for ch in text]


def compact(pattern: str) -> str:
    r"""``\d\d\d\d`` -> ``\d{4}``."""
    return re.sub(r"(?:\\d){2,}", lambda m: rf"\d{{{len(m.group(0)) // 2}}}", pattern)


def shape(text: str) -> str:
    r"""``text`` as one pattern: ``2013-04`` -> ``\d{4}-\d{2}``."""
    return compact("".join(shape_pieces(text)))
