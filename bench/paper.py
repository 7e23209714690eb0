"""The paper's benchmark: train the student on the paper's generated set, score it on the dev half.

Trains with Ray Train on the first N generated examples of the task (gpt-3.5-turbo output from
the paper's own runs), then evaluates on the dev half of the real test set and prints the paper's
metric (SQuAD: Exact Match; Temporal and MCoNaLa: ChrF++) beside the paper's figures.

    .venv/bin/python bench/paper.py --task temporal --train-limit 500 [--eval-limit 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import paperdata

from p2m.common.artifacts import ArtifactStore
from p2m.evaluator.engine import EvaluateOptions, Evaluator, StudentSubject, read_jsonl
from p2m.retriever.model_store import ModelStore
from p2m.trainer.data import store_dataset
from p2m.trainer.engine import ModelTrainer, TrainJob
from p2m.trainer.options import TrainOptions

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=paperdata.TASKS, required=True)
    parser.add_argument("--train-limit", type=int, default=500)
    parser.add_argument("--eval-limit", type=int, default=0, help="dev examples (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-input-tokens", type=int, default=384)
    parser.add_argument("--max-output-tokens", type=int, default=64)
    parser.add_argument("--base-model", default=SMOLLM2)
    parser.add_argument("--data-dir", type=Path, help="keep models here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("P2M_SHARED_DATA", "../shared/data")),
    )
    args = parser.parse_args()
    work = args.data_dir or Path(tempfile.mkdtemp(prefix="p2m-bench-paper-"))
    store = ArtifactStore(work / "artifacts")
    models = ModelStore(work / "models")
    if args.base_model == SMOLLM2:
        models.import_shipped("smollm2")
    task = paperdata.task_spec(args.shared_data, args.task)
    paper = paperdata.PAPER[args.task]
    train_rows = paperdata.generated(args.shared_data, args.task, args.train_limit)
    dev_rows = paperdata.dev(args.shared_data, args.task, args.eval_limit)
    data = store_dataset(store, paperdata.write_jsonl(train_rows, work / "train" / "train.jsonl"))
    options = TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_workers=args.workers,
        max_input_tokens=args.max_input_tokens,
        max_output_tokens=args.max_output_tokens,
    )
    started = time.perf_counter()
    outcome = ModelTrainer(store, models, work / "runs").train(
        TrainJob((data,), args.base_model, task, options)
    )
    train_wall = time.perf_counter() - started
    test = read_jsonl(paperdata.write_jsonl(dev_rows, work / "dev.jsonl"))
    evaluator = Evaluator(store)
    subject = StudentSubject.from_store(store, outcome.model.uri)
    result = asyncio.run(
        evaluator.evaluate(subject, test, EvaluateOptions(metrics=("exact_match", "chrf")))
    )
    score = result.metrics[paper.metric] * (100 if paper.metric == "exact_match" else 1)
    figures = {
        "task": args.task,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "base_model": args.base_model,
        "train_examples": len(train_rows),
        "dev_examples": result.num_examples,
        "epochs": args.epochs,
        "train_seconds": round(train_wall, 1),
        "train_examples_per_s": round(outcome.report.samples_per_second, 2),
        "final_loss": round(outcome.report.final_loss, 4),
        "metric": paper.metric,
        "student": round(score, 2),
        "exact_match": round(100 * result.metrics["exact_match"], 2),
        "chrf": round(result.metrics["chrf"], 2),
        "latency_p50_ms": round(result.latency.p50_ms, 1),
        "model_size_mb": round(result.model_size_bytes / 1e6, 1),
        "paper_gpt35": paper.paper_teacher,
        "paper_prompt2model": paper.paper_student,
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{args.task}: {figures['student']:.1f} {paper.metric} on {result.num_examples} dev "
        f"examples (student {args.base_model}, {len(train_rows)} generated examples, "
        f"{args.epochs} epochs, {train_wall:.0f} s training on {figures['machine']})"
    )
    print(
        f"  paper (full test set): gpt-3.5-turbo {paper.paper_teacher}, "
        f"Prompt2Model student {paper.paper_student}"
    )
    print(
        f"  exact match {figures['exact_match']:.1f}, ChrF++ {figures['chrf']:.1f}, "
        f"latency p50 {figures['latency_p50_ms']:.0f} ms, {figures['model_size_mb']} MB"
    )
    for example in result.worst_examples[:3]:
        print(
            f"  worst: {example.input[:70]!r} -> {example.prediction[:40]!r} "
            f"(want {example.reference[:40]!r})"
        )


if __name__ == "__main__":
    main()
