"""How often one output may repeat when the outputs are open (not a closed set of labels).

A teacher asked for new examples writes the answers it knows best: the paper's own 5,000
generated SQuAD examples (gpt-3.5-turbo) have 584 distinct answers, "Jupiter" 474 of them, and
ten answers make 68% of its first 2,000. A student trained on those 2,000 learned the common
answers rather than to find the span (dev EM 29, where gpt-3.5-turbo scores 42.1). So no output
may make more than ``share`` of the examples asked for (and at least ``MIN_REPEATS`` are
allowed), except an output the demonstrations repeat themselves ("N/A" in the Temporal prompt's),
which may make its share of them, not more. A small teacher answers such an output most easily:
allowed 1.5 times the demonstrations' share, Qwen2.5-0.5B filled it (48 of 80 Temporal examples
"N/A", the demonstrations 5 of 12), and the student trained on them answered "N/A" to 87 of
100 dev inputs (41 references are). Closed sets have their own quota (``labels``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from p2m.common.types import Example
from p2m.generator.filters import normalise

DEFAULT_SHARE = 0.02
MIN_REPEATS = 2
AVOID_SHOWN = 10  # outputs at their cap named in a request for a new input


@dataclass(frozen=True)
class OutputCap:
    """The most examples one output may have in a dataset of ``num_examples``.

    Attributes:
        num_examples: Examples asked for.
        share: Most of them one output may make; 0 (or 1) for no cap.
        repeated: The demonstrations' repeated outputs (normalised) and their share of them.
    """

    num_examples: int
    share: float
    repeated: dict[str, float]

    @classmethod
    def for_demonstrations(
        cls, demonstrations: Sequence[Example], num_examples: int, share: float
    ) -> OutputCap:
        """The cap for a task with these demonstrations."""
        counts = Counter(normalise(d.output) for d in demonstrations)
        total = len(demonstrations)
        repeated = {output: n / total for output, n in counts.items() if n > 1}
        return cls(num_examples, share, repeated)

    @property
    def active(self) -> bool:
        """True when the cap can drop anything."""
        return 0 < self.share < 1

    def limit(self, output: str) -> int:
        """Most examples with ``output`` (normalised) the dataset may hold."""
        share = max(self.share, self.repeated.get(output, 0.0))
        return max(MIN_REPEATS, math.floor(share * self.num_examples))


class OutputCounts:
    """Accepted examples per output (normalised), with each output's first spelling."""

    def __init__(self, outputs: Iterable[str] = ()) -> None:
        """Count ``outputs``."""
        self._counts: Counter[str] = Counter()
        self._spelling: dict[str, str] = {}
        for output in outputs:
            self.add(output)

    def add(self, output: str) -> None:
        """Count one more example with ``output``."""
        key = normalise(output)
        self._counts[key] += 1
        self._spelling.setdefault(key, output)

    def count(self, output: str) -> int:
        """Examples counted with ``output`` (case, spacing and punctuation aside)."""
        return self._counts[normalise(output)]

    def full(self, output: str, cap: OutputCap) -> bool:
        """True when ``output`` already has as many examples as ``cap`` allows."""
        key = normalise(output)
        return cap.active and self._counts[key] >= cap.limit(key)

    def at_cap(self, cap: OutputCap, most: int = AVOID_SHOWN) -> list[str]:
        """Up to ``most`` outputs that have reached ``cap``, the commonest first."""
        if not cap.active:
            return []
        return [
            self._spelling[key]
            for key, count in self._counts.most_common()
            if count >= cap.limit(key)
        ][:most]

    def commonest_share(self) -> float:
        """Share of the examples held by the commonest output (0 with none)."""
        total = sum(self._counts.values())
        return max(self._counts.values()) / total if total else 0.0
