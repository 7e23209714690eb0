"""Keyed outputs whose keys are of the kind the demonstrations' keys are, by meaning.

Temporal's demonstrations key every item by a time expression quoted from the input ("last
year == 1997 | July 1st == 2022-07-01"); a small teacher quotes whatever the input holds, and
the other rules (the key is quoted from the input, the value has a date's shape) let it through.
The shipped all-MiniLM-L6-v2 tells the kinds apart: in one 80-example set Qwen2.5-Coder-0.5B
wrote, each key such as "Paris", "Apple" or "Game of Thrones" scored 0.11 to 0.39 (its highest
cosine to the demonstrations' keys), each time expression 0.45 to 1.0; the paper prompt's
threshold (0.41) drops 23 of that set's 47 keyed outputs, and would drop 17 of the dev half's
251 ("tmr", "nxt yr", "fiscal 1988", "Dec. 2, 1956").

The threshold comes from the demonstrations themselves: each key's highest cosine to the other
keys (leave one out), the lowest of those, less ``MARGIN``. Keys of one kind set a high bar;
keys that are all different (names of people, say) set a low one that drops little.

Off by default (``GenerateOptions.key_kinds``): on Temporal the student trained on sets made
with it scored lower each time (README): the keyed examples it drops leave "N/A" more room.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from p2m.generator.meaning import Encoder

MIN_KEYS = 4  # distinct demonstration keys a threshold is learned from
MARGIN = 0.1  # below the demonstrations' own lowest leave-one-out cosine


def learn_threshold(encoder: Encoder, keys: Sequence[str]) -> float:
    """The cosine every key must reach to one of ``keys``; 0.0 (no rule) under ``MIN_KEYS``."""
    if len(keys) < MIN_KEYS:
        return 0.0
    vectors = encoder.encode(list(keys))
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1.0)
    lowest = float(similarity.max(axis=1).min())
    return max(0.0, round(lowest - MARGIN, 2))


class KeyKinds:
    """Tells a key like the demonstrations' keys from one of another kind."""

    def __init__(self, encoder: Encoder, keys: Sequence[str], threshold: float) -> None:
        """Hold keys to a cosine of at least ``threshold`` to one of ``keys``."""
        self.threshold = threshold
        self._encoder = encoder
        self._vectors = encoder.encode(list(keys))
        self._closest: dict[str, float] = {}

    def closest(self, key: str) -> float:
        """``key``'s highest cosine to a demonstration's key."""
        if key not in self._closest:
            vector = self._encoder.encode([key])[0]
            self._closest[key] = float(np.max(self._vectors @ vector))
        return self._closest[key]

    def unlike(self, keys: Sequence[str]) -> bool:
        """True when one of ``keys`` is below the threshold."""
        return any(self.closest(key) < self.threshold for key in keys)
