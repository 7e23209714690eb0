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
