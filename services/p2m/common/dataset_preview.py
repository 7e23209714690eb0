"""One line that tells a person what a dataset holds (a search's preview), for CLIs and choices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

_SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


class PreviewLike(Protocol):
    """The preview fields read here: the retriever's ``Preview`` or the proto's message."""

    @property
    def split_rows(self) -> Mapping[str, int]:
        """Rows per split."""

    @property
    def columns(self) -> Sequence[str]:
        """Column names."""

    @property
    def licenses(self) -> Sequence[str]:
        """Stated licences."""

    @property
    def gated(self) -> bool:
        """Gated on the hub."""

    @property
    def source(self) -> str:
        """Where it loads from: local, hub, or empty."""

    @property
    def size_category(self) -> str:
        """The card's size category."""


def preview_line(preview: PreviewLike) -> str:
    """E.g. ``train 10,003 · test 3,080 | columns: text, label | cc-by-4.0 | local copy``."""
    if preview.split_rows:
        splits = sorted(preview.split_rows.items(), key=lambda item: _SPLIT_ORDER.get(item[0], 9))
        rows = " · ".join(f"{split} {count:,}" for split, count in splits)
    else:
        rows = preview.size_category or "rows unknown"
    columns = ", ".join(list(preview.columns)[:8]) or "unknown"
    licence = ", ".join(preview.licenses) or "licence not stated"
    where = {"local": "local copy", "hub": "from the hub"}.get(
        preview.source, "cannot be loaded here"
    )
    parts = [rows, f"columns: {columns}", licence, where]
    if preview.gated:
        parts.append("gated")
    return " | ".join(parts)
