"""Read a dataset's rows from a local folder or file (or the hub when it is reachable).

Local forms understood: CSV, JSONL or JSON files named by split (``train.csv``,
``validation.jsonl``, ...); line-aligned parallel text files ``<split>.<lang>[.<shard>]``
(``train.en.000`` + ``train.ja.000``); a ``DatasetDict.save_to_disk`` folder; one CSV/JSONL file.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2m.common.errors import InvalidInput, NotFound
from p2m.common.hub import hub_offline_by_env

Row = dict[str, Any]
_SPLIT_NAMES = {
    "train": "train",
    "dev": "validation",
    "valid": "validation",
    "validation": "validation",
    "val": "validation",
    "test": "test",
}
_PARALLEL = re.compile(r"^(?P<split>[a-z]+)\.(?P<lang>[a-z]{2,3})(?:\.(?P<shard>\d+))?$")
_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass(frozen=True)
class LoadedDataset:
    """Rows by source split and the column names (in first-seen order)."""

    name: str
    splits: dict[str, list[Row]]
    columns: tuple[str, ...]

    @property
    def num_rows(self) -> int:
        """Rows in every split together."""
        return sum(len(rows) for rows in self.splits.values())


def safe_folder_name(name: str) -> str:
    """A catalog name as one folder name ("org/data" -> "org--data").

    Raises:
        InvalidInput: The name could escape its folder.
    """
    if not name or len(name) > 200 or "\x00" in name or "\\" in name or name.startswith("/"):
        raise InvalidInput("dataset.name", f"not a dataset name: {name[:60]!r}")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidInput("dataset.name", f"not a dataset name: {name[:60]!r}")
    return "--".join(parts)


def locate(name: str, datasets_dir: Path | None) -> Path | None:
    """The local copy of dataset ``name``: an existing path, or a folder in ``datasets_dir``."""
    if datasets_dir is not None:
        candidate = datasets_dir / safe_folder_name(name)
        if candidate.exists():
            return candidate
    return None


def load_local(path: Path, name: str | None = None) -> LoadedDataset:
    """Load every split found at ``path``.

    Raises:
        NotFound: Nothing readable is there.
        InvalidInput: A file there is not a table (CSV, JSON lines, JSON) or not UTF-8.
    """
    try:
        return _load_local(path, name or path.name)
    except (ValueError, OSError, csv.Error) as error:
        raise InvalidInput("dataset.name", f"cannot read {path} as a dataset: {error}") from None


def _load_local(path: Path, label: str) -> LoadedDataset:
    if path.is_file():
        return _finish(label, {"train": _read_table(path)})
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        return _load_saved(path, label)
    splits: dict[str, list[Row]] = {}
    for file in sorted(path.iterdir()):
        split = _SPLIT_NAMES.get(file.stem.lower())
        if split and file.suffix.lower() in _TABLE_SUFFIXES:
            splits.setdefault(split, []).extend(_read_table(file))
    if not splits:
        splits = _read_parallel(path)
    if not splits:
        raise NotFound(f"no dataset files found in {path} (csv, jsonl, json or parallel text)")
    return _finish(label, splits)


def load_hub(name: str, config: str = "") -> LoadedDataset:
    """Load a dataset from the Hugging Face hub (only when it is reachable).

    Raises:
        NotFound: The hub is switched off (HF_HUB_OFFLINE) or the dataset cannot be loaded.
    """
    if hub_offline_by_env():
        raise NotFound(
            f"dataset {name!r} is not in the local datasets folder and the hub is offline "
            "(HF_HUB_OFFLINE is set)"
        )
    try:
        from datasets import load_dataset

        loaded = load_dataset(name, config or None)
    except Exception as exc:  # the hub raises many kinds; all mean "cannot have it"
        raise NotFound(f"dataset {name!r} could not be loaded from the hub: {exc}") from exc
    splits = {split: [dict(row) for row in data] for split, data in loaded.items()}
    return _finish(name, splits)


def _finish(name: str, splits: dict[str, list[Row]]) -> LoadedDataset:
    columns: dict[str, None] = {}
    for rows in splits.values():
        for row in rows[:100]:
            columns.update(dict.fromkeys(row))
    return LoadedDataset(name, splits, tuple(columns))


def _read_table(path: Path) -> list[Row]:
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8", newline="") as fh:
        if suffix in (".csv", ".tsv"):
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".jsonl":
            return [json.loads(line) for line in fh if line.strip()]
        data = json.load(fh)
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [])
    if not isinstance(data, list):
        raise InvalidInput("dataset.name", f"{path} holds no list of rows")
    return [row for row in data if isinstance(row, dict)]


def _read_parallel(folder: Path) -> dict[str, list[Row]]:
    """Line-aligned ``<split>.<lang>[.<shard>]`` files -> rows with one column per language."""
    files: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for file in sorted(folder.iterdir()):
        match = _PARALLEL.match(file.name)
        if match and match.group("split") in _SPLIT_NAMES:
            files[(_SPLIT_NAMES[match.group("split")], match.group("lang"))].append(file)
    by_split: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for (split, lang), paths in files.items():
        lines: list[str] = []
        for path in sorted(paths):
            lines.extend(path.read_text(encoding="utf-8").splitlines())
        by_split[split][lang] = lines
    splits = {}
    for split, columns in by_split.items():
        if len(columns) < 2:
            continue
        length = min(len(lines) for lines in columns.values())
        splits[split] = [{lang: columns[lang][i] for lang in columns} for i in range(length)]
    return splits


def _load_saved(path: Path, name: str) -> LoadedDataset:
    from datasets import Dataset, DatasetDict, load_from_disk

    loaded = load_from_disk(str(path))
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    splits = {split: [dict(row) for row in data] for split, data in loaded.items()}
    return _finish(name, splits)
