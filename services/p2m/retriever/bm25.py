"""Okapi BM25 over a sparse term matrix: one matrix-vector product per query."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse

_TOKEN = re.compile(r"\w+", re.UNICODE)
_STOPWORD_TEXT = (
    "a an the and or of to in on for with by from as at is are was were be been it its this "
    "that these those your you we our their there here which what who how when where into "
    "than then so such can will would should may might must not no do does did have has had "
    "also each other some any all more most very just only"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without English stop words or one-letter tokens."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS and len(t) > 1]


class BM25:
    """BM25 (k1, b) index; ``scores(query)`` gives every document's score."""

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        """Index ``documents``."""
        vocabulary: dict[str, int] = {}
        rows, cols, counts = [], [], []
        lengths = np.zeros(len(documents), dtype=np.float64)
        for row, document in enumerate(documents):
            terms = Counter(tokenize(document))
            lengths[row] = sum(terms.values())
            for term, count in terms.items():
                rows.append(row)
                cols.append(vocabulary.setdefault(term, len(vocabulary)))
                counts.append(count)
        tf = sparse.csr_matrix(
            (np.array(counts, dtype=np.float64), (rows, cols)),
            shape=(len(documents), max(1, len(vocabulary))),
        )
        n_docs = max(1, len(documents))
        df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=tf.shape[1])
        self.idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
        norm = k1 * (1 - b + b * lengths / max(1e-9, lengths.mean() if len(lengths) else 1.0))
        tf = tf.tocoo()
        weights = tf.data * (k1 + 1) / (tf.data + norm[tf.row])
        self.matrix = sparse.csr_matrix((weights, (tf.row, tf.col)), shape=tf.shape)
        self.vocabulary = vocabulary

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (0 where no term matches)."""
        query_vector = np.zeros(self.matrix.shape[1])
        for term, count in Counter(tokenize(query)).items():
            index = self.vocabulary.get(term)
            if index is not None:
                query_vector[index] += self.idf[index] * count
        return np.asarray(self.matrix @ query_vector).ravel()
