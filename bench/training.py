"""Training throughput: each speed change beside the old loop, then Ray Train with 1 and 2 workers.

The same model, data (the paper's generated SQuAD set by default: the longest inputs), batch size
per worker and number of steps for each row. A plain PyTorch loop first, in the trainer's old
form (fp32, batches in random order, AdamW's per-parameter loop, the instruction's tokens
computed for every example, logits at every position), then with one change at a time, with the
four the trainer now makes by default, with those and bf16 autocast (``--precision auto``), and
that on bare inputs (``omit_instruction``); then the trainer itself through Ray Train. Each plain
loop runs in a process of its own. Prints examples/s of the training steps themselves (model
loading and Ray's start excluded, shown apart as wall time), the share of padding tokens in the
batches, the loop's peak memory (the process's, and its steps' alone from the loaded model on)
and the ratio to the old loop (``--json``: one JSON object instead). The last rows change the
step's memory, not its result: freed memory returned to the system at once (``freed_memory``;
the trainer does it where memory is tight), and a batch cut into passes of a token budget
(``passes``; ``--max-tokens-per-pass``). ``--loops`` picks loops by their numbers in that list
(0: the Ray Train rows); ``--model qwen`` trains Qwen2.5-Coder-0.5B, whose 151k-entry
vocabulary makes the head's share of the work the largest.

    .venv/bin/python bench/training.py [--task squad] [--model smollm2|qwen|tiny-t5] [--steps 12]
        [--loops 1,5,8] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import benchkit
import paperdata

from p2m.common.artifacts import ArtifactStore
from p2m.common.model_store import ModelStore
from p2m.common.types import Example, TaskSpec
from p2m.trainer.batching import epoch_batches
from p2m.trainer.data import store_dataset
from p2m.trainer.disk_space import parameter_count
from p2m.trainer.encode import collate, encode_examples
from p2m.trainer.engine import ModelTrainer, TrainJob
from p2m.trainer.freed_memory import return_freed_memory
from p2m.trainer.options import TrainOptions
from p2m.trainer.passes import step_backward
from p2m.trainer.precision import resolve_precision
from p2m.trainer.worker import load_base_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny models
from tests.tiny_models import build_tiny_t5

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
WARMUP_STEPS = 2  # first steps of each loop, left out of examples/s (allocations, caches)


@dataclass(frozen=True)
class Loop:
    """One way to run the training steps."""

    fused_adamw: bool = True
    group_by_length: bool = True
    precision: str = "fp32"
    shared_prefix: bool = True
    labelled_logits: bool = True
    instruction: bool = True
    max_tokens_per_pass: int = 0
    return_freed_memory: bool = False


OLD = Loop(fused_adamw=False, group_by_length=False, shared_prefix=False, labelled_logits=False)
LOOPS = {
    "old loop (random batches, AdamW's loop)": OLD,
    "+ fused AdamW": replace(OLD, fused_adamw=True),
    "+ batches grouped by length": replace(OLD, group_by_length=True),
    "+ instruction computed once per batch": replace(OLD, shared_prefix=True),
    "+ logits only where a label is predicted": replace(OLD, labelled_logits=True),
    "+ bf16 autocast": replace(OLD, precision="auto"),
    "the defaults before logits at labels only": Loop(labelled_logits=False),
    "the first four: the trainer's defaults (fp32)": Loop(),
    "the defaults + bf16 autocast (--precision auto)": Loop(precision="auto"),
    "the same without the instruction": Loop(precision="auto", instruction=False),
    "the defaults, freed memory returned at once (where memory is tight)": Loop(
        return_freed_memory=True
    ),
    "the defaults in passes of 2048 tokens": Loop(max_tokens_per_pass=2048),
    "the defaults in passes of 1024 tokens": Loop(max_tokens_per_pass=1024),
    "the defaults in passes of 512 tokens": Loop(max_tokens_per_pass=512),
}


def plain_loop(
    base: Path,
    architecture: str,
    task: TaskSpec,
    examples: list[Example],
    steps: int,
    batch: int,
    loop: Loop,
) -> dict[str, float]:
    """Examples/s, padding share and wall time of ``steps`` steps in one process without Ray."""
    import torch
    from transformers import AutoTokenizer

    from p2m.common.student import ensure_pad_token

    started = time.perf_counter()
    if loop.return_freed_memory:
        return_freed_memory()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    ensure_pad_token(tokenizer)
    options = TrainOptions().with_learning_rate_for(parameter_count(base))
    rows = encode_examples(
        tokenizer,
        architecture,
        task.instruction if loop.instruction else "",
        examples,
        options.max_input_tokens,
        options.max_output_tokens,
    )
    lengths = [len(row["input_ids"]) for row in rows]
    batches = epoch_batches(lengths, batch, group_by_length=loop.group_by_length)[:steps]
    precision = resolve_precision(loop.precision, "cpu")
    model = load_base_model(str(base), architecture, options, None)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, fused=loop.fused_adamw or None
    )
    busy, seen, real, padded = 0.0, 0, 0, 0
    loaded_gb = _resident_gb()
    _reset_peak()
    for step, indices in enumerate(batches):
        tick = time.perf_counter()
        figures = step_backward(
            model,
            [rows[i] for i in indices],
            lambda group: collate(group, tokenizer.pad_token_id),
            torch.device("cpu"),
            max_tokens_per_pass=loop.max_tokens_per_pass,
            precision=precision,
            encoder_decoder=architecture == "encoder-decoder",
            shared_prefix=loop.shared_prefix,
            labelled_logits=loop.labelled_logits,
        )
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= WARMUP_STEPS:
            busy += time.perf_counter() - tick
            seen += len(indices)
        real += figures.tokens
        padded += figures.padded_tokens
    return {
        "examples_per_s": seen / busy if busy else 0.0,
        "padding_share": 1 - real / padded if padded else 0.0,
        "wall_s": time.perf_counter() - started,
        "precision": precision,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loaded_gb": loaded_gb,
        "steps_peak_gb": _peak_since_reset(),
    }


def _reset_peak() -> None:
    """Reset the process's peak resident memory (Linux: VmHWM), so the steps' own peak shows."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _resident_gb() -> float:
    return _status_kb("VmRSS") / 2**20


