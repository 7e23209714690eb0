"""Write accepted examples as train/validation splits: JSONL and a Hugging Face DatasetDict."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from p2m.common.splits import write_splits
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
    """Split the examples and write them (JSONL, ``hf/``, ``rows.json``) under ``folder``."""
    return write_splits(split_examples(examples, validation_fraction, seed), folder)
