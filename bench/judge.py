"""The optional LLM judge: does dropping what the teacher grades low make a better student?

The embedded teacher grades the first ``--train-limit`` examples of the paper's generated set
for ``--task`` (gpt-3.5-turbo output: realistic generated data, flaws included) with the
generator's own judge request (``p2m.generator.judge``). Then the student is trained three
times, the same way, and scored on the task's dev half with the paper's metric:

- ``all``: every example;
- ``judged``: the examples graded at or above ``--threshold`` (what ``--judge`` keeps);
- ``random``: as many examples as ``judged``, drawn at random (seeded): the size control, so
  that a difference between ``judged`` and ``all`` is not only the smaller set.

Before that, the judge's eye is tested: it also grades the first ``--swapped`` rows with each
output swapped for another row's (wrong by construction); a judge worth its request keeps far
fewer of those than of the rows as they are.

    .venv/bin/python bench/judge.py [--task temporal] [--train-limit 200] [--threshold 3]
        [--eval-limit 50] [--epochs 1] [--swapped 50] [--teacher qwen] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchkit
import paperdata
from paper import student_on_dev

from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.shipped_models import resolve_gguf
from p2m.common.teacher_prompt import teacher_instruction
from p2m.common.types import Example, TaskSpec
from p2m.generator.judge import JUDGE_SCHEMA, JUDGE_TOKENS, judge_messages, score_of
from p2m.local_llm.server import LocalLLMConfig, LocalLLMServer
from p2m.trainer.options import TrainOptions

ARMS = ("all", "judged", "random")
SEED = 0
TIMEOUT_S = 600.0
QUICK = {"train_limit": 12, "eval_limit": 4, "epochs": 1, "max_steps": 2, "swapped": 4}


async def grade(base_url: str, alias: str, task: TaskSpec, rows: list[Example]) -> list[int]:
    """The judge's grade of each row (0 where it gave none in range)."""
    config = LLMConfig(base_url=base_url, model=alias, timeout_s=TIMEOUT_S, max_concurrency=2)
    instruction = teacher_instruction(task)
    async with LLMClient(config) as llm:

        async def one(row: Example) -> int:
            messages = judge_messages(instruction, task.demonstrations, row)
            value, _ = await llm.chat_json(messages, JUDGE_SCHEMA, max_tokens=JUDGE_TOKENS)
            return score_of(value) or 0

        return list(await asyncio.gather(*(one(row) for row in rows)))


def swapped(rows: list[Example]) -> list[Example]:
    """Each row with the next row's output (one that differs): wrong answers to real inputs."""
    shifted = [row.output for row in rows[1:] + rows[:1]]
    return [
        Example(row.input, output)
        for row, output in zip(rows, shifted, strict=True)
        if output.strip() != row.output.strip()
    ]


def kept_share(grades: list[int], threshold: int) -> float:
    """Share of ``grades`` at or above ``threshold``."""
    return round(sum(g >= threshold for g in grades) / len(grades), 3) if grades else 0.0


def judged_sets(rows: list[Example], grades: list[int], threshold: int) -> dict[str, list[Example]]:
    """Each arm's training rows."""
    kept = [row for row, score in zip(rows, grades, strict=True) if score >= threshold]
    control = random.Random(SEED).sample(rows, len(kept))
    return {"all": rows, "judged": kept, "random": control}


def train_and_score(
    args: argparse.Namespace, work: Path, task: TaskSpec, rows: list[Example], arm: str
) -> dict[str, Any]:
    """Train the student on ``rows``; its score on the dev half."""
    options = TrainOptions(epochs=args.epochs, max_steps=args.max_steps, batch_size=8)
    return {"examples": len(rows), **student_on_dev(args, work, task, rows, arm, options)}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Grade, then train and score each arm."""
    task = paperdata.task_spec(args.shared_data, args.task)
    rows = paperdata.generated(args.shared_data, args.task, args.train_limit)
    args.dev = paperdata.dev(args.shared_data, args.task, args.eval_limit)
    path, alias = resolve_gguf(args.teacher, (args.models_dir or work / "gguf").resolve())
    server = LocalLLMServer(LocalLLMConfig(path, alias, n_parallel=2))
    started = time.perf_counter()
    base_url = server.start()
    try:
        grades = asyncio.run(grade(base_url, alias, task, rows))
        wrong = swapped(rows[: args.swapped])
        wrong_grades = asyncio.run(grade(base_url, alias, task, wrong))
    finally:
        server.stop()
    grade_s = time.perf_counter() - started
    sets = judged_sets(rows, grades, args.threshold)
    arms = {arm: train_and_score(args, work, task, sets[arm], arm) for arm in ARMS if sets[arm]}
    return {
        "task": args.task,
        "metric": paperdata.PAPER[args.task].metric,
        "teacher": alias,
        "threshold": args.threshold,
        "epochs": args.epochs,
        "dev_rows": paperdata.DEV_ROWS,
        "graded": len(rows),
        "grades": dict(sorted(Counter(grades).items())),
        "kept_share": round(len(sets["judged"]) / max(1, len(rows)), 3),
        "swapped": {
            "graded": len(wrong),
            "grades": dict(sorted(Counter(wrong_grades).items())),
            "kept_share": kept_share(wrong_grades, args.threshold),
            "kept_share_as_is": kept_share(grades[: len(wrong)], args.threshold),
        },
        "grade_s": round(grade_s, 1),
        "arms": arms,
    }


def show(figures: dict[str, Any]) -> None:
    """The figures for people."""
    print(f"machine: {benchkit.machine_line(figures['machine'])}")
    print(
        f"{figures['task']}: {figures['teacher']} started and graded {figures['graded']} "
        "examples in "
        f"{figures['grade_s']:.0f} s: {figures['grades']} (0: no grade); kept at >= "
        f"{figures['threshold']}: {figures['kept_share']:.0%}"
    )
    wrong = figures["swapped"]
    print(
        f"with outputs swapped: {wrong['graded']} graded {wrong['grades']}; kept "
        f"{wrong['kept_share']:.0%} (as they are: {wrong['kept_share_as_is']:.0%})"
    )
    print(f"{'arm':<10}{'examples':>10}{figures['metric']:>14}{'train s':>10}")
    for arm, entry in figures["arms"].items():
        score = entry["dev"]["score"]
        print(f"{arm:<10}{entry['examples']:>10}{score:>14}{entry['train_s']:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=paperdata.TASKS, default="temporal")
    parser.add_argument("--train-limit", type=int, default=200, help="generated rows graded")
    parser.add_argument("--threshold", type=int, default=3, help="keep grades at or above")
    parser.add_argument("--eval-limit", type=int, default=50, help="dev examples")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="stop training here (0: none)")
    parser.add_argument("--max-output-tokens", type=int, default=64)
    parser.add_argument("--swapped", type=int, default=50, help="rows graded with wrong outputs")
    parser.add_argument("--teacher", default="qwen", help="the embedded model that grades")
    parser.add_argument("--models-dir", type=Path, help="where the GGUF files are assembled")
    args = benchkit.parse_arguments(parser, QUICK)
    load_start = benchkit.load_average()
    with tempfile.TemporaryDirectory(prefix="p2m-bench-judge-", ignore_cleanup_errors=True) as t:
        figures = measure(args, Path(t))
    benchkit.finish("judge", args, load_start, figures, show)


if __name__ == "__main__":
    main()
