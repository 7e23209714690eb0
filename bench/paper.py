"""The paper's benchmark: the student trained on the paper's generated set against the teacher LLM.

Trains the student with Ray Train on the first N generated examples of the task (gpt-3.5-turbo
output from the paper's own runs) and holds out the next ``--holdout`` generated examples, unseen
in training. Then scores, with the paper's metric (SQuAD: Exact Match; Temporal and MCoNaLa:
ChrF++):

- the student on the dev half of the real test set and on the generated holdout;
- the teacher (the embedded llama.cpp endpoint serving ``--teacher``, prompted with the task's
  instruction and demonstrations) on the same dev examples and the same holdout;

and prints them beside the paper's own figures (gpt-3.5-turbo and Prompt2Model, on the full test
set). The holdout score beside the dev score is the paper's claim under test: that generated data
gives a usable estimate of the real score before deployment.

    .venv/bin/python bench/paper.py --task temporal [--train-limit 500] [--holdout 100]
        [--eval-limit 100] [--teacher qwen|smollm2|none] [--omit-instruction]
        [--max-instruction-tokens N] [--seed N] [--validation N] [--keep-best-by score|loss]
        [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchkit
import paperdata

from p2m.common.artifacts import ArtifactStore
from p2m.common.errors import P2MError
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.model_store import ModelStore
from p2m.common.shipped_models import resolve_gguf
from p2m.common.types import Example, TaskSpec
from p2m.evaluator.engine import (
    EvalData,
    EvaluateOptions,
    EvaluationResult,
    Evaluator,
    StudentSubject,
    TeacherSubject,
    read_jsonl,
)
from p2m.local_llm.server import LocalLLMConfig, LocalLLMServer
from p2m.trainer.data import store_dataset
from p2m.trainer.engine import ModelTrainer, TrainJob
from p2m.trainer.options import KEEP_BEST_BY, TrainOptions

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
METRICS = ("exact_match", "chrf")
TEACHER_TIMEOUT_S = 600.0  # one request on a busy 2-core machine can take minutes
# --quick: sizes that finish in minutes on 2 cores.
QUICK = {
    "train_limit": 16,
    "holdout": 8,
    "eval_limit": 8,
    "epochs": 1,
    "max_steps": 2,
    "max_output_tokens": 32,
}


@dataclass(frozen=True)
class Sets:
    """The examples one run uses."""

    train: list[Example]
    validation: list[Example]
    holdout: EvalData
    dev: EvalData


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=paperdata.TASKS, required=True)
    parser.add_argument("--train-limit", type=int, default=500)
    parser.add_argument(
        "--holdout", type=int, default=100, help="generated examples after the training ones"
    )
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        help="generated examples after the holdout as the validation split, as a pipeline run "
        "has one (best weights kept, early stopping); 0: none",
    )
    parser.add_argument("--eval-limit", type=int, default=0, help="dev examples (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=0, help="stop training here (0: none)")
    parser.add_argument(
        "--min-steps",
        type=int,
        default=TrainOptions().min_steps,
        help="train at least this many steps: more epochs on small data (0: exactly --epochs)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-input-tokens", type=int, default=384)
    parser.add_argument("--max-output-tokens", type=int, default=64)
    parser.add_argument("--base-model", default=SMOLLM2)
    parser.add_argument(
        "--seed", type=int, default=TrainOptions().seed, help="the training's seed (data order)"
    )
    parser.add_argument(
        "--omit-instruction",
        action="store_true",
        help="train and serve the student on bare inputs (no instruction in its prompts)",
    )
    parser.add_argument(
        "--max-instruction-tokens",
        type=int,
        default=0,
        help="tokens the instruction may take in the student's prompts (0: the trainer's default)",
    )
    parser.add_argument(
        "--keep-best-by",
        choices=KEEP_BEST_BY,
        default=TrainOptions().keep_best_by,
        help="what chooses the weights kept with --validation: the sample's score or the loss",
    )
    parser.add_argument(
        "--teacher", default="qwen", help="qwen, smollm2, a .gguf path, or none (no teacher)"
    )
    parser.add_argument("--teacher-parallel", type=int, default=4, help="teacher requests at once")
    parser.add_argument("--data-dir", type=Path, help="keep models here (default: a temp dir)")
    parser.add_argument("--models-dir", type=Path, help="model store to reuse (default: data dir)")
    args = benchkit.parse_arguments(parser, QUICK)
    load_start = benchkit.load_average()
    if args.data_dir:
        figures = measure(args, args.data_dir)
    else:
        with tempfile.TemporaryDirectory(
            prefix="p2m-bench-paper-", ignore_cleanup_errors=True
        ) as t:
            figures = measure(args, Path(t))
    figures = {
        "bench": "paper",
        "task": args.task,
        "dev_rows": paperdata.DEV_ROWS,
        "quick": args.quick,
        "machine": benchkit.machine(),
        "load_avg_start": load_start,
        "load_avg_end": benchkit.load_average(),
        **figures,
    }
    if args.json:
        benchkit.emit(figures)
        return
    show(figures)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train, then score student and teacher on dev and holdout; the figures as a dict."""
    store = ArtifactStore(work / "artifacts")
    models = ModelStore((args.models_dir or work / "models").resolve())
    if args.base_model == SMOLLM2:
        models.import_shipped("smollm2")
    task = paperdata.task_spec(args.shared_data, args.task)
    paper = paperdata.PAPER[args.task]
    sets = load_sets(args, work)
    paperdata.write_jsonl(sets.train, work / "train" / "train.jsonl")
    if sets.validation:
        paperdata.write_jsonl(sets.validation, work / "train" / "validation.jsonl")
    data = store_dataset(store, work / "train")
    options = TrainOptions(
        epochs=args.epochs,
        max_steps=args.max_steps,
        min_steps=args.min_steps,
        batch_size=args.batch_size,
        num_workers=args.workers,
        max_input_tokens=args.max_input_tokens,
        max_output_tokens=args.max_output_tokens,
        omit_instruction=args.omit_instruction,
        max_instruction_tokens=args.max_instruction_tokens,
        seed=args.seed,
        keep_best_by=args.keep_best_by,
    )
    started = time.perf_counter()
    try:
        outcome = ModelTrainer(store, models, work / "runs").train(
            TrainJob((data,), args.base_model, task, options)
        )
    finally:
        benchkit.stop_ray()  # its idle workers would take CPU from the evaluations
    train_wall = time.perf_counter() - started
    train_load = benchkit.load_average()
    evaluator = Evaluator(store)
    subject = StudentSubject.from_store(store, outcome.model.uri)
    student, size_bytes = {}, 0
    for name, eval_data in (("dev", sets.dev), ("holdout", sets.holdout)):
        result = asyncio.run(evaluator.evaluate(subject, eval_data, evaluate_options(args)))
        student[name] = summary(result, paper.metric)
        size_bytes = result.model_size_bytes
    teacher: dict[str, Any] | None = None
    teacher_name = ""
    if args.teacher != "none":
        teacher_name, teacher = score_teacher(args, work, store, task, sets, paper.metric)
    return {
        "metric": paper.metric,
        "base_model": args.base_model,
        "teacher_model": teacher_name,
        "sizes": {
            "train": len(sets.train),
            "validation": len(sets.validation),
            "holdout": len(sets.holdout.examples),
            "dev": len(sets.dev.examples),
        },
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "min_steps": args.min_steps,
        "keep_best_by": args.keep_best_by,
        "max_output_tokens": args.max_output_tokens,
        "omit_instruction": args.omit_instruction,
        "max_instruction_tokens": args.max_instruction_tokens,
        "seed": args.seed,
        "training": {
            "wall_s": round(train_wall, 1),
            "steps": outcome.report.steps,
            "planned_epochs": outcome.report.planned_epochs,
            "best_step": outcome.report.best_step,
            "stopped_early": outcome.report.stopped_early,
            "examples_per_s": round(outcome.report.samples_per_second, 2),
            "final_loss": round(outcome.report.final_loss, 4),
            "load_avg": train_load,
        },
        "student": student,
        "teacher": teacher,
        "model_size_mb": round(size_bytes / 1e6, 1),
        "paper_gpt35": paper.paper_teacher,
        "paper_prompt2model": paper.paper_student,
    }


