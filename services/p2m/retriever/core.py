"""The retriever's core: catalogs, indexes, the local model store and dataset loading."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p2m.common.artifacts import ArtifactStore
from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
from p2m.common.errors import InvalidInput, NotFound
from p2m.common.paths import readable_path
from p2m.common.settings import Settings
from p2m.local_llm.provider import LLMProvider
from p2m.retriever.catalog import Catalog, DatasetEntry, load_datasets, load_models
from p2m.retriever.dataset_search import DatasetHit, DatasetSearch
from p2m.retriever.loaders import LoadedDataset, load_hub, load_local, locate
from p2m.retriever.model_search import LocalModel
from p2m.retriever.preview import Preview, catalog_preview, with_local_copy
from p2m.retriever.rerank import Reranked, rerank

log = logging.getLogger(__name__)

DATASET_CATALOG_NAMES = ("hf_datasets.jsonl.gz", "hf_datasets.jsonl")
MODEL_CATALOG_NAMES = ("hf_models.jsonl.gz", "hf_models.jsonl")


def find_catalog(catalog_dir: str, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` present in ``catalog_dir`` (None when unset or absent)."""
    if not catalog_dir:
        return None
    for name in names:
        path = Path(catalog_dir) / name
        if path.is_file():
            return path
    return None


def hub_reachable(settings: Settings) -> bool:
    """Whether models and datasets may be fetched from the hub."""
    return not (settings.offline)


@dataclass(frozen=True)
class FoundDatasets:
    """A dataset search's answer: the hits with their previews, and what the search did."""

    catalog_size: int
    hits: list[DatasetHit]
    previews: list[Preview]  # empty when the search was asked for none
    gated_left_out: int
    first_stage_seconds: float
    reranked: Reranked | None = None


