"""The dataset search's fused ranking over a small catalog, with the shipped encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
from p2m.retriever.catalog import DatasetEntry, load_datasets
from p2m.retriever.dataset_search import DatasetHit, DatasetSearch, FusionWeights, popularity
from p2m.retriever.rerank import fuse

REVIEWS = "Movie reviews labelled positive or negative, for sentiment classification."
FILLERS = [
    ("cats", "Photos of cats and dogs for image classification.", 5_000_000),
    ("weather", "Hourly temperature and rainfall readings from weather stations.", 300),
    ("recipes", "Cooking recipes with ingredients and steps.", 2_000),
    ("law", "Court decisions with their verdicts.", 50),
]


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    return SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)


def _search(tmp_path: Path, rows: list[dict], encoder: SentenceEncoder, **weights) -> DatasetSearch:
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return DatasetSearch(load_datasets(path), encoder, tmp_path / "cache", FusionWeights(**weights))


def _rows(reviews: list[tuple[str, int | None]]) -> list[dict]:
    rows = [
        {"name": n, "pretty_name": "Movie Reviews", "description": REVIEWS, "downloads": d}
        for n, d in reviews
    ]
    return rows + [{"name": n, "description": t, "downloads": d} for n, t, d in FILLERS]


def test_of_two_equally_relevant_datasets_the_popular_one_ranks_first(tmp_path, minilm):
    search = _search(tmp_path, _rows([("obscure", 12), ("popular", 90_000)]), minilm)
    query = "classify the sentiment of a movie review"

    def names(ranking) -> list[str]:
        return [h.entry.name for h in ranking.hits]

    assert names(search.search(query, 2, collapse=False)) == ["popular", "obscure"]
    # Without the prior the catalog's order breaks the tie.
    assert names(search.search(query, 2, "dense", collapse=False)) == ["obscure", "popular"]
    plain = _search(tmp_path, _rows([("obscure", 12), ("popular", 90_000)]), minilm, popularity=0)
    assert names(plain.search(query, 2, collapse=False)) == ["obscure", "popular"]
    # The same description twice is one dataset: the popular copy shows, naming the other.
    first = search.search(query, 2).hits[0]
    assert (first.entry.name, first.variants) == ("popular", ("obscure",))


def test_popularity_does_not_outrank_relevance(tmp_path, minilm):
    search = _search(tmp_path, _rows([("reviews", 40)]), minilm)
    hits = search.search("classify the sentiment of a movie review", 5).hits
    assert hits[0].entry.name == "reviews"
    assert hits[0].score > hits[1].score
    assert search.search("pictures of pets", 1).hits[0].entry.name == "cats"


def test_uncounted_downloads_count_as_the_median():
    z = popularity([10, None, 1000, 100])
    assert z[1] == pytest.approx(z[3])  # the median of 10, 100 and 1000
    assert z[2] > z[3] > z[0]
    assert not popularity([None, None]).any()
    assert not popularity([7, 7, 7]).any()


def test_the_llms_grades_reorder_candidates_by_their_weight():
    hits = [
        DatasetHit(DatasetEntry(name, ""), score, 0.0, 0.0, ())
        for name, score in (("first", 2.0), ("second", 1.0), ("third", 0.75))
    ]
    grades = [0, 3, None]  # None: the LLM could not judge it, so it gets the middle grade
    assert [h.entry.name for h in fuse(hits, grades, 0.25)] == ["first", "second", "third"]
    fused = fuse(hits, grades, 1.0)
    assert [h.entry.name for h in fused] == ["second", "third", "first"]
    assert [h.grade for h in fused] == [3, None, 0]
    assert fused[1].score == pytest.approx(0.75 + 1.5)
