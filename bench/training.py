"""Training throughput: Ray Train with 1 and 2 workers against a plain PyTorch loop.

The same model, data (the paper's generated Temporal set), batch size per worker, optimizer and
number of steps for each. Prints examples/s of the training steps themselves (model loading and
Ray's start excluded, shown apart as wall time) and the ratios to the plain loop (``--json``: one
JSON object instead).

    .venv/bin/python bench/training.py [--model smollm2|tiny-t5] [--steps 12] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import benchkit
import paperdata

from p2m.common.artifacts import ArtifactStore
from p2m.common.model_store import ModelStore
from p2m.common.types import TaskSpec
from p2m.trainer.data import store_dataset
from p2m.trainer.encode import collate, encode_examples
from p2m.trainer.engine import ModelTrainer, TrainJob
from p2m.trainer.options import TrainOptions
from p2m.trainer.worker import load_base_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny models
from tests.tiny_models import build_tiny_t5

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def plain_loop(
    base: Path, architecture: str, task: TaskSpec, examples: list, options: TrainOptions
) -> tuple[float, float]:
    """Examples/s of the same steps in one process without Ray, and its wall time."""
    import torch
    from transformers import AutoTokenizer

    from p2m.common.student import ensure_pad_token

    started = time.perf_counter()
    torch.manual_seed(options.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ensure_pad_token(tokenizer)
    rows = encode_examples(
        tokenizer,
        architecture,
        task.instruction,
        examples,
        options.max_input_tokens,
        options.max_output_tokens,
    )
    model = load_base_model(str(base), architecture, options, None)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate)
    busy, seen = 0.0, 0
    for step in range(options.max_steps):
        start = (step * options.batch_size) % len(rows)
        batch = collate(rows[start : start + options.batch_size], tokenizer.pad_token_id)
        tick = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        busy += time.perf_counter() - tick
        seen += len(batch["input_ids"])
    return seen / busy, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=("smollm2", "tiny-t5"), default="smollm2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    benchkit.common_arguments(parser, "tiny T5, 6 steps")
    args = parser.parse_args()
    if args.quick:
        args.model, args.steps = "tiny-t5", 6
    load_start = benchkit.load_average()
    with tempfile.TemporaryDirectory(
        prefix="p2m-bench-training-", ignore_cleanup_errors=True
    ) as tmp:
        try:
            runs = measure(args, Path(tmp))
        finally:
            benchkit.stop_ray()
    figures = {
        "bench": "training",
        "quick": args.quick,
        "machine": benchkit.machine(),
        "load_avg_start": load_start,
        "load_avg_end": benchkit.load_average(),
        "model": args.model,
        "steps": args.steps,
        "batch_size_per_worker": args.batch_size,
        "runs": runs,
    }
    if args.json:
        benchkit.emit(figures)
        return
    print(
        f"machine: {benchkit.machine_line(figures['machine'])}; model {args.model}; "
        f"{args.steps} steps of {args.batch_size} examples per worker"
    )
    for label, run in runs.items():
        print(
            f"{label:<19}: {run['examples_per_s']:7.2f} examples/s  (wall {run['wall_s']:5.1f} s, "
            f"ratio to plain {run['ratio_to_plain']:4.2f}; {benchkit.load_note(run['load_avg'])})"
        )


def measure(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Examples/s and wall time of the plain loop and of Ray Train with 1 and 2 workers."""
    store = ArtifactStore(work / "artifacts")
    models = ModelStore(work / "models")
    smollm2 = models.import_shipped("smollm2")
    base = smollm2.path if args.model == "smollm2" else build_tiny_t5(smollm2.path, work / "t5")
    architecture = "decoder-only" if args.model == "smollm2" else "encoder-decoder"
    task = paperdata.task_spec(args.shared_data, "temporal")
    examples = paperdata.generated(args.shared_data, "temporal", args.batch_size * 2 * args.steps)
    folder = paperdata.write_jsonl(examples, work / "data" / "train.jsonl").parent
    dataset = store_dataset(store, folder)
    options = TrainOptions(batch_size=args.batch_size, max_steps=args.steps, epochs=1)
    plain, plain_wall = plain_loop(base, architecture, task, examples, options)
    runs = {
        "plain PyTorch loop": {
            "workers": 1,
            "examples_per_s": round(plain, 3),
            "wall_s": round(plain_wall, 2),
            "ratio_to_plain": 1.0,
            "load_avg": benchkit.load_average(),
        }
    }
    trainer = ModelTrainer(store, models, work / "runs")
    for workers in (1, 2):
        started = time.perf_counter()
        job = TrainJob(
            (dataset,),
            str(base),
            task,
            TrainOptions(
                batch_size=args.batch_size, max_steps=args.steps, epochs=1, num_workers=workers
            ),
        )
        report = trainer.train(job).report
        runs[f"Ray Train {workers} worker{'s' if workers > 1 else ''}"] = {
            "workers": workers,
            "examples_per_s": round(report.samples_per_second, 3),
            "wall_s": round(time.perf_counter() - started, 2),
            "ratio_to_plain": round(report.samples_per_second / plain, 3) if plain else 0.0,
            "load_avg": benchkit.load_average(),
        }
    return runs


if __name__ == "__main__":
    main()