def _peak_since_reset() -> float:
    """The peak resident memory since ``_reset_peak`` (the whole run's where it could not)."""
    return _status_kb("VmHWM") / 2**20


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def plain_loop_alone(*args: object) -> dict[str, float]:
    """``plain_loop`` in a process of its own, so its peak memory is its own."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(plain_loop, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=paperdata.TASKS, default="squad")
    parser.add_argument("--model", choices=("smollm2", "qwen", "tiny-t5"), default="smollm2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--loops",
        default="",
        help="the loops to run, by their numbers in the list (1: the old loop), 0 for the Ray "
        "Train rows; e.g. 1,8 or 0,1 (default: all)",
    )
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
        "task": args.task,
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
        f"{args.task} examples, {args.steps} steps of {args.batch_size} per worker"
    )
    for label, run in runs.items():
        padding = f"{run['padding_share']:.2f}" if "padding_share" in run else "-"
        peak = f"{run['peak_rss_gb']:.2f} GB" if "peak_rss_gb" in run else "-"
        if "steps_peak_gb" in run:
            peak += f", steps {run['steps_peak_gb']:.2f} GB"
        print(
            f"{label:<45}: {run['examples_per_s']:6.2f} examples/s (x{run['ratio_to_old']:4.2f}; "
            f"padding {padding}; peak memory {peak}; wall {run['wall_s']:5.1f} s; "
            f"{benchkit.load_note(run['load_avg'])})"
        )


def measure(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Each loop's figures, then Ray Train's with 1 and 2 workers, each beside the old loop."""
    store = ArtifactStore(work / "artifacts")
    models = ModelStore(work / "models")
    if args.model == "tiny-t5":
        base = build_tiny_t5(models.import_shipped("smollm2").path, work / "t5")
    else:
        base = models.import_shipped(args.model).path
    architecture = "encoder-decoder" if args.model == "tiny-t5" else "decoder-only"
    task = paperdata.task_spec(args.shared_data, args.task)
    steps = args.steps + WARMUP_STEPS
    examples = paperdata.generated(args.shared_data, args.task, args.batch_size * 2 * steps)
    chosen = {int(n) for n in args.loops.split(",") if n.strip()} or set(range(len(LOOPS) + 1))
    runs: dict[str, dict] = {}
    for number, (label, loop) in enumerate(LOOPS.items(), start=1):
        if number not in chosen:
            continue
        figures = plain_loop_alone(base, architecture, task, examples, steps, args.batch_size, loop)
        runs[label] = {
            "workers": 1,
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()},
            "load_avg": benchkit.load_average(),
        }
    folder = paperdata.write_jsonl(examples, work / "data" / "train.jsonl").parent
    dataset = store_dataset(store, folder)
    trainer = ModelTrainer(store, models, work / "runs")
    for workers in (1, 2) if 0 in chosen else ():
        started = time.perf_counter()
        options = TrainOptions(
            batch_size=args.batch_size,
            max_steps=steps,
            epochs=1,
            num_workers=workers,
        )
        report = trainer.train(TrainJob((dataset,), str(base), task, options)).report
        runs[f"Ray Train, {workers} worker{'s' if workers > 1 else ''}, the defaults (fp32)"] = {
            "workers": workers,
            "examples_per_s": round(report.samples_per_second, 3),
            "wall_s": round(time.perf_counter() - started, 2),
            "precision": report.precision,
            "load_avg": benchkit.load_average(),
        }
    old = runs.get(next(iter(LOOPS)), {}).get("examples_per_s", 0.0)
    for run in runs.values():
        run["ratio_to_old"] = round(run["examples_per_s"] / old, 3) if old else 0.0
    return runs


if __name__ == "__main__":
    main()
