"""The teacher on the paper's three dev halves: today's request beside the one it replaced.

Each embedded model (``--models``, default the default teacher and SmolLM2) answers the first
``--eval-limit`` dev examples of each task, at temperature 0, twice:

- ``chat``: the product's request (``p2m.common.teacher_prompt``, what the generator and the
  evaluator send): the instruction as the system message, each demonstration as a user turn
  answered by an assistant turn, the input as the last user turn;
- ``page``: the request used before it (kept here only as the baseline): one user message
  holding the instruction and the demonstrations as "Input:"/"Output:" lines;
- ``free``: on a closed-set task, the product's request without reading the answer as the
  closest label;
- ``vote@T`` (``--vote-temperatures``, off by default): the generator's answer as it labels a new
  input: the same request with the first ``few_shot_demonstrations`` demonstrations,
  ``--vote-samples`` answers (5 by default, the generator's for span outputs) at
  temperature T, the majority of those that keep the task's invariants, nested where outputs
  are spans of the input (how much the annealed temperature costs the labels, against ``chat``).

Scores are in the paper's metric (Exact Match for SQuAD, ChrF++ for Temporal and MCoNaLa), beside
0.8x gpt-3.5-turbo's paper figure (the goal for the default teacher). The closed-set task
``banking77`` (the real intent dataset in ``datasets/``: the 77 intents listed in the
instruction, eight training rows as demonstrations, a seeded sample of test rows) is scored by
Exact Match, with the share of answers that are not one of the labels.

    .venv/bin/python bench/teacher.py [--models qwen,smollm2]
        [--tasks squad,temporal,mconala_ja,banking77] [--eval-limit 50]
        [--vote-temperatures 0.3,1.4 [--vote-samples 3]] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import benchkit
import paperdata

from p2m.common.budget import Budget
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.shipped_models import resolve_gguf
from p2m.common.teacher_prompt import (
    answer_messages,
    ask_answer,
    clean_answer,
    single_line_outputs,
    teacher_instruction,
)
from p2m.common.text_scores import chrf_corpus, exact_match
from p2m.common.types import Example, TaskSpec
from p2m.evaluator.teacher import TeacherPredictor
from p2m.generator.filters import majority_vote
from p2m.generator.invariants import infer
from p2m.generator.limits import answer_tokens
from p2m.generator.options import SPAN_VOTE_SAMPLES, GenerateOptions
from p2m.local_llm.server import LocalLLMConfig, LocalLLMServer

REQUESTS = ("chat", "page", "free")
VOTE = "vote@"  # a request name's start: "vote@0.8" is the generator's voted answer at 0.8
CLOSED_SET_TASK = "banking77"
CLOSED_SET_DEMONSTRATIONS = 8
SAMPLE_SEED = 0
GOAL_SHARE = 0.8  # of gpt-3.5-turbo's paper figure
TIMEOUT_S = 600.0
QUICK = {"eval_limit": 4, "max_output_tokens": 32}

Answerer = Callable[[Sequence[str]], Awaitable[list[str]]]


def metric_of(task: str) -> str:
    """The task's metric: the paper's, and Exact Match for the closed-set task."""
    return "exact_match" if task == CLOSED_SET_TASK else paperdata.PAPER[task].metric


def closed_set_task(shared: Path) -> tuple[TaskSpec, tuple[str, ...]]:
    """The banking77 intent task (every intent listed in the instruction) and its labels."""
    folder = shared / "datasets" / CLOSED_SET_TASK
    labels = tuple(json.loads((folder / "categories.json").read_text(encoding="utf-8")))
    rows = _csv_examples(folder / "train.csv")
    shown = random.Random(SAMPLE_SEED).sample(rows, CLOSED_SET_DEMONSTRATIONS)
    instruction = (
        "Classify the bank customer's message as one of these intents: "
        f"{', '.join(labels)}. Reply with the intent."
    )
    return TaskSpec(instruction, tuple(shown)), labels


def closed_set_test(shared: Path, limit: int) -> list[Example]:
    """A seeded sample of ``limit`` banking77 test rows (the file is sorted by intent)."""
    rows = _csv_examples(shared / "datasets" / CLOSED_SET_TASK / "test.csv")
    return random.Random(SAMPLE_SEED).sample(rows, min(limit, len(rows)))


def _csv_examples(path: Path) -> list[Example]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [Example(row["text"], row["category"]) for row in csv.DictReader(fh)]


def page_prompt(task: TaskSpec, text: str) -> str:
    """The replaced request: instruction, "Input:"/"Output:" pairs, then the input."""
    parts = [task.instruction.strip()]
    for demo in task.demonstrations:
        parts.append(f"Input: {demo.input.strip()}\nOutput: {demo.output.strip()}")
    parts.append(f"Input: {text.strip()}\nOutput:")
    return "\n\n".join(parts)


def page_answerer(llm: LLMClient, task: TaskSpec, max_tokens: int) -> Answerer:
    """Answers with the replaced request (as the evaluator sent it before)."""
    single = single_line_outputs(task.demonstrations)

    async def answer(inputs: Sequence[str]) -> list[str]:
        async def one(text: str) -> str:
            messages = [{"role": "user", "content": page_prompt(task, text)}]
            result = await llm.chat(
                messages, temperature=0.0, max_tokens=max_tokens, stop=("\nInput:",)
            )
            return clean_answer(result.text, single)

        return list(await asyncio.gather(*(one(text) for text in inputs)))

    return answer


def chat_answerer(llm: LLMClient, task: TaskSpec, max_tokens: int, parallel: int) -> Answerer:
    """Answers through the evaluator's teacher (the product's request)."""

    async def answer(inputs: Sequence[str]) -> list[str]:
        predictor = TeacherPredictor(
            llm, task, max_new_tokens=max_tokens, concurrency=parallel, budget=Budget()
        )
        predictions = (await predictor.predict(list(inputs))).predictions
        return [p or "" for p in predictions]

    return answer


def free_answerer(llm: LLMClient, task: TaskSpec, max_tokens: int) -> Answerer:
    """The product's request, its answer taken as written (not read as the closest label)."""

    async def answer(inputs: Sequence[str]) -> list[str]:
        async def one(text: str) -> str:
            messages = answer_messages(teacher_instruction(task), task.demonstrations, text)
            output, _ = await ask_answer(
                llm, messages, task.demonstrations, temperature=0.0, max_tokens=max_tokens
            )
            return output

        return list(await asyncio.gather(*(one(text) for text in inputs)))

    return answer