class Retriever:
    """Core of the retriever: catalogs and indexes loaded once and kept."""

    def __init__(
        self,
        settings: Settings,
        provider: LLMProvider,
        store: ArtifactStore,
        path_roots: Sequence[Path] | None = None,
    ) -> None:
        """Read paths from ``settings``; load nothing until first asked.

        ``path_roots``: the folders a request may name files in (a dataset, a catalog); None
        (a person's own CLI) lets any path through.
        """
        self.settings = settings
        self.path_roots = path_roots
        self.provider = provider
        self.store = store
        self.encoder = SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)
        self._dataset_search: dict[Path, DatasetSearch] = {}
        self._model_catalogs: dict[Path, Catalog] = {}
        self._local_previews: dict[str, Preview] = {}
        self._lock = asyncio.Lock()

    def _catalog_path(self, catalog_path: str, names: tuple[str, ...]) -> Path | None:
        """The requested catalog file (it must be readable), else the configured one, else None."""
        if not catalog_path:
            return find_catalog(self.settings.catalog_dir, names)
        path = readable_path(catalog_path, self.path_roots, "catalog_path")
        if not path.is_file():
            raise InvalidInput("catalog_path", f"cannot read {catalog_path}")
        return path

    async def dataset_search(self, catalog_path: str) -> DatasetSearch | None:
        """The search over ``catalog_path`` (or the configured catalog); None without one."""
        path = self._catalog_path(catalog_path, DATASET_CATALOG_NAMES)
        if path is None:
            return None
        async with self._lock:
            if path not in self._dataset_search:
                catalog = await asyncio.to_thread(load_datasets, path)
                cache = self.settings.cache_dir("retriever")
                self._dataset_search[path] = await asyncio.to_thread(
                    DatasetSearch, catalog, self.encoder, cache
                )
            return self._dataset_search[path]

    async def find_datasets(
        self,
        query: str,
        top_k: int,
        catalog_path: str = "",
        include_gated: bool = False,
        rerank_candidates: int = 0,
        with_previews: bool = True,
    ) -> FoundDatasets | None:
        """The ``top_k`` best datasets for ``query`` with previews; None without a catalog.

        ``rerank_candidates`` > 0: the LLM reranks that many first-stage candidates.
        ``with_previews`` False: no previews (no local copy is read), for a choice made unseen.
        """
        search = await self.dataset_search(catalog_path)
        if search is None:
            return None
        started = time.monotonic()
        ranking = await asyncio.to_thread(
            search.search, query, rerank_candidates or top_k, include_gated=include_gated
        )
        first_stage_s = time.monotonic() - started
        hits, reranked = ranking.hits, None
        if rerank_candidates:
            reranked = await rerank(await self.provider.client(), query, hits)
            hits = reranked.hits[:top_k]
        return FoundDatasets(
            catalog_size=len(search.catalog.records),
            hits=hits,
            previews=[await self.preview(h.entry) for h in hits] if with_previews else [],
            gated_left_out=ranking.gated_left_out,
            first_stage_seconds=first_stage_s,
            reranked=reranked,
        )

    async def model_catalog(self, catalog_path: str) -> Catalog | None:
        """The model catalog at ``catalog_path`` (or the configured one); None without one."""
        path = self._catalog_path(catalog_path, MODEL_CATALOG_NAMES)
        if path is None:
            return None
        async with self._lock:
            if path not in self._model_catalogs:
                self._model_catalogs[path] = await asyncio.to_thread(load_models, path)
            return self._model_catalogs[path]

    def local_models(self) -> list[LocalModel]:
        """The local store's models and, with the hub offline, the shipped ones not imported yet.

        The trainer imports a shipped model into the store on first use; online, the catalog's
        entries stand for them. The shipped alternatives to the default student are marked so,
        imported or not, so that an import does not change how they rank.
        """
        from p2m.common.model_store import (  # imports transformers: on demand
            ModelStore,
            shipped_alternatives,
        )

        store = ModelStore(self.settings.models_dir)
        alternatives = shipped_alternatives()
        stored = [(m, False) for m in store.list()]
        importable = () if hub_reachable(self.settings) else store.importable()
        return [
            LocalModel(
                m.name,
                m.description,
                m.architecture,
                m.size_bytes,
                m.license,
                "" if shipped else str(m.path),
                m.languages,
                shipped=shipped,
                alternative=m.name in alternatives,
            )
            for m, shipped in [*stored, *((m, True) for m in importable)]
        ]

    async def preview(self, entry: DatasetEntry) -> Preview:
        """What ``entry`` holds: the catalog's record, or its local copy's splits and first row."""
        local = self._local_copy(entry.name, strict=False)
        source = "local" if local else "hub" if hub_reachable(self.settings) else ""
        preview = catalog_preview(entry, source)
        if local is None:
            return preview
        if entry.name not in self._local_previews:
            try:
                loaded = await asyncio.to_thread(load_local, local, entry.name)
            except (InvalidInput, NotFound) as error:
                log.warning(
                    "cannot preview the local copy",
                    extra={"dataset": entry.name, "error": str(error)},
                )
                return preview
            self._local_previews[entry.name] = with_local_copy(preview, loaded)
        return self._local_previews[entry.name]

    def _local_copy(self, name: str, *, strict: bool = True) -> Path | None:
        """The local copy of dataset ``name`` in the datasets folder; None without one.

        Raises:
            InvalidInput: ``name`` cannot name a dataset (only when ``strict``; else None).
        """
        datasets_dir = Path(self.settings.datasets_dir) if self.settings.datasets_dir else None
        try:
            return locate(name, datasets_dir)
        except InvalidInput:
            if strict:
                raise
            return None

    def can_load(self, name: str) -> bool:
        """Whether ``name`` can be loaded now: a local copy, or the hub is reachable."""
        try:
            return self._local_copy(name) is not None or hub_reachable(self.settings)
        except InvalidInput:
            return False

    async def load_dataset(self, name: str, config: str) -> LoadedDataset:
        """Find ``name`` locally (a path, or the datasets folder), else on the hub."""
        if Path(name).is_absolute():
            path = readable_path(name, self.path_roots, "dataset.name")
            if not path.exists():
                raise NotFound(f"no dataset file or folder at {name}")
            return await asyncio.to_thread(load_local, path, name)
        local = self._local_copy(name)
        if local is not None:
            return await asyncio.to_thread(load_local, local, name)
        if not hub_reachable(self.settings):
            raise NotFound(
                f"dataset {name!r} has no local copy in "
                f"{self.settings.datasets_dir or '(no datasets folder)'} "
                "and the hub is unreachable"
            )
        return await asyncio.to_thread(load_hub, name, config)
