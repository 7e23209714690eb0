"""The writing systems a text is written in: Latin, kana, Han, Hangul, Cyrillic, ...

A demonstration set whose every input is Japanese says so in its letters, whatever its
instruction says; a small teacher still answers "from collections import Counter" for an input.
Letters are grouped by the first word of their Unicode name (Japanese kana as one system).
"""

from __future__ import annotations

import unicodedata
from collections import Counter

# A writing system is used by a text when it makes up at least this share of its letters.
SCRIPT_SHARE = 0.1
# Texts with fewer letters ("2009 == 2009", "N/A") say nothing about their writing system.
MIN_LETTERS = 3
_WIDTH_WORDS = ("FULLWIDTH", "HALFWIDTH")
# The letters of each writing system an input may be required to start with (``char_class``), as
# Unicode ranges a grammar can hold (full and half width forms with them); "digit" for 0-9.
START_RANGES = {
    "digit": "0-9\uff10-\uff19",
    "latin": "A-Za-z\u00c0-\u024f\uff21-\uff3a\uff41-\uff5a",
    "greek": "\u0370-\u03ff",
    "cyrillic": "\u0400-\u04ff",
    "kana": "\u3040-\u30ff\uff66-\uff9f",
    "han": "\u3400-\u4dbf\u4e00-\u9fff",
    "hangul": "\uac00-\ud7af",
}
NAMES = {
    "latin": "Latin letters",
    "kana": "Japanese kana",
    "han": "Chinese characters (kanji)",
    "hangul": "Korean Hangul",
}


def script_of(char: str) -> str:
    """The writing system of one letter: "latin", "kana", "han", "cyrillic", ..."""
    words = unicodedata.name(char, "").split()
    if words and words[0] in _WIDTH_WORDS:
        words = words[1:]
    first = words[0] if words else "unknown"
    if first.startswith(("HIRAGANA", "KATAKANA")):
        return "kana"
    if first == "CJK":
        return "han"
    return first.lower()


def scripts_used(text: str) -> frozenset[str] | None:
    """The writing systems of at least ``SCRIPT_SHARE`` of the letters; None with too few."""
    counts = Counter(script_of(char) for char in text if char.isalpha())
    letters = sum(counts.values())
    if letters < MIN_LETTERS:
        return None
    return frozenset(s for s, n in counts.items() if n >= SCRIPT_SHARE * letters)


def common_scripts(texts: list[str], min_texts: int) -> tuple[str, ...]:
    """The writing systems every text with enough letters uses; () with fewer such texts."""
    used = [s for s in map(scripts_used, texts) if s is not None]
    if len(used) < min_texts:
        return ()
    return tuple(sorted(frozenset.intersection(*used)))


def keeps_scripts(text: str, scripts: tuple[str, ...]) -> bool:
    """True when ``text`` uses every one of ``scripts`` (or has too few letters to tell)."""
    used = scripts_used(text)
    return used is None or all(script in used for script in scripts)


def describe(scripts: tuple[str, ...]) -> str:
    """``("han", "kana")`` -> "Chinese characters (kanji) and Japanese kana"."""
    names = [NAMES.get(s, f"{s.title()} letters") for s in scripts]
    return " and ".join(names)


def start_kind(char: str) -> str:
    """What a text's first character is: "digit", a writing system, or "" (a symbol, a space)."""
    if char.isdigit():
        return "digit"
    return script_of(char) if char.isalpha() else ""


def char_class(kinds: tuple[str, ...]) -> str:
    """``("digit", "latin")`` -> ``[0-9A-Za-z...]``, the characters of those kinds."""
    return "[" + "".join(START_RANGES[k] for k in kinds) + "]"
