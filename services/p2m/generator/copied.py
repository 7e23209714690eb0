"""The order new-input requests show the demonstrations in: one the teacher copies goes last."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from p2m.common.types import Example
from p2m.generator.filters import DuplicateIndex

# A demonstration written back this many times as a new input moves behind the others shown: a
# small teacher copies the first example it is shown (every one of 18 copies in a banking77 run
# of 250 requests was its first demonstration, word for word). The set shown stays the same, so
# the mix the teacher follows (dated and undated tweets, say) does not change.
MOVE_AFTER = 2


class DemonstrationOrder:
    """The demonstrations a request for a new input shows, in the order it shows them."""

    def __init__(
        self,
        demonstrations: Sequence[Example],
        count: int,
        threshold: float,
        word_threshold: float,
        moved: Iterable[int] = (),
    ) -> None:
        """Show the first ``count``; count copies as the duplicate filter does (same thresholds).

        ``moved`` replays earlier moves (positions in the prompt, from 0) in the order made.
        """
        self._demonstrations = tuple(demonstrations)
        self._order = list(range(min(count, len(self._demonstrations))))
        self._indexes = {}
        for position in self._order:
            index = DuplicateIndex(threshold, word_threshold)
            index.add(self._demonstrations[position].input)
            self._indexes[position] = index
        self._copies: Counter[int] = Counter()
        self.moved: list[int] = []
        for position in moved:
            self._move_last(position)

    def shown(self) -> list[Example]:
        """The demonstrations to show, in order."""
        return [self._demonstrations[position] for position in self._order]

    def note_copy(self, text: str) -> int | None:
        """Count ``text`` against the shown demonstration it duplicates, if any.

        Returns the demonstration's position if this copy moved it behind the others.
        """
        for position in self._order:
            if self._indexes[position].check(text) is None:
                continue
            self._copies[position] += 1
            if self._copies[position] >= MOVE_AFTER and position != self._order[-1]:
                self._move_last(position)
                return position
            return None
        return None

    def _move_last(self, position: int) -> None:
        if position in self._order:
            self._order.remove(position)
            self._order.append(position)
            self._copies[position] = 0
            self.moved.append(position)
