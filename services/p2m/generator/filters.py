"""Quality filters: normalisation, duplicate detection, field checks, and the majority vote."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

_PUNCT_SPACE = re.compile(r"[\W_]+", re.UNICODE)
SHINGLE = 4


def normalise(text: str) -> str:
    """Case-folded, NFKC, punctuation and runs of spaces collapsed to one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT_SPACE.sub(" ", folded).strip()


def shingles(text: str, size: int = SHINGLE) -> frozenset[str]:
    """Character ``size``-grams of the normalised text (the whole text when shorter)."""
    norm = normalise(text)
    if len(norm) <= size:
        return frozenset([norm])
    return frozenset(norm[i : i + size] for i in range(len(norm) - size + 1))


class DuplicateIndex:
    """Inputs seen so far: exact (normalised) and near (shingle Jaccard) duplicate checks."""

    def __init__(self, threshold: float) -> None:
        """Treat inputs at least ``threshold`` similar as near duplicates."""
        self.threshold = threshold
        self._exact: set[str] = set()
        self._sets: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = {}

    def check(self, text: str) -> str | None:
        """Return "exact_duplicate", "near_duplicate", or None when ``text`` is new."""
        if normalise(text) in self._exact:
            return "exact_duplicate"
        grams = shingles(text)
        overlap: Counter[int] = Counter()
        for gram in grams:
            overlap.update(self._postings.get(gram, ()))
        for index, shared in overlap.items():
            other = self._sets[index]
            if shared / (len(grams) + len(other) - shared) >= self.threshold:  # Jaccard
                return "near_duplicate"
        return None

    def add(self, text: str) -> None:
        """Remember ``text`` as seen."""
        self._exact.add(normalise(text))
        grams = shingles(text)
        index = len(self._sets)
        self._sets.append(grams)
        for gram in grams:
            self._postings.setdefault(gram, []).append(index)


def field_problem(text: str, max_chars: int) -> str | None:
    """Return "empty" or "too_long" for a bad input or output field, else None."""
    if not text.strip():
        return "empty"
    if len(text) > max_chars:
        return "too_long"
    return None


def copies_input(input_text: str, output_text: str) -> bool:
    """True when the output only repeats the input (the same text, or the input whole inside it)."""
    source, target = normalise(input_text), normalise(output_text)
    if not target:
        return False
    return target == source or (len(source) >= 16 and source in target)


def majority_vote(outputs: Sequence[str]) -> tuple[str, float]:
    """The most frequent output (ties: the shortest, then the first) and its share of the votes.

    Outputs are compared normalised; the winner is returned as first written.
    """
    if not outputs:
        raise ValueError("no outputs to vote on")
    counts = Counter(normalise(o) for o in outputs)
    first_written: dict[str, str] = {}
    for output in outputs:
        first_written.setdefault(normalise(output), output)
    best = max(counts, key=lambda k: (counts[k], -len(first_written[k])))
    return first_written[best], counts[best] / len(outputs)


def word_trigrams(text: str) -> frozenset[tuple[str, ...]]:
    """Word 3-grams of the normalised text (the whole text as one gram when shorter)."""
    words = normalise(text).split()
    if len(words) < 3:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + 3]) for i in range(len(words) - 2))


def near_duplicate_share(texts: Sequence[str], threshold: float = 0.5) -> float:
    """Share of ``texts`` whose word-trigram Jaccard with another of them is >= ``threshold``."""
    grams = [word_trigrams(text) for text in texts]
    postings: dict[tuple[str, ...], list[int]] = {}
    for index, own in enumerate(grams):
        for gram in own:
            postings.setdefault(gram, []).append(index)
    near = 0
    for index, own in enumerate(grams):
        shared: Counter[int] = Counter()
        for gram in own:
            shared.update(other for other in postings[gram] if other != index)
        if any(n / (len(own) + len(grams[o]) - n) >= threshold for o, n in shared.items()):
            near += 1
    return near / len(texts) if texts else 0.0
