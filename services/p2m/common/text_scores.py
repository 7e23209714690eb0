"""Exact Match and ChrF++ of predictions against references: the evaluator's two cheap metrics.

Here, not in the evaluator, because the trainer scores its validation sample with them as well.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles, single spaces."""
    lowered = text.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punctuation)
    return " ".join(no_articles.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both are equal after ``normalize_answer``, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


@lru_cache(maxsize=1)
def _chrf() -> Any:
    from sacrebleu.metrics import CHRF as SacreChrf  # noqa: N811 (name clash with the constant)

    return SacreChrf(word_order=2)


def chrf_sentence(prediction: str, reference: str) -> float:
    """ChrF++ of one prediction against its reference, 0..100."""
    return float(_chrf().sentence_score(prediction, [reference]).score)


def chrf_corpus(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus ChrF++, 0..100: n-gram statistics summed over all pairs, then one F-score."""
    if not predictions:
        return 0.0
    return float(_chrf().corpus_score(list(predictions), [list(references)]).score)


def chrf_signature() -> str:
    """The reproducibility signature (sacrebleu's) of the ChrF++ settings used."""
    return str(_chrf().get_signature())
