"""Training data: the datasets' splits read, combined and shuffled with the seed."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.errors import InvalidInput, NotFound
from p2m.common.splits import read_examples
from p2m.common.types import Example

MAX_DATASETS = 16


@dataclass(frozen=True)
class TrainingData:
    """The combined splits a training runs on.

    The validation split's first ``demonstrations`` examples are the prompt's own
    (``with_demonstrations``).
    """

    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    demonstrations: int = 0


def load_training_data(
    store: ArtifactStore, datasets: Sequence[ArtifactRef], seed: int
) -> TrainingData:
    """Read every dataset's train and validation splits, combine them and shuffle with ``seed``.

    Raises:
        InvalidInput: No dataset, too many, or one without a non-empty train split.
        NotFound: A dataset artifact is not in the store.
    """
    if not datasets:
        raise InvalidInput("datasets", "at least one dataset is needed")
    if len(datasets) > MAX_DATASETS:
        raise InvalidInput("datasets", f"at most {MAX_DATASETS} datasets, got {len(datasets)}")
    train: list[Example] = []
    validation: list[Example] = []
    for index, ref in enumerate(datasets):
        field = f"datasets[{index}]"
        folder = store.path(ref.uri)
        if not (folder / "train.jsonl").is_file():
            raise NotFound(f"{field}: dataset {ref.uri} has no train split")
        rows = list(read_examples(folder / "train.jsonl", field=field))
        if not rows:
            raise InvalidInput(field, f"dataset {ref.uri} has an empty train split")
        train.extend(rows)
        if (folder / "validation.jsonl").is_file():
            validation.extend(read_examples(folder / "validation.jsonl", field=field))
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(validation)
    return TrainingData(tuple(train), tuple(validation))


def store_dataset(store: ArtifactStore, source: Path, field: str = "data") -> ArtifactRef:
    """Put a folder of ``train.jsonl`` (and ``validation.jsonl``) or one JSONL file in the store.

    A JSONL file becomes the train split of a new dataset folder.

    Raises:
        InvalidInput: ``source`` is neither, or a line is malformed (named with its line).
    """
    if source.is_dir():
        if not (source / "train.jsonl").is_file():
            raise InvalidInput(field, f"{source} has no train.jsonl")
        for split in ("train.jsonl", "validation.jsonl"):
            if (source / split).is_file():
                read_examples(source / split, field=field)
        return store.put_dir(source, "dataset")
    if source.is_file():
        examples = read_examples(source, field=field)
        if not examples:
            raise InvalidInput(field, f"{source} holds no examples")
        with tempfile.TemporaryDirectory(dir=store.root / "tmp") as tmp:
            folder = Path(tmp)
            with (folder / "train.jsonl").open("w", encoding="utf-8") as fh:
                for e in examples:
                    fh.write(json.dumps({"input": e.input, "output": e.output}, ensure_ascii=False))
                    fh.write("\n")
            return store.put_dir(folder, "dataset")
    raise InvalidInput(field, f"no such file or folder: {source}")


def with_demonstrations(data: TrainingData, demonstrations: Sequence[Example]) -> TrainingData:
    """``data`` validated on the person's own ``demonstrations`` too, placed first.

    Each demonstration once, none the training split holds. The generated validation split is
    the teacher's writing, in the training split's style; a loss on it alone once kept weights
    that answered "N/A" to 92 of 100 Temporal dev inputs (ChrF++ 8.8), where the loss over both
    would have kept weights scoring 27.1 (README). First, so that ``max_eval_examples`` and the
    decoded sample always hold them.
    """
    trained = {example.input for example in data.train}
    kept: dict[str, Example] = {}
    for example in demonstrations:
        if example.input not in trained:
            kept.setdefault(example.input, example)
    if not kept:
        return data
    return replace(data, validation=(*kept.values(), *data.validation), demonstrations=len(kept))
