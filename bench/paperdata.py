"""The Prompt2Model paper's three tasks as the benchmarks read them from ../shared/data.

Generated training sets (gpt-3.5-turbo output from the paper's runs) and the dev halves of the
real test sets, each turned into input/output pairs the way the paper's test scripts build them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from p2m.common.types import Example, TaskSpec
from p2m.generator.output_share import OutputCap, OutputCounts
from p2m.parser.markers import parse_marked

TASKS = ("squad", "temporal", "mconala_ja")
GENERATED = {
    "squad": "squad_generated_0.3_1.4_with_filtering.jsonl",
    "temporal": "temporal_generated_0.3_1.4_with_filtering.jsonl",
    "mconala_ja": "jp2python_generated.jsonl",
}
POOL = 5000  # the paper's generated sets hold 5,000 examples each


@dataclass(frozen=True)
class PaperTask:
    """A task: its metric, and the paper's own figures (full test sets, so compare ratios)."""

    name: str
    metric: str
    paper_teacher: float  # gpt-3.5-turbo prompted with the task's prompt
    paper_student: float  # Prompt2Model's trained student (retrieved + generated data)


PAPER = {
    "squad": PaperTask("squad", "exact_match", 42.1, 61.5),
    "temporal": PaperTask("temporal", "chrf", 30.7, 55.2),
    "mconala_ja": PaperTask("mconala_ja", "chrf", 37.3, 13.1),
}


def task_spec(shared: Path, task: str) -> TaskSpec:
    """The task's instruction and demonstrations, parsed from the paper's prompt as written."""
    prompts = json.loads((shared / "benchmarks" / "prompts.json").read_text(encoding="utf-8"))
    entry = prompts["tasks"][task]
    marked = parse_marked(entry["full_prompt"])
    if marked is not None:
        return TaskSpec(marked.instruction, marked.demonstrations)
    return TaskSpec(entry["instruction"])


def generated(shared: Path, task: str, limit: int) -> list[Example]:
    """The first ``limit`` rows of the paper's generated set (the degenerate "N/A" row skipped)."""
    rows = []
    path = shared / "benchmarks" / "generated" / GENERATED[task]
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record["input_col"].strip() in ("", "N/A"):
                continue
            rows.append(Example(record["input_col"], record["output_col"]))
            if len(rows) == limit:
                break
    return rows


def capped(pool: list[Example], task: TaskSpec, size: int, share: float) -> list[Example]:
    """The first ``size`` examples of ``pool`` whose output has not yet reached its cap.

    What the generator keeps with its output-share cap at ``share``.
    """
    cap = OutputCap.for_demonstrations(task.demonstrations, size, share)
    counts, kept = OutputCounts(), list[Example]()
    for example in pool:
        if len(kept) == size:
            break
        if not counts.full(example.output, cap):
            kept.append(example)
            counts.add(example.output)
    return kept


# How ``dev`` picks rows under a limit; benches put it in their figures as ``dev_rows``, so a
# report tells their figures from ones measured on a half's first rows (figures without it).
DEV_ROWS = "spread"


def dev(shared: Path, task: str, limit: int = 0) -> list[Example]:
    """The dev half of the task's real test set as input/output pairs (``limit`` 0: all).

    A limit takes rows spread evenly over the file, in its order, not its first rows: the files
    are sorted (Temporal's 251 dated rows come before its 179 "N/A" ones, SQuAD's rows by
    article), so a head would score one kind only.
    """
    rows = []
    with (shared / "benchmarks" / task / "dev.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if task == "squad":
                text = f"Question: {record['question']} Context: {record['context']}"
                rows.append(Example(text, record["answers"]["text"][0]))
            else:
                rows.append(Example(record["input_col"], record["output_col"]))
    return spread(rows, limit)


def spread(rows: list[Example], limit: int) -> list[Example]:
    """``limit`` of ``rows`` at even steps, first row first (all of them for 0 or more)."""
    if not 0 < limit < len(rows):
        return rows
    return [rows[i * len(rows) // limit] for i in range(limit)]


def write_jsonl(examples: list[Example], path: Path) -> Path:
    """Write ``{input, output}`` lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps({"input": e.input, "output": e.output}, ensure_ascii=False) + "\n")
    return path


NEAR_DUPLICATE_JACCARD = 0.5


def holdout_overlap(train: list[Example], holdout: list[Example]) -> dict[str, float]:
    """How much of the holdout the training set already shows.

    ``near_duplicate_inputs``: the share of holdout inputs whose word trigrams overlap some
    training input's by a Jaccard index of at least 0.5 (the same question with a reworded
    context, say); ``outputs_seen``: the share of holdout outputs that are, verbatim, the output
    of some training example. Generated sets repeat themselves, and a holdout that does flatters
    the student trained on the rest.
    """
    if not holdout:
        return {"near_duplicate_inputs": 0.0, "outputs_seen": 0.0}
    train_grams = [_trigrams(e.input) for e in train]
    train_outputs = {e.output.strip() for e in train}
    near = seen = 0
    for example in holdout:
        grams = _trigrams(example.input)
        near += any(
            len(grams & other) >= NEAR_DUPLICATE_JACCARD * len(grams | other) > 0
            for other in train_grams
        )
        seen += example.output.strip() in train_outputs
    return {
        "near_duplicate_inputs": round(near / len(holdout), 3),
        "outputs_seen": round(seen / len(holdout), 3),
    }


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 3]) for i in range(max(len(words) - 2, 1))}
