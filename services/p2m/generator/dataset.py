"""Write accepted examples as train/validation splits: JSONL and a Hugging Face DatasetDict."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from p2m.common.types import Example

REPORT_FILE = "report.json"
SPLITS = ("train", "validation")


def split_examples(
    examples: Sequence[Example], validation_fraction: float, seed: int
) -> dict[str, list[Example]]:
    """Shuffle with ``seed`` and cut off a validation share (at least one when there are two)."""
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_validation = round(len(shuffled) * validation_fraction)
    if validation_fraction > 0 and len(shuffled) >= 2:
        n_validation = max(1, n_validation)
    return {"train": shuffled[n_validation:], "validation": shuffled[:n_validation]}


def write_dataset(
    examples: Sequence[Example], folder: Path, validation_fraction: float, seed: int
) -> dict[str, int]:
    """Write ``<split>.jsonl`` files, ``hf/`` (``DatasetDict.save_to_disk``) and ``rows.json``."""
    from datasets import Dataset, DatasetDict  # heavy: only when a dataset is written
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    folder.mkdir(parents=True, exist_ok=True)
    splits = split_examples(examples, validation_fraction, seed)
    rows = {}
    for name in SPLITS:
        records = [{"input": e.input, "output": e.output} for e in splits[name]]
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        rows[name] = len(records)
    DatasetDict(
        {
            name: Dataset.from_dict(
                {
                    "input": [e.input for e in splits[name]],
                    "output": [e.output for e in splits[name]],
                }
            )
            for name in SPLITS
        }
    ).save_to_disk(str(folder / "hf"))
    (folder / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    return rows
