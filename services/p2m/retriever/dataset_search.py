"""Dataset search: BM25 and dense retrieval over a catalog, fused by reciprocal rank."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2m.common.encoder import SentenceEncoder
from p2m.common.types import TaskSpec
from p2m.retriever.bm25 import BM25, tokenize
from p2m.retriever.catalog import Catalog, DatasetEntry
from p2m.retriever.encoder import cached_embeddings

log = logging.getLogger(__name__)

RRF_K = 60
# Bump when the indexed text changes, so cached embeddings are rebuilt.
INDEX_VERSION = 2
METHODS = ("fused", "bm25", "dense")


@dataclass(frozen=True)
class DatasetHit:
    """One search result: the entry, its fused score and the evidence behind it."""

    entry: DatasetEntry
    score: float
    bm25: float
    dense: float
    matched_fields: tuple[str, ...]


def task_query(task: TaskSpec) -> str:
    """The search text of a task: its (English) instruction.

    Demonstrations are left out: their content (a Super Bowl passage, a date) pulls the search
    toward their topic rather than the task (measured on the paper's prompts).
    """
    return task.instruction


class DatasetSearch:
    """Ranks a catalog's datasets for a query; embeddings are cached by catalog hash."""

    def __init__(self, catalog: Catalog, encoder: SentenceEncoder, cache_dir: Path) -> None:
        """Index ``catalog`` (BM25 now; embeddings from cache or computed once)."""
        self.catalog = catalog
        self._entries: tuple[DatasetEntry, ...] = catalog.records
        self._bm25 = BM25([entry.document() for entry in self._entries])
        summaries = [entry.summary() for entry in self._entries]
        self._encoder = encoder
        key = hashlib.sha256(
            f"{catalog.sha256}:{encoder.name}:{INDEX_VERSION}".encode()
        ).hexdigest()[:32]
        self._vectors = cached_embeddings(cache_dir, f"datasets-{key}", summaries, encoder)
        log.info("dataset index ready", extra={"datasets": len(summaries)})

    def search(self, query: str, top_k: int = 25, method: str = "fused") -> list[DatasetHit]:
        """The ``top_k`` best datasets for ``query`` by ``method`` (fused, bm25 or dense)."""
        if not self._entries:
            return []
        bm25 = self._bm25.scores(query)
        dense = self._vectors @ self._encoder.encode([query])[0]
        if method == "bm25":
            fused = bm25
        elif method == "dense":
            fused = dense
        else:
            fused = _rrf(bm25, only_positive=True) + _rrf(dense)
        order = np.argsort(-fused, kind="stable")[:top_k]
        terms = set(tokenize(query))
        return [
            DatasetHit(
                entry=self._entries[i],
                score=float(fused[i]),
                bm25=float(bm25[i]),
                dense=float(dense[i]),
                matched_fields=_matched(self._entries[i], terms),
            )
            for i in order
        ]


def _rrf(scores: np.ndarray, only_positive: bool = False) -> np.ndarray:
    """Reciprocal-rank contribution 1 / (k + rank) of each document (rank from 1)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    contribution = 1.0 / (RRF_K + ranks)
    if only_positive:
        contribution[scores <= 0] = 0.0
    return contribution


def _matched(entry: DatasetEntry, terms: set[str]) -> tuple[str, ...]:
    """Fields of ``entry`` that share a term with the query."""
    return tuple(
        name for name, text in entry.fields().items() if text and terms & set(tokenize(text))
    )
