"""Near-identical datasets of a catalog (mirrors, forks, copies, per-config uploads) as one family.

Two entries are one dataset when their summaries' embeddings are nearly the same, or when they
share a name apart from the owner and are similar. Thresholds measured on the Hugging Face
catalog (all-MiniLM-L6-v2): same-named mirrors such as ``xsum``/``EdinburghNLP/xsum`` or
``banking77``/``PolyAI/banking77`` score 0.85 to 0.99 while unrelated datasets that happen to share
a generic name (``*/test``) stay below 0.67; differently named entries above 0.95 are copies
(SQuAD re-uploads at 0.95 to 0.97) or configs uploaded one by one (UnpredicTable clusters, 0.97
to 0.99).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAME_NAME_SIMILARITY = 0.7
COPY_SIMILARITY = 0.95


def base_name(name: str) -> str:
    """The name without its owner, lower-cased letters and digits (``GEM/web_nlg``: webnlg)."""
    return re.sub(r"[^a-z0-9]", "", name.rsplit("/", 1)[-1].lower())


@dataclass(frozen=True)
class Family:
    """A ranked entry (the one shown) and the indexes of its near-identical variants, best first."""

    leader: int
    variants: tuple[int, ...]


class Families:
    """Finds the near-identical entries of any entry of a catalog."""

    def __init__(self, names: Sequence[str], vectors: np.ndarray) -> None:
        """``vectors``: the entries' unit-length embeddings, one row per name."""
        self._keys = np.array([base_name(n) for n in names], dtype=object)
        self._vectors = vectors

    def members(self, index: int) -> np.ndarray:
        """Indexes of the entries near-identical to entry ``index`` (itself left out)."""
        similarity = self._vectors @ self._vectors[index]
        same_name = (self._keys == self._keys[index]) & (similarity >= SAME_NAME_SIMILARITY)
        found = np.flatnonzero(same_name | (similarity >= COPY_SIMILARITY))
        return found[found != index]

    def collapse(self, order: np.ndarray, scores: np.ndarray, top_k: int) -> list[Family]:
        """The first ``top_k`` families along ``order`` (best first).

        Each entry not yet claimed leads a family and claims its unclaimed members, which then
        show as its variants (by ``scores``, best first) instead of taking a place of their own.
        """
        claimed: set[int] = set()
        families: list[Family] = []
        for index in order:
            index = int(index)
            if index in claimed:
                continue
            members = [int(m) for m in self.members(index) if int(m) not in claimed]
            members.sort(key=lambda m: -scores[m])
            claimed.update(members, (index,))
            families.append(Family(index, tuple(members)))
            if len(families) == top_k:
                break
        return families