def student_on_dev(
    args: argparse.Namespace,
    work: Path,
    task: TaskSpec,
    rows: list[Example],
    name: str,
    options: TrainOptions,
) -> dict[str, Any]:
    """SmolLM2 trained on ``rows`` (kept under ``work/name``): its training seconds and its score
    on ``args.dev`` in the metric of ``args.task``."""
    store = ArtifactStore(work / "artifacts")
    models = ModelStore((work / "models").resolve())
    models.import_shipped("smollm2")
    data = store_dataset(store, paperdata.write_jsonl(rows, work / name / "train.jsonl"))
    started = time.perf_counter()
    try:
        outcome = ModelTrainer(store, models, work / "runs").train(
            TrainJob((data,), SMOLLM2, task, options)
        )
    finally:
        benchkit.stop_ray()
    train_s = time.perf_counter() - started
    dev = read_jsonl(paperdata.write_jsonl(args.dev, work / "dev.jsonl"))
    subject = StudentSubject.from_store(store, outcome.model.uri)
    result = asyncio.run(Evaluator(store).evaluate(subject, dev, evaluate_options(args)))
    metric = paperdata.PAPER[args.task].metric
    return {"train_s": round(train_s, 1), "dev": summary(result, metric)}


def load_sets(args: argparse.Namespace, work: Path) -> Sets:
    """Training rows, the generated holdout and validation rows after them, and the dev rows."""
    wanted = args.train_limit + args.holdout + args.validation
    rows = paperdata.generated(args.shared_data, args.task, wanted)
    train = rows[: args.train_limit]
    holdout = rows[args.train_limit : args.train_limit + args.holdout]
    validation = rows[args.train_limit + args.holdout :]
    if not holdout:
        raise SystemExit(
            f"{args.task}: no generated examples left after {len(train)} for a holdout"
        )
    dev_rows = paperdata.dev(args.shared_data, args.task, args.eval_limit)
    return Sets(
        train,
        validation,
        read_jsonl(paperdata.write_jsonl(holdout, work / "holdout.jsonl")),
        read_jsonl(paperdata.write_jsonl(dev_rows, work / "dev.jsonl")),
    )