def vote_answerer(llm: LLMClient, task: TaskSpec, temperature: float, count: int) -> Answerer:
    """The generator's label for each input: ``count`` answers at ``temperature``, voted."""
    defaults = GenerateOptions()
    shown = list(task.demonstrations[: defaults.few_shot_demonstrations])
    rules = infer(task)
    tokens = answer_tokens(task.demonstrations, defaults.max_new_tokens)

    async def answer(inputs: Sequence[str]) -> list[str]:
        async def one(index: int, text: str) -> str:
            messages = answer_messages(teacher_instruction(task), shown, text)
            samples = []
            for sample in range(count):
                output, _ = await ask_answer(
                    llm,
                    messages,
                    shown,
                    choices=rules.output_choices,
                    temperature=temperature,
                    max_tokens=tokens,
                    seed=1000 * index + sample,
                )
                samples.append(output)
            votes = rules.kept_outputs(text, samples) or samples
            return majority_vote(votes, nested=rules.output_in_input)[0]

        return list(await asyncio.gather(*(one(i, text) for i, text in enumerate(inputs))))

    return answer


async def score_model(args: argparse.Namespace, base_url: str, alias: str) -> dict[str, Any]:
    """Every task, every request, for one served model."""
    config = LLMConfig(
        base_url=base_url, model=alias, timeout_s=TIMEOUT_S, max_concurrency=args.parallel
    )
    figures: dict[str, Any] = {}
    async with LLMClient(config) as llm:
        for name in args.tasks:
            labels: tuple[str, ...] = ()
            if name == CLOSED_SET_TASK:
                task, labels = closed_set_task(args.shared_data)
                dev = closed_set_test(args.shared_data, args.eval_limit)
            else:
                task = paperdata.task_spec(args.shared_data, name)
                dev = paperdata.dev(args.shared_data, name, args.eval_limit)
            answerers = {
                "chat": chat_answerer(llm, task, args.max_output_tokens, args.parallel),
                "page": page_answerer(llm, task, args.max_output_tokens),
                "free": free_answerer(llm, task, args.max_output_tokens),
            }
            answerers |= {
                f"{VOTE}{t}": vote_answerer(llm, task, t, args.vote_samples)
                for t in args.vote_temperatures
            }
            figures[name] = {}
            for request in [*args.requests, *(f"{VOTE}{t}" for t in args.vote_temperatures)]:
                if request == "free" and not labels:
                    continue  # without a closed set, "free" is "chat"
                started = time.monotonic()
                predictions = await answerers[request]([e.input for e in dev])
                figures[name][request] = score(
                    name, predictions, [e.output for e in dev], time.monotonic() - started
                )
                if labels:
                    outside = sum(p.strip() not in labels for p in predictions)
                    figures[name][request]["outside_labels"] = outside
    return figures


