"""The dataset search ranks the usual dataset of everyday prompts high in the real catalog.

The prompts (tests/data/dataset_prompts.json) were written before the ranking was tuned and
are not tuned on; each names the datasets anyone in the field would name first for its task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
from p2m.parser.markers import parse_marked
from p2m.retriever.catalog import load_datasets
from p2m.retriever.core import DATASET_CATALOG_NAMES, find_catalog
from p2m.retriever.dataset_search import DatasetSearch

PROMPTS = Path(__file__).parents[1] / "data" / "dataset_prompts.json"


@pytest.fixture(scope="module")
def search(catalog_index: Path | None) -> DatasetSearch:
    catalog = find_catalog(os.environ.get("P2M_CATALOG_DIR", ""), DATASET_CATALOG_NAMES)
    if catalog is None or catalog_index is None:
        pytest.skip("no dataset catalog (P2M_CATALOG_DIR)")
    encoder = SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)
    return DatasetSearch(load_datasets(catalog), encoder, catalog_index)


def _rank(search: DatasetSearch, instruction: str, expected: list[str]) -> int | None:
    names = [hit.entry.name for hit in search.search(instruction, 50).hits]
    return next((i + 1 for i, name in enumerate(names) if name in expected), None)


def test_most_everyday_prompts_find_their_usual_dataset_in_the_top_5(search: DatasetSearch):
    prompts = json.loads(PROMPTS.read_text(encoding="utf-8"))
    ranks = {p["task"]: _rank(search, p["instruction"], p["expected"]) for p in prompts}
    found = [task for task, rank in ranks.items() if rank is not None and rank <= 5]
    assert len(prompts) >= 10
    assert len(found) >= 10, ranks


def test_the_papers_squad_prompt_finds_squad_in_the_top_3(search: DatasetSearch, paper_prompts):
    marked = parse_marked(paper_prompts["squad"]["full_prompt"])
    assert marked is not None
    rank = _rank(search, marked.instruction, ["squad"])
    assert rank is not None and rank <= 3, rank


def test_a_dataset_and_its_mirrors_are_one_hit(search: DatasetSearch):
    hits = search.search("banking customer intent classification", 10).hits
    names = [hit.entry.name for hit in hits]
    banking = hits[names.index("banking77")]
    assert "PolyAI/banking77" in banking.variants and "PolyAI/banking77" not in names
    everything = [n for hit in hits for n in (hit.entry.name, *hit.variants)]
    assert len(everything) == len(set(everything))
