"""Near-duplicates by meaning: inputs whose sentence embeddings are too close to an earlier one.

Character n-grams miss a small teacher's favourite trick, the same input reworded ("What is the
capital of France?" / "Which city is France's capital?"). Embeddings from the shipped
all-MiniLM-L6-v2 catch it. On the paper's dev halves (real, distinct inputs) the nearest
neighbour's cosine is above 0.95 for 0% (MCoNaLa), 0.7% (Temporal) and 15% (SQuAD, where several
questions share one context) of the inputs, and above 0.95 for 73% to 93% of the inputs of the
paper's own generated sets: 0.95 is the default threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

DEFAULT_THRESHOLD = 0.95


class Encoder(Protocol):
    """Anything that embeds texts as unit-length rows (``p2m.common.encoder.SentenceEncoder``)."""

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 rows, one per text."""
        ...


class MeaningIndex:
    """Inputs seen so far, as embeddings; ``similar`` finds one closer than the threshold."""

    def __init__(self, encoder: Encoder, threshold: float) -> None:
        """Call an input a duplicate when its cosine to a seen one is at least ``threshold``."""
        self.threshold = threshold
        self._encoder = encoder
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._pending: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    def similar(self, text: str) -> bool:
        """True when ``text`` means what a seen input means (its vector is kept for ``add``)."""
        vector = self._pending.get(text)
        if vector is None:
            vector = self._encoder.encode([text])[0]
            self._pending = {text: vector}
        if not len(self):
            return False
        return bool(float(np.max(self._vectors @ vector)) >= self.threshold)

    def add(self, text: str) -> None:
        """Remember ``text``."""
        self.add_all([text])

    def add_all(self, texts: Sequence[str]) -> None:
        """Remember many texts (embedded in one batch)."""
        if not texts:
            return
        known = dict(self._pending)
        missing = [t for t in texts if t not in known]
        if missing:
            known.update(zip(missing, self._encoder.encode(missing), strict=True))
        rows = np.stack([known[t] for t in texts]).astype(np.float32)
        self._vectors = rows if not len(self) else np.vstack([self._vectors, rows])
        self._pending = {}
