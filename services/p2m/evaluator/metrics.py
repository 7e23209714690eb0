"""Scores of predictions against references: Exact Match, ChrF++ and BERTScore F1.

Scales differ by metric, as each is usually reported:

* ``exact_match``: per example 1.0 or 0.0 after SQuAD v1.1 normalisation; the aggregate is the
  fraction of exact matches, 0..1.
* ``chrf``: ChrF++ (sacrebleu ``CHRF(word_order=2)``: character 6-grams, word 2-grams, beta 2),
  0..100; per example the sentence score, the aggregate the corpus score (statistics summed over
  all examples, not a mean of sentence scores).
* ``bertscore_f1``: BERTScore F1 (bert-score, no idf, no baseline rescaling), about 0..1; the
  aggregate is the mean. The encoder used is named in the notes.

Nothing here needs the network: the libraries are used directly (``evaluate.load`` would fetch
metric scripts from the hub), and BERTScore runs on a local encoder folder unless asked for a hub
model while the hub is reachable.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2m.common.errors import InvalidInput
from p2m.common.text_scores import (
    chrf_corpus,
    chrf_sentence,
    chrf_signature,
    exact_match,
)

EXACT_MATCH = "exact_match"
CHRF = "chrf"
BERTSCORE_F1 = "bertscore_f1"
METRICS = (EXACT_MATCH, CHRF, BERTSCORE_F1)
DEFAULT_METRICS = (EXACT_MATCH, CHRF)
MAX_METRICS = 8


def check_metrics(names: Sequence[str], field: str = "options.metrics") -> tuple[str, ...]:
    """The metric names to compute, checked; empty means ``DEFAULT_METRICS``.

    Raises:
        InvalidInput: An unknown name (named in the message), a repeat, or more than 8 names.
    """
    if not names:
        return DEFAULT_METRICS
    if len(names) > MAX_METRICS:
        raise InvalidInput(field, f"at most {MAX_METRICS} metrics, got {len(names)}")
    seen: set[str] = set()
    for name in names:
        if name not in METRICS:
            raise InvalidInput(
                field, f"unknown metric {name[:100]!r}; choose from {', '.join(METRICS)}"
            )
        if name in seen:
            raise InvalidInput(field, f"metric {name!r} is named twice")
        seen.add(name)
    return tuple(names)


@dataclass(frozen=True)
class BertScoreEncoder:
    """The encoder BERTScore embeds with.

    Attributes:
        name: How the report names it (a hub id).
        model_type: What bert-score loads: a local folder or a hub id.
        num_layers: Which layer's embeddings are compared (bert-score needs it for a folder,
            since its table of tuned layers is keyed by hub id).
    """

    name: str
    model_type: str
    num_layers: int


#: BERTScore's usual multilingual encoder and its tuned layer (bert-score's ``model2layers``).
HUB_BERTSCORE_ENCODER = BertScoreEncoder("xlm-roberta-large", "xlm-roberta-large", 17)


def shipped_bertscore_encoder() -> BertScoreEncoder:
    """all-MiniLM-L6-v2 from its pip package, using its last (6th) layer.

    Raises:
        FailedPrecondition: The package is not installed.
    """
    from p2m.common.encoder import SHIPPED_ENCODER_NAME, shipped_encoder_path

    path = shipped_encoder_path()
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return BertScoreEncoder(SHIPPED_ENCODER_NAME, str(path), int(config["num_hidden_layers"]))


def choose_bertscore_encoder(prefer_hub_model: bool, hub_offline: bool) -> BertScoreEncoder:
    """XLM-R large when asked for and the hub may be used; else the shipped all-MiniLM-L6-v2."""
    if prefer_hub_model and not hub_offline:
        return HUB_BERTSCORE_ENCODER
    return shipped_bertscore_encoder()


class BertScore:
    """BERTScore F1 with one encoder, loaded on first use and shared by threads."""

    def __init__(
        self, encoder: BertScoreEncoder, device: str = "cpu", batch_size: int = 32
    ) -> None:
        """Score with ``encoder`` on ``device``, ``batch_size`` pairs per forward pass."""
        self.encoder = encoder
        self._device = device
        self._batch_size = batch_size
        self._scorer: Any = None
        self._lock = threading.Lock()

    @property
    def notes(self) -> dict[str, str]:
        """What a report says about how BERTScore was computed."""
        return {
            "bertscore_model": self.encoder.name,
            "bertscore_layers": str(self.encoder.num_layers),
        }

    def f1(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """F1 per pair. A blank side scores 0.0 (1.0 when both are blank) without the encoder.

        bert-score cannot encode an empty string with current tokenizers, and an empty answer
        shares no meaning with a reference anyway.
        """
        scores = [
            1.0 if not p.strip() and not r.strip() else 0.0
            for p, r in zip(predictions, references, strict=True)
        ]
        todo = [i for i, p in enumerate(predictions) if p.strip() and references[i].strip()]
        if not todo:
            return scores
        with self._lock:
            scorer = self._load()
            _, _, f1 = scorer.score(
                [predictions[i] for i in todo],
                [references[i] for i in todo],
                verbose=False,
                batch_size=self._batch_size,
            )
        for i, value in zip(todo, f1.tolist(), strict=True):
            scores[i] = float(value)
        return scores

    def _load(self) -> Any:
        if self._scorer is None:
            from bert_score import BERTScorer  # heavy: on first use
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._scorer = BERTScorer(
                model_type=self.encoder.model_type,
                num_layers=self.encoder.num_layers,
                device=self._device,
                use_fast_tokenizer=True,
            )
        return self._scorer


@dataclass(frozen=True)
class Scores:
    """Scores of a set of predictions.

    Attributes:
        per_example: One ``{metric: score}`` per prediction, in order.
        aggregate: ``{metric: score}`` over all predictions (see the module's scales).
        notes: How the scores were computed (ChrF++ signature, BERTScore encoder).
    """

    per_example: tuple[dict[str, float], ...]
    aggregate: dict[str, float]
    notes: dict[str, str]


def score(
    predictions: Sequence[str],
    references: Sequence[str],
    metrics: Sequence[str],
    bertscore: BertScore | None = None,
) -> Scores:
    """Score ``predictions`` against ``references`` (same length) with ``metrics``.

    Args:
        predictions: What the model wrote.
        references: The expected outputs.
        metrics: Names from ``METRICS``; checked as ``check_metrics`` does (empty: the defaults).
        bertscore: The BERTScore scorer; None builds one on the shipped encoder when needed.

    Raises:
        InvalidInput: An unknown metric (named) or inputs of different lengths.
    """
    names = check_metrics(metrics)
    if len(predictions) != len(references):
        raise InvalidInput("predictions", "must be as many as the references")
    columns: dict[str, list[float]] = {}
    aggregate: dict[str, float] = {}
    notes: dict[str, str] = {}
    n = len(predictions)
    for name in names:
        if name == EXACT_MATCH:
            columns[name] = [
                exact_match(p, r) for p, r in zip(predictions, references, strict=True)
            ]
            aggregate[name] = sum(columns[name]) / n if n else 0.0
            notes["exact_match"] = "SQuAD v1.1 normalisation; fraction 0..1"
        elif name == CHRF:
            columns[name] = [
                chrf_sentence(p, r) for p, r in zip(predictions, references, strict=True)
            ]
            aggregate[name] = chrf_corpus(predictions, references)
            notes["chrf"] = f"ChrF++ corpus score 0..100 ({chrf_signature()})"
        else:
            scorer = bertscore or BertScore(shipped_bertscore_encoder())
            columns[name] = scorer.f1(predictions, references)
            aggregate[name] = sum(columns[name]) / n if n else 0.0
            notes.update(scorer.notes)
    per_example = tuple({name: columns[name][i] for name in names} for i in range(n))
    return Scores(per_example, aggregate, notes)
