"""Shared fixtures: the real data in ../shared/data and a real local LLM endpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, ServiceProcess, xdist_worker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _pin_to_own_cores() -> None:
    """Under pytest-xdist, keep each worker (and every process it starts) on cores of its own.

    A llama.cpp endpoint, Ray and torch each size their threads to the cores a process may use
    (``p2m.common.procs.usable_cpus``); two workers' threads on the same cores wait on each
    other and slow to a crawl (a 40 s generation took over 6 minutes).
    """
    worker = xdist_worker()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if worker is not None and 1 < workers <= len(cores):
        os.sched_setaffinity(0, cores[worker::workers])


_pin_to_own_cores()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For pytest-xdist's ``--dist loadgroup``: a file's tests run on one worker, in order.

    The end-to-end files, each a whole stack, run one after another on one worker.
    """
    for item in items:
        parts = item.path.relative_to(REPO).parts
        group = "e2e" if parts[:2] == ("tests", "e2e") else "/".join(parts)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (P2M_SHARED_DATA, which the Makefile sets; else ../shared/data)."""
    path = Path(os.environ.get("P2M_SHARED_DATA") or REPO.parent / "shared" / "data")
    if not (path / "README.md").exists():
        pytest.skip(f"shared data not found at {path}; set P2M_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def paper_prompts(shared_data: Path) -> dict[str, Any]:
    """The three Prompt2Model paper prompts, with their reference splits."""
    data = json.loads((shared_data / "benchmarks" / "prompts.json").read_text(encoding="utf-8"))
    return dict(data["tasks"])


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("p2m-data")


@pytest.fixture(scope="session")
def local_llm(session_dir: Path) -> Iterator[ServiceProcess]:
    """The real embedded endpoint (llama.cpp serving SmolLM2) on a loopback port."""
    with ServiceProcess("llm", session_dir, "--local-llm", "smollm2") as llm:
        yield llm


@pytest.fixture(scope="session")
def parser_service(
    local_llm: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The real parser service on a loopback port, using the local LLM endpoint."""
    data_dir = tmp_path_factory.mktemp("parser")
    with ServiceProcess("parser", data_dir, "--llm-base-url", local_llm.base_url) as service:
        yield service


@pytest.fixture(scope="session")
def retriever_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose local model store holds SmolLM2 (dequantised from the shipped GGUF).

    Shared by the retriever's tests, so the store is filled and the catalog embeddings are
    computed once per session.
    """
    from p2m.common.model_store import ModelStore

    data_dir = tmp_path_factory.mktemp("retriever-data")
    ModelStore(data_dir / "models").import_shipped("smollm2")
    return data_dir


@pytest.fixture(scope="session")
def catalog_index(retriever_data_dir: Path) -> Path | None:
    """The dataset catalog's index cache, built once per session in ``retriever_data_dir``.

    A retriever builds (or loads) this index before it serves; a fresh data dir seeded with a
    copy (``tests.support.seed_catalog_index``) spares each new retriever that half-minute on
    2 cores. None when no catalog is configured (P2M_CATALOG_DIR).
    """
    from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
    from p2m.retriever.catalog import load_datasets
    from p2m.retriever.core import DATASET_CATALOG_NAMES, find_catalog
    from p2m.retriever.dataset_search import DatasetSearch

    catalog = find_catalog(os.environ.get("P2M_CATALOG_DIR", ""), DATASET_CATALOG_NAMES)
    if catalog is None:
        return None
    cache = retriever_data_dir / "cache" / "retriever"
    encoder = SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)
    DatasetSearch(load_datasets(catalog), encoder, cache)
    return cache
