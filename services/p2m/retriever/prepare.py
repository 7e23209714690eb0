"""Turn a loaded dataset into the task's text-to-text form: choose columns, convert, split."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.errors import InvalidInput, LLMOutputError
from p2m.common.llm import LLMClient, UsageCounters
from p2m.common.ranges import Within, check_ranges
from p2m.common.splits import read_rows, write_splits
from p2m.common.types import Example, TaskSpec
from p2m.retriever.loaders import LoadedDataset, Row

log = logging.getLogger(__name__)

PREPARE_VERSION = 1
_OUTPUT_HINTS = (
    "label",
    "labels",
    "target",
    "output",
    "answer",
    "answers",
    "category",
    "summary",
    "translation",
    "class",
    "intent",
    "y",
)


def columns_schema(columns: Sequence[str]) -> dict[str, Any]:
    """The answer's schema, column names limited to the dataset's.

    A grammar-constrained LLM then cannot name a column that does not exist; the short reason
    comes last so that small models decide before they ramble.
    """
    return {
        "type": "object",
        "properties": {
            "input_columns": {
                "type": "array",
                "items": {"type": "string", "enum": list(columns)},
                "minItems": 1,
                "maxItems": 16,
            },
            "output_column": {"type": "string", "enum": list(columns)},
            "suitable": {"type": "boolean"},
            "reason": {"type": "string", "maxLength": 300},
        },
        "required": ["input_columns", "output_column", "suitable", "reason"],
    }


COLUMNS_SYSTEM = (
    "You map a dataset's columns onto a task. The input columns hold what a model reads; the "
    "output column holds what it should write. Use only column names from the list. If no "
    "columns fit the task, set suitable to false. Answer with JSON only."
)


@dataclass(frozen=True)
class ColumnChoice:
    """Which columns make the input and the output, and why."""

    input_columns: tuple[str, ...]
    output_column: str
    reason: str
    person_chosen: bool
    suitable: bool


@dataclass(frozen=True)
class PreparedDataset:
    """The artifact (None when unsuitable), its split sizes and how columns were chosen."""

    artifact: ArtifactRef | None
    rows: dict[str, int]
    choice: ColumnChoice
    available_columns: tuple[str, ...]
    rows_dropped: int
    cached: bool
    usage: UsageCounters


@dataclass(frozen=True)
class PrepareOptions:
    """Sampling and splitting."""

    max_rows: int = 5000
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        """Raise InvalidInput naming a field out of range."""
        check_ranges(
            [
                Within("max_rows", self.max_rows, 1, 1_000_000),
                Within("validation_fraction", self.validation_fraction, 0.0, 0.5),
                Within("test_fraction", self.test_fraction, 0.0, 0.5),
            ]
        )


def check_person_choice(
    dataset: LoadedDataset, input_columns: Sequence[str], output_column: str
) -> ColumnChoice | None:
    """A person's column choice, validated; None when they chose nothing.

    Raises:
        InvalidInput: Half a choice, an unknown or repeated column, or output among the inputs.
    """
    if not input_columns and not output_column:
        return None
    if not input_columns or not output_column:
        raise InvalidInput("input_columns", "set input_columns and output_column together")
    if len(set(input_columns)) != len(input_columns) or len(input_columns) > 16:
        raise InvalidInput("input_columns", "at most 16 columns, no repeats")
    for column in (*input_columns, output_column):
        if column not in dataset.columns:
            raise InvalidInput(
                "output_column" if column == output_column else "input_columns",
                f"the dataset has no column {column!r} (it has {', '.join(dataset.columns)})",
            )
    if output_column in input_columns:
        raise InvalidInput("output_column", "must not also be an input column")
    return ColumnChoice(tuple(input_columns), output_column, "chosen by a person", True, True)


async def propose_columns(
    llm: LLMClient, dataset: LoadedDataset, task: TaskSpec, usage: UsageCounters
) -> ColumnChoice:
    """Ask the LLM which columns fit the task; fall back to a name-based guess it cannot."""
    sample = next((rows[:2] for rows in dataset.splits.values() if rows), [])
    shown = [{k: _clip(v) for k, v in row.items()} for row in sample]
    demos = "\n".join(
        f"input: {d.input[:200]}\noutput: {d.output[:100]}" for d in task.demonstrations[:3]
    )
    prompt = (
        f"Task: {task.instruction[:1500]}\n\nTask examples:\n{demos}\n\n"
        f"Dataset {dataset.name} has the columns: {', '.join(dataset.columns)}\n"
        f"Sample rows: {json.dumps(shown, ensure_ascii=False)}"
    )
    messages = [{"role": "system", "content": COLUMNS_SYSTEM}, {"role": "user", "content": prompt}]
    try:
        answer, result = await llm.chat_json(
            messages, columns_schema(dataset.columns), name="columns", max_tokens=300, seed=0
        )
    except LLMOutputError as exc:
        usage.add(exc.result if hasattr(exc.result, "attempts") else None, 1, ok=True)  # type: ignore[arg-type]
        guess = _guess(dataset, f"the LLM's answer was unusable ({exc}); guessed by column names")
        return _checked(dataset, guess, task)
    usage.add(result, result.attempts, ok=True)
    output = answer["output_column"]
    # A small model often lists the output among the inputs too: the output wins.
    inputs = tuple(c for c in dict.fromkeys(answer["input_columns"]) if c != output)
    if not answer["suitable"]:
        guess = _checked(dataset, _guess(dataset, ""), task)
        if guess.suitable and outputs_found(dataset, guess.output_column, task) >= 0.5:
            reason = (
                f"the LLM judged it unsuitable, but the demonstrations' outputs are values "
                f"of {guess.output_column!r}"
            )
            return ColumnChoice(guess.input_columns, guess.output_column, reason, False, True)
        return ColumnChoice((), "", str(answer["reason"]), False, False)
    if not inputs or output not in dataset.columns:
        return _guess(dataset, "the LLM's columns made no input/output pair; guessed by names")
    return _checked(dataset, ColumnChoice(inputs, output, str(answer["reason"]), False, True), task)


def outputs_found(dataset: LoadedDataset, output: str, task: TaskSpec) -> float:
    """Share of the demonstrations' outputs found verbatim among ``output``'s values."""
    if not task.demonstrations:
        return 0.0
    rows = [row for rows in dataset.splits.values() for row in rows[:1000]]
    values = {_text(row.get(output)).casefold() for row in rows}
    found = sum(d.output.strip().casefold() in values for d in task.demonstrations)
    return found / len(task.demonstrations)


def demo_fit(dataset: LoadedDataset, inputs: Sequence[str], output: str, task: TaskSpec) -> float:
    """How well a column mapping looks like the task's demonstrations (higher is better).

    Two signals: demonstration outputs found verbatim among the output column's values, and how
    close the typical lengths of the mapped columns are to the demonstrations' inputs/outputs.
    """
    if not task.demonstrations:
        return 0.0
    rows = [row for rows in dataset.splits.values() for row in rows[:1000]]
    found = outputs_found(dataset, output, task) * len(task.demonstrations)

    def mean_len(texts: Sequence[str]) -> float:
        return max(1.0, sum(len(t) for t in texts) / max(1, len(texts)))

    out_len = mean_len([_text(row.get(output)) for row in rows])
    in_len = mean_len([" ".join(_text(row.get(c)) for c in inputs) for row in rows])
    misfit = abs(math.log(out_len / mean_len([d.output for d in task.demonstrations])))
    misfit += abs(math.log(in_len / mean_len([d.input for d in task.demonstrations])))
    return found / len(task.demonstrations) * 2.0 - misfit


def _checked(dataset: LoadedDataset, choice: ColumnChoice, task: TaskSpec) -> ColumnChoice:
    """Swap a one-column mapping the demonstrations say is the wrong way round."""
    if len(choice.input_columns) != 1 or not choice.suitable:
        return choice
    (source,) = choice.input_columns
    as_given = demo_fit(dataset, [source], choice.output_column, task)
    swapped = demo_fit(dataset, [choice.output_column], source, task)
    if swapped > as_given + 0.5:
        reason = (
            f"{choice.reason} (swapped: the demonstrations fit {choice.output_column} -> {source})"
        )
        return ColumnChoice((choice.output_column,), source, reason, False, True)
    return choice


def _guess(dataset: LoadedDataset, reason: str) -> ColumnChoice:
    columns = list(dataset.columns)
    output = next(
        (c for c in columns if c.lower() in _OUTPUT_HINTS), columns[-1] if columns else ""
    )
    inputs = tuple(c for c in columns if c != output and c.lower() not in ("id", "idx", "index"))
    return ColumnChoice(inputs, output, reason, False, bool(inputs and output))


def to_examples(rows: Sequence[Row], choice: ColumnChoice) -> tuple[list[Example], int]:
    """Rows -> examples (several inputs become "column: value" lines); count rows dropped."""
    examples, dropped = [], 0
    for row in rows:
        values = [(c, _text(row.get(c))) for c in choice.input_columns]
        if len(values) == 1:
            source = values[0][1]
        else:
            source = "\n".join(f"{c}: {v}" for c, v in values if v)
        target = _text(row.get(choice.output_column))
        if source.strip() and target.strip():
            examples.append(Example(source, target))
        else:
            dropped += 1
    return examples, dropped


def preparation_key(
    dataset: LoadedDataset, config: str, choice: ColumnChoice, options: PrepareOptions
) -> str:
    """The sha256 naming one preparation: same dataset, columns and options, same artifact."""
    payload = {
        "version": PREPARE_VERSION,
        "name": dataset.name,
        "config": config,
        "rows": dataset.num_rows,
        "inputs": choice.input_columns,
        "output": choice.output_column,
        "options": asdict(options),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def split_pool(examples: Sequence[Example], options: PrepareOptions) -> dict[str, list[Example]]:
    """Shuffle with ``seed``, keep ``max_rows``, cut validation and test shares off the top."""
    pool = list(examples)
    random.Random(options.seed).shuffle(pool)
    pool = pool[: options.max_rows]
    n_val = round(len(pool) * options.validation_fraction)
    n_test = round(len(pool) * options.test_fraction)
    return {
        "train": pool[n_val + n_test :],
        "validation": pool[:n_val],
        "test": pool[n_val : n_val + n_test],
    }


async def prepare(
    dataset: LoadedDataset,
    task: TaskSpec,
    *,
    store: ArtifactStore,
    work_dir: Path,
    llm: Callable[[], Awaitable[LLMClient]],
    options: PrepareOptions,
    config: str = "",
    input_columns: Sequence[str] = (),
    output_column: str = "",
) -> PreparedDataset:
    """Choose columns (a person's choice wins over the LLM's), convert, split, store."""
    options.validate()
    usage = UsageCounters()
    choice = check_person_choice(dataset, input_columns, output_column)
    if choice is None:
        choice = await propose_columns(await llm(), dataset, task, usage)
    if not choice.suitable:
        return PreparedDataset(None, {}, choice, dataset.columns, 0, False, usage)
    key = preparation_key(dataset, config, choice, options)
    all_rows = [row for rows in dataset.splits.values() for row in rows]
    examples, dropped = to_examples(all_rows, choice)
    cached = store.recall(key)
    if cached is not None:
        rows = read_rows(store.path(cached.sha256))
        return PreparedDataset(cached, rows, choice, dataset.columns, dropped, True, usage)
    folder = work_dir / key
    rows = write_splits(split_pool(examples, options), folder)
    meta = {"dataset": dataset.name, "config": config, **asdict(choice)}
    (folder / "source.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    ref = store.put_dir(folder, "dataset")
    store.remember(key, ref)
    log.info("dataset prepared", extra={"dataset": dataset.name, "rows": rows})
    return PreparedDataset(ref, rows, choice, dataset.columns, dropped, False, usage)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # e.g. SQuAD answers {"text": [...], ...}
        value = value.get("text", value)
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value).strip()


def _clip(value: Any, limit: int = 200) -> str:
    text = _text(value)
    return text if len(text) <= limit else text[:limit] + "..."
