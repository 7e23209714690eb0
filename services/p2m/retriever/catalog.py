"""Dataset and model catalogs: JSONL (optionally gzipped) files read into frozen records."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2m.common.errors import InvalidInput, NotFound

# Tags that say nothing about the task.
_NOISE_TAG_PREFIXES = ("region:", "size_categories:", "format:", "library:", "modality:")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the catalog; only ``name`` and ``description`` are required."""

    name: str
    description: str
    task_categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    language: tuple[str, ...] = ()
    license: tuple[str, ...] = ()
    downloads: int | None = None  # None: the catalog's source did not count them
    card_text: str = ""
    pretty_name: str = ""
    configs: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    config_names: tuple[str, ...] = ()
    size_category: str = ""
    gated: bool = False  # the hub asks people to accept conditions before downloading

    def fields(self) -> dict[str, str]:
        """The searchable text of each field, by field name."""
        return {
            "name": self.name.replace("/", " ").replace("_", " ").replace("-", " "),
            "pretty_name": self.pretty_name,
            "description": self.description,
            "task_categories": " ".join(self.task_categories).replace("-", " "),
            "tags": " ".join(t for t in self.tags if not t.startswith(_NOISE_TAG_PREFIXES)),
        }

    def document(self) -> str:
        """The text BM25 indexes: every searchable field (the long card text left out)."""
        return "\n".join(text for text in self.fields().values() if text)

    def summary(self) -> str:
        """The text the dense encoder reads: name, description start and task categories.

        Short on purpose: the encoder reads 256 tokens at most, and a long card dilutes the
        description (measured: SQuAD ranked 167th for the paper's QA prompt with the card text
        embedded, 39th without).
        """
        fields = self.fields()
        parts = [
            self.pretty_name or fields["name"],
            self.description[:600],
            fields["task_categories"],
        ]
        return "\n".join(part for part in parts if part)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the catalog."""

    model_id: str
    description: str
    downloads: int = 0
    size_bytes: int = 0
    pipeline_tag: str = ""
    tags: tuple[str, ...] = ()
    license: tuple[str, ...] = ()
    language: tuple[str, ...] = ()
    architecture_guess: str = ""


@dataclass(frozen=True)
class Catalog:
    """A catalog file's records and the sha256 of its bytes (the key of derived indexes)."""

    path: Path
    sha256: str
    records: tuple[Any, ...]


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(
                        "catalog", f"{path}:{number} is not JSON: {exc.msg}"
                    ) from exc


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value or () if v)


def _count(value: Any) -> int | None:
    """A non-negative count, or None when absent."""
    return None if value is None else max(0, int(value))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise NotFound(f"catalog not found: {path}")


def load_datasets(path: Path) -> Catalog:
    """Read a dataset catalog (``name`` and ``description`` per line, more fields used if there).

    Raises:
        NotFound: No such file.
        InvalidInput: A line is not JSON or lacks ``name``.
    """
    _check_file(path)
    records = []
    for number, row in _lines(path):
        name = row.get("name") or row.get("id")
        if not name:
            raise InvalidInput("catalog", f"{path}:{number} has no name")
        records.append(
            DatasetEntry(
                name=str(name),
                description=str(row.get("description") or ""),
                task_categories=_strings(row.get("task_categories")),
                tags=_strings(row.get("tags")),
                language=_strings(row.get("language")),
                license=_strings(row.get("license")),
                downloads=_count(row.get("downloads")),
                card_text=str(row.get("card_text") or ""),
                pretty_name=str(row.get("pretty_name") or ""),
                configs=tuple(c for c in row.get("configs") or () if isinstance(c, dict)),
                config_names=_strings(row.get("config_names")),
                size_category=", ".join(_strings(row.get("size_categories"))),
                gated=bool(row.get("gated")),
            )
        )
    return Catalog(path, _file_sha256(path), tuple(records))


def load_models(path: Path) -> Catalog:
    """Read a model catalog (``model_id`` and ``description`` per line).

    Raises:
        NotFound: No such file.
        InvalidInput: A line is not JSON or lacks ``model_id``.
    """
    _check_file(path)
    records = []
    for number, row in _lines(path):
        model_id = row.get("model_id") or row.get("id")
        if not model_id:
            raise InvalidInput("catalog", f"{path}:{number} has no model_id")
        records.append(
            ModelEntry(
                model_id=str(model_id),
                description=str(row.get("description") or ""),
                downloads=int(row.get("downloads") or 0),
                size_bytes=int(row.get("size_bytes") or 0),
                pipeline_tag=str(row.get("pipeline_tag") or ""),
                tags=_strings(row.get("tags")),
                license=_strings(row.get("license")),
                language=_strings(row.get("language")),
                architecture_guess=str(row.get("architecture_guess") or ""),
            )
        )
    return Catalog(path, _file_sha256(path), tuple(records))