def evaluate_options(args: argparse.Namespace) -> EvaluateOptions:
    """The same metrics and output length for student and teacher."""
    return EvaluateOptions(metrics=METRICS, max_new_tokens=args.max_output_tokens)


def score_teacher(
    args: argparse.Namespace,
    work: Path,
    store: ArtifactStore,
    task: TaskSpec,
    sets: Sets,
    metric: str,
) -> tuple[str, dict[str, Any]]:
    """The teacher's figures on dev and holdout (an ``error`` entry where it failed)."""
    path, alias = resolve_gguf(args.teacher, (args.models_dir or work / "models").resolve())
    server = LocalLLMServer(LocalLLMConfig(path, alias, n_parallel=args.teacher_parallel))
    figures: dict[str, Any] = {}
    base_url = server.start()
    try:
        for name, eval_data in (("dev", sets.dev), ("holdout", sets.holdout)):
            try:
                result = asyncio.run(teacher_result(base_url, alias, args, store, task, eval_data))
            except P2MError as exc:
                figures[name] = {"error": str(exc), "load_avg": benchkit.load_average()}
                continue
            figures[name] = summary(result, metric)
    finally:
        server.stop()
    return alias, figures


async def teacher_result(
    base_url: str,
    alias: str,
    args: argparse.Namespace,
    store: ArtifactStore,
    task: TaskSpec,
    data: EvalData,
) -> EvaluationResult:
    """Evaluate the teacher on ``data`` through the evaluator, as `p2m evaluate --teacher` does."""
    config = LLMConfig(
        base_url=base_url,
        model=alias,
        timeout_s=TEACHER_TIMEOUT_S,
        max_concurrency=args.teacher_parallel,
    )
    async with LLMClient(config) as llm:

        async def source() -> LLMClient:
            return llm

        evaluator = Evaluator(store, llm=source, teacher_model=alias)
        return await evaluator.evaluate(TeacherSubject(), data, evaluate_options(args), task)


def summary(result: EvaluationResult, metric: str) -> dict[str, Any]:
    """Score in the paper's units (Exact Match and ChrF++ on 0..100), size, latency, load."""
    exact_match = 100 * result.metrics["exact_match"]
    chrf = result.metrics["chrf"]
    worst = result.worst_examples[0] if result.worst_examples else None
    return {
        "score": round(exact_match if metric == "exact_match" else chrf, 2),
        "exact_match": round(exact_match, 2),
        "chrf": round(chrf, 2),
        "examples": result.num_examples,
        "latency_p50_ms": round(result.latency.p50_ms, 1),
        "runtime": result.notes.get("runtime", ""),
        "wall_s": round(result.latency.total_seconds, 1),
        "worst": (
            {
                "input": worst.input[:120],
                "prediction": worst.prediction[:80],
                "reference": worst.reference[:80],
            }
            if worst
            else None
        ),
        "load_avg": benchkit.load_average(),
    }


def show(figures: dict[str, Any]) -> None:
    """The figures for people."""
    sizes, metric = figures["sizes"], figures["metric"]
    print(
        f"{figures['task']}: paper metric {metric}; student {figures['base_model']} trained on "
        f"{sizes['train']} generated examples ({figures['epochs']} epochs, "
        f"{figures['training']['wall_s']:.0f} s, {figures['training']['examples_per_s']} "
        f"examples/s{', bare inputs' if figures['omit_instruction'] else ''}); "
        f"teacher {figures['teacher_model'] or 'none'}"
    )
    print(f"machine: {benchkit.machine_line(figures['machine'])}")
    dev_head, holdout_head = f"dev ({sizes['dev']})", f"holdout ({sizes['holdout']})"
    print(f"{'':<10}{dev_head:>14}{holdout_head:>16}")
    rows = [("student", figures["student"]), ("teacher", figures["teacher"] or {})]
    for label, by_set in rows:
        cells = []
        for name in ("dev", "holdout"):
            entry = by_set.get(name)
            cells.append("-" if not entry else entry.get("score", "failed"))
        print(f"{label:<10}{cells[0]!s:>14}{cells[1]!s:>16}")
    print(
        f"paper (full test set): gpt-3.5-turbo {figures['paper_gpt35']}, "
        f"Prompt2Model student {figures['paper_prompt2model']}"
    )
    dev, holdout = figures["student"]["dev"], figures["student"]["holdout"]
    print(
        f"student: holdout - dev = {holdout['score'] - dev['score']:+.1f}; latency p50 "
        f"{dev['latency_p50_ms']:.0f} ms; {figures['model_size_mb']} MB; "
        f"{benchkit.load_note(figures['load_avg_end'])}"
    )
    if dev["worst"]:
        worst = dev["worst"]
        print(
            f"worst dev example: {worst['input'][:70]!r} -> {worst['prediction'][:40]!r} "
            f"(want {worst['reference'][:40]!r})"
        )


if __name__ == "__main__":
    main()
