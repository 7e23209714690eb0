"""Balanced labels for a closed set of outputs: ask for the scarcest label, cap every label.

A small teacher asked for "a new example" of a sentiment task writes positive ones (6 of 6 in a
run here). When the outputs form a closed set (``Invariants.output_choices``), each request asks
for an example of the label with the fewest examples so far, and a label that has reached its
quota takes no more: the largest label stays within ``QUOTA_SHARE`` times its fair share (the
fair share rounded up where that is more: many labels, few examples each).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence

from p2m.generator.filters import normalise

QUOTA_SHARE = 1.5


def label_of(output: str, choices: Sequence[str]) -> str | None:
    """The choice ``output`` is (case, spacing and punctuation aside), or None."""
    wanted = normalise(output)
    return next((choice for choice in choices if normalise(choice) == wanted), None)


def quota(num_examples: int, choices: Sequence[str]) -> int:
    """Most examples one label may have: ``QUOTA_SHARE`` times the fair share, rounded down.

    Never so few that the labels' quotas together hold fewer than ``num_examples``: 80 examples
    of banking77's 77 intents take 2 each (1.5 times 80 / 77 rounds down to 1, and 77 examples
    would never make 80).
    """
    fair = num_examples / len(choices)
    return max(math.ceil(fair), math.floor(QUOTA_SHARE * fair))  # ceil: at least 1


def label_counts(outputs: Iterable[str], choices: Sequence[str]) -> Counter[str]:
    """How many of ``outputs`` are each choice (every choice present, maybe at 0)."""
    counts: Counter[str] = Counter({choice: 0 for choice in choices})
    for output in outputs:
        label = label_of(output, choices)
        if label is not None:
            counts[label] += 1
    return counts


def targets(choices: Sequence[str], counts: Counter[str], request_ids: Sequence[str]) -> list[str]:
    """The label each request asks for: the scarcest so far, counting the ones just assigned.

    Ties go by a hash of the request id, so the order is fixed by the ids, not by the choices.
    """
    planned = Counter(counts)
    chosen = []
    for request_id in request_ids:
        label = min(choices, key=lambda c: (planned[c], _tiebreak(request_id, c)))
        planned[label] += 1
        chosen.append(label)
    return chosen


def _tiebreak(request_id: str, label: str) -> str:
    return hashlib.sha256(f"{request_id}:{label}".encode()).hexdigest()
