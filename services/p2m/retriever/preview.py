"""What a dataset holds before it is downloaded: splits, columns, a sample row, licence, gating."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from p2m.retriever.catalog import DatasetEntry
from p2m.retriever.loaders import LoadedDataset

SAMPLE_CHARS = 300


@dataclass(frozen=True)
class Preview:
    """A dataset as a search shows it (the fields of the proto's ``DatasetPreview``)."""

    split_rows: dict[str, int] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    sample_row: dict[str, str] = field(default_factory=dict)
    licenses: tuple[str, ...] = ()
    gated: bool = False
    loadable: bool = False
    source: str = ""  # "local", "hub" or "" (cannot be loaded now)
    configs: tuple[str, ...] = ()
    size_category: str = ""
    downloads: int = 0


def catalog_preview(entry: DatasetEntry, source: str) -> Preview:
    """The preview the catalog's record gives; ``source`` says where it would load from."""
    described = [c for c in entry.configs if c.get("columns")]
    first = described[0] if described else {}
    return Preview(
        split_rows=_split_rows(entry.configs),
        columns=tuple(str(c) for c in first.get("columns", ())),
        sample_row=_sample(described),
        licenses=entry.license,
        gated=entry.gated,
        loadable=bool(source),
        source=source,
        configs=tuple(n for n in entry.config_names if n != "default"),
        size_category=entry.size_category,
        downloads=entry.downloads or 0,
    )


def with_local_copy(preview: Preview, loaded: LoadedDataset) -> Preview:
    """``preview`` with the splits, columns and first row read from a local copy."""
    first_split = next((rows for rows in loaded.splits.values() if rows), [])
    return replace(
        preview,
        split_rows={split: len(rows) for split, rows in loaded.splits.items()},
        columns=loaded.columns,
        sample_row=_texts(first_split[0]) if first_split else {},
        loadable=True,
        source="local",
    )


def _split_rows(configs: tuple[dict[str, Any], ...]) -> dict[str, int]:
    """Rows per split of the first configuration that counts them."""
    for config in configs:
        splits = config.get("splits")
        if isinstance(splits, dict) and splits and all(isinstance(n, int) for n in splits.values()):
            return {str(k): int(v) for k, v in splits.items()}
    return {}


def _sample(configs: list[dict[str, Any]]) -> dict[str, str]:
    """The first sample row the configurations hold (a mapping, or one as a JSON string)."""
    for config in configs:
        row = config.get("sample_row")
        if isinstance(row, str):
            try:
                row = json.loads(row)
            except json.JSONDecodeError:
                continue
        if isinstance(row, dict) and row:
            return _texts(row)
    return {}


def _texts(row: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v)[:SAMPLE_CHARS] for k, v in row.items()}
