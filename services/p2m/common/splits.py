"""Write text-to-text splits the way every stage stores them: JSONL files and a DatasetDict."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from p2m.common.errors import InvalidInput
from p2m.common.types import Example

ROWS_FILE = "rows.json"


def write_splits(splits: Mapping[str, Sequence[Example]], folder: Path) -> dict[str, int]:
    """Write ``<split>.jsonl`` ({input, output} per line), ``hf/`` and ``rows.json`` in ``folder``.

    Returns:
        Rows per split.
    """
    from datasets import Dataset, DatasetDict  # heavy: only when a dataset is written
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    folder.mkdir(parents=True, exist_ok=True)
    for name, examples in splits.items():
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for e in examples:
                record = {"input": e.input, "output": e.output}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    columns = {
        name: {"input": [e.input for e in examples], "output": [e.output for e in examples]}
        for name, examples in splits.items()
    }
    DatasetDict({name: Dataset.from_dict(data) for name, data in columns.items()}).save_to_disk(
        str(folder / "hf")
    )
    rows = {name: len(examples) for name, examples in splits.items()}
    (folder / ROWS_FILE).write_text(json.dumps(rows), encoding="utf-8")
    return rows


def read_rows(folder: Path) -> dict[str, int]:
    """The rows per split recorded by ``write_splits``."""
    return dict(json.loads((folder / ROWS_FILE).read_text(encoding="utf-8")))


def read_examples(
    path: Path, input_field: str = "input", output_field: str = "output", field: str = "path"
) -> tuple[Example, ...]:
    """Examples from a JSONL file; blank lines are skipped, numbers and booleans become text.

    Raises:
        InvalidInput: ``field``: a line that is not a JSON object with both fields as text or
            numbers (the line number is named), or text that is not UTF-8.
    """
    examples = []
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    examples.append(_row(line, number, input_field, output_field, field))
    except UnicodeDecodeError as exc:
        raise InvalidInput(field, f"not UTF-8 text ({exc.reason})") from None
    return tuple(examples)


def _row(line: str, number: int, input_field: str, output_field: str, field: str) -> Example:
    try:
        record = json.loads(line)
    except ValueError:
        raise InvalidInput(field, f"line {number}: not valid JSON") from None
    if not isinstance(record, dict):
        raise InvalidInput(field, f"line {number}: not a JSON object")
    values = []
    for name in (input_field, output_field):
        if name not in record:
            raise InvalidInput(field, f"line {number}: no field {name!r}")
        value = record[name]
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, bool | int | float):
            values.append(json.dumps(value))
        else:
            raise InvalidInput(field, f"line {number}: field {name!r} is not text or a number")
    return Example(values[0], values[1])