def score(task: str, predictions: list[str], references: list[str], wall_s: float) -> dict:
    """The paper's metric and both metrics, examples, seconds and a sample of answers."""
    em = 100 * sum(map(exact_match, predictions, references)) / max(1, len(references))
    chrf = chrf_corpus(predictions, references)
    metric = metric_of(task)
    return {
        "score": round(em if metric == "exact_match" else chrf, 2),
        "exact_match": round(em, 2),
        "chrf": round(chrf, 2),
        "examples": len(references),
        "wall_s": round(wall_s, 1),
        "empty": sum(1 for p in predictions if not p.strip()),
        "sample": [p[:80] for p in predictions[:3]],
        "load_avg": benchkit.load_average(),
    }


def measure(args: argparse.Namespace, models_dir: Path) -> dict[str, Any]:
    """Serve each model in turn on loopback and score it."""
    by_model: dict[str, Any] = {}
    for choice in args.models:
        path, alias = resolve_gguf(choice, models_dir)
        server = LocalLLMServer(LocalLLMConfig(path, alias, n_parallel=args.parallel))
        base_url = server.start()
        try:
            by_model[choice] = {
                "alias": alias,
                "tasks": asyncio.run(score_model(args, base_url, alias)),
            }
        finally:
            server.stop()
    return by_model


def show(figures: dict[str, Any]) -> None:
    """The figures for people."""
    print(f"machine: {benchkit.machine_line(figures['machine'])}")
    print(f"{'model':<10}{'task':<12}{'metric':<12}{'chat':>8}{'page':>8}{'free':>8}{'goal':>8}")
    for choice, entry in figures["models"].items():
        for task, by_request in entry["tasks"].items():
            cells = "".join(f"{by_request.get(r, {}).get('score', '-')!s:>8}" for r in REQUESTS)
            paper = paperdata.PAPER.get(task)
            goal = round(GOAL_SHARE * paper.paper_teacher, 1) if paper else "-"
            print(f"{choice:<10}{task:<12}{metric_of(task):<12}{cells}{goal!s:>8}")
            votes = [
                f"{r.removeprefix(VOTE)}: {v['score']}"
                for r, v in by_request.items()
                if r.startswith(VOTE)
            ]
            if votes:
                print(f"{'':<10}{task:<12}voted at   {', '.join(votes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="qwen,smollm2", help="embedded models, comma-separated")
    parser.add_argument("--tasks", default=",".join((*paperdata.TASKS, CLOSED_SET_TASK)))
    parser.add_argument("--requests", default=",".join(REQUESTS))
    parser.add_argument("--eval-limit", type=int, default=50, help="dev examples per task")
    parser.add_argument("--max-output-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=2, help="requests at once (slots)")
    parser.add_argument("--models-dir", type=Path, help="where the GGUF files are assembled")
    parser.add_argument(
        "--vote-temperatures",
        default="",
        help="temperatures of the generator's voted answer to score too (e.g. 0.3,1.4)",
    )
    parser.add_argument(
        "--vote-samples",
        type=int,
        default=SPAN_VOTE_SAMPLES,
        help="answers voted on per input (default: the generator's for span outputs, 5)",
    )
    args = benchkit.parse_arguments(parser, QUICK)
    args.vote_temperatures = [float(t) for t in args.vote_temperatures.split(",") if t]
    args.models = [m for m in args.models.split(",") if m]
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.requests = [r for r in args.requests.split(",") if r in REQUESTS]
    load_start = benchkit.load_average()
    with tempfile.TemporaryDirectory(prefix="p2m-bench-teacher-") as temp:
        models = measure(args, (args.models_dir or Path(temp)).resolve())
    figures = {
        "eval_limit": args.eval_limit,
        "dev_rows": paperdata.DEV_ROWS,
        "max_output_tokens": args.max_output_tokens,
        "goal_share": GOAL_SHARE,
        "paper_gpt35": {t: p.paper_teacher for t, p in paperdata.PAPER.items() if t in args.tasks},
        "models": models,
    }
    benchkit.finish("teacher", args, load_start, figures, show)


if __name__ == "__main__":
    main()
