"""Learning curves on a paper task: the dev score and the losses against examples and epochs.

Trains the student (``--student``: a shipped model, SmolLM2-135M by default) on the first
``--train`` of the paper's generated examples that the generator's output-share cap keeps
(``--share``, the generator's default; 0: the first as generated) with the trainer's recipe,
except that the validation split is the task's dev half and only watches: the last weights are
kept (``keep_best`` off) and nothing stops early, so the dev half chooses nothing. Every
``--eval-every`` steps and at each epoch's end the trainer's validation gives the dev loss and
the dev metric (greedy outputs on all ``--dev`` examples); the training loss comes from the step
events. At the end the evaluator scores the final model on the same dev examples (the figure
RESULTS.md gives). Writes ``curves-<task>.json`` and ``curves-<task>.png`` (dev score against
examples seen, epochs marked; training and dev loss against steps) to ``--out``, and the events
as they come to ``events-<task>.jsonl``; another student than the default adds its name
(``curves-<task>-qwen``).

A long run: start it in the background with ``--data-dir`` kept; the same command again resumes
from the last checkpoint (the training is named by its data and options).

    .venv/bin/python bench/curves.py --task temporal [--train 2000] [--epochs 3]
        [--eval-every 125] [--dev 100] [--learning-rate 1e-4] [--share 0.02] [--student qwen]
        [--out bench/figures] [--data-dir DIR] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import benchkit
import paperdata

from p2m.common.artifacts import ArtifactStore
from p2m.common.model_store import ModelStore
from p2m.common.shipped_models import SHIPPED_MODELS
from p2m.evaluator.engine import EvaluateOptions, Evaluator, StudentSubject, read_jsonl
from p2m.generator.output_share import DEFAULT_SHARE
from p2m.trainer.data import store_dataset
from p2m.trainer.disk_space import parameter_count
from p2m.trainer.engine import ModelTrainer, TrainEvent, TrainJob
from p2m.trainer.options import TrainOptions

QUICK = {"train": 24, "dev": 8, "epochs": 2, "eval_every": 2, "max_output_tokens": 16}


def main() -> None:
    """Parse the flags, train and plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=paperdata.TASKS, required=True)
    parser.add_argument("--train", type=int, default=2000, help="generated training examples")
    parser.add_argument("--dev", type=int, default=100, help="dev examples watched and scored")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--eval-every",
        type=int,
        default=125,
        help="steps between validations (each one decodes every dev example greedily)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=TrainOptions().learning_rate,
        help="0: the trainer's, by the base model's size",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-output-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=TrainOptions().seed)
    parser.add_argument(
        "--share",
        type=float,
        default=DEFAULT_SHARE,
        help="train on the first --train examples the generator's output-share cap keeps at "
        "this share, as the generator does by default (0: the first --train as generated)",
    )
    parser.add_argument(
        "--student",
        choices=sorted(SHIPPED_MODELS),
        default=benchkit.DEFAULT_STUDENT,
        help="the shipped model to fine-tune (its weights dequantised into the model store)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "figures")
    parser.add_argument("--data-dir", type=Path, help="keep runs here (resumable; default: temp)")
    args = benchkit.parse_arguments(parser, QUICK)
    load_start = benchkit.load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data_dir:
        figures = measure(args, args.data_dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="p2m-curves-", ignore_cleanup_errors=True) as t:
            figures = measure(args, Path(t))
    figures["png"] = str(plot(figures, args.out / f"{run_name('curves', args)}.png"))
    (args.out / f"{run_name('curves', args)}.json").write_text(json.dumps(figures, indent=1) + "\n")
    benchkit.finish("curves", args, load_start, figures, show)


def run_name(kind: str, args: argparse.Namespace) -> str:
    """``<kind>-<task>``, with the student's name when it is not the default one."""
    suffix = "" if args.student == benchkit.DEFAULT_STUDENT else f"-{args.student}"
    return f"{kind}-{args.task}{suffix}"


def trained_seconds(args: argparse.Namespace, cached: bool, wall: float) -> int:
    """How long the training took: this call's time, or the earlier run's when it was cached.

    A cached run's figures carry the first run's time forward, so any number of later reports
    keep it (0: not known).
    """
    if cached:
        earlier = args.out / f"{run_name('curves', args)}.json"
        try:
            figures = json.loads(earlier.read_text(encoding="utf-8"))
            same = (figures.get("train"), figures.get("share", 0.0)) == (args.train, args.share)
            if same and figures.get("wall_s"):
                return int(figures["wall_s"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return round(wall)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train while watching the dev half, then score the final model on it."""
    store = ArtifactStore(work / "artifacts")
    models = ModelStore(work / "models")
    student = models.import_shipped(args.student)
    dev_rows = paperdata.dev(args.shared_data, args.task, args.dev)
    task = paperdata.task_spec(args.shared_data, args.task)
    if args.share:
        pool = paperdata.generated(args.shared_data, args.task, paperdata.POOL)
        rows = paperdata.capped(pool, task, args.train, args.share)
        folder = work / f"data-{args.task}-{args.train}-share{args.share:g}"
    else:
        rows = paperdata.generated(args.shared_data, args.task, args.train)
        folder = work / f"data-{args.task}-{args.train}"
    paperdata.write_jsonl(rows, folder / "train.jsonl")
    paperdata.write_jsonl(dev_rows, folder / "validation.jsonl")
    options = TrainOptions(
        epochs=args.epochs,
        min_steps=0,  # the curve runs exactly --epochs, whatever --train
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_output_tokens=args.max_output_tokens,
        seed=args.seed,
        eval_steps=args.eval_every,
        eval_metric_examples=len(dev_rows),
        keep_best=False,
        early_stopping_patience=0,
    ).with_learning_rate_for(parameter_count(student.path))
    events_path = args.out / f"{run_name('events', args)}.jsonl"
    # A resumed run (same --data-dir) keeps the training losses its earlier part logged; the
    # steps it repeats from its checkpoint replace theirs.
    losses = _logged_losses(events_path) if args.data_dir else {}
    if not args.data_dir:
        events_path.unlink(missing_ok=True)

    def record(event: TrainEvent) -> None:
        row = {k: v for k, v in asdict(event).items() if k != "checkpoint"}
        with events_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if event.loss is not None and not event.message:
            losses[event.step] = event.loss

    started = time.perf_counter()
    try:
        outcome = ModelTrainer(store, models, work / "runs").train(
            TrainJob((store_dataset(store, folder),), student.name, task, options), record
        )
    finally:
        benchkit.stop_ray()
    wall = time.perf_counter() - started
    dev = read_jsonl(paperdata.write_jsonl(dev_rows, work / "dev.jsonl"))
    result = asyncio.run(
        Evaluator(store).evaluate(
            StudentSubject.from_store(store, outcome.model.uri),
            dev,
            EvaluateOptions(metrics=("exact_match", "chrf"), max_new_tokens=args.max_output_tokens),
        )
    )
    report = outcome.report
    metric = paperdata.PAPER[args.task].metric
    return {
        "task": args.task,
        "student": student.name,
        "metric": metric,
        "train": len(rows),
        "share": args.share,
        "dev": len(dev_rows),
        "dev_rows": paperdata.DEV_ROWS,
        "options": asdict(options),
        "wall_s": trained_seconds(args, report.cached, wall),
        "examples_per_s": round(report.samples_per_second, 2),
        "precision": report.precision,
        "steps": report.steps,
        "cached": report.cached,
        "final_dev_score": _score(metric, result.metrics),
        "final_dev_metrics": result.metrics,
        "final_dev_runtime": result.notes.get("runtime", ""),
        "validations": list(report.evaluations),
        "training_loss": [{"step": k, "loss": v} for k, v in sorted(losses.items())],
        "paper_gpt35": paperdata.PAPER[args.task].paper_teacher,
        "paper_prompt2model": paperdata.PAPER[args.task].paper_student,
    }


def _logged_losses(events_path: Path) -> dict[int, float]:
    """Training loss by step from an earlier part's events (none when there is no file)."""
    if not events_path.exists():
        return {}
    losses = {}
    for line in events_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("loss") is not None and not row.get("message"):
            losses[int(row["step"])] = float(row["loss"])
    return losses


def _score(metric: str, metrics: dict[str, float]) -> float:
    """The paper's figure: Exact Match in percent, or ChrF++."""
    return round(100 * metrics["exact_match"] if metric == "exact_match" else metrics["chrf"], 2)


def plot(figures: dict[str, Any], path: Path) -> Path:
    """Two panels: the dev score against examples seen; training and dev loss against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = figures["metric"]
    validations = figures["validations"]
    key = "exact_match" if metric == "exact_match" else "chrf"
    scale = 100.0 if key == "exact_match" else 1.0
    seen = [v["examples_seen"] for v in validations]
    score = [(v.get(key) or 0.0) * scale for v in validations]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(seen, score, marker="o", label="student (dev, greedy)")
    left.axhline(
        figures["paper_gpt35"], color="grey", linestyle="--", label="gpt-3.5-turbo (paper)"
    )
    left.axhline(
        figures["paper_prompt2model"], color="green", linestyle=":", label="Prompt2Model (paper)"
    )
    per_epoch = figures["train"]
    for epoch in range(1, figures["options"]["epochs"]):
        left.axvline(epoch * per_epoch, color="lightgrey", linewidth=0.8)
    left.set_xlabel("training examples seen (grey lines: epochs)")
    left.set_ylabel("Exact Match (%)" if key == "exact_match" else "ChrF++")
    student = str(figures.get("student", "")).split("/")[-1] or "student"
    left.set_title(
        f"{figures['task']}: {student}'s dev score, trained on {figures['train']} examples",
        fontsize=10,
    )
    left.legend(fontsize=8, loc="best")
    loss = figures["training_loss"]
    right.plot([s["step"] for s in loss], [s["loss"] for s in loss], label="training (running)")
    right.plot(
        [v["step"] for v in validations],
        [v["eval_loss"] for v in validations],
        marker="o",
        label="dev",
    )
    right.set_xlabel("optimizer step")
    right.set_ylabel("loss")
    right.set_title("losses")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def show(figures: dict[str, Any]) -> None:
    """A short table of the curve."""
    print(
        f"{figures['task']}: {figures['train']} examples, {figures['options']['epochs']} epochs, "
        f"lr {figures['options']['learning_rate']}, {figures['steps']} steps, "
        f"{figures['examples_per_s']} ex/s, {figures['wall_s']} s"
    )
    print("step  epoch  examples  dev loss  dev EM  dev ChrF++")
    for v in figures["validations"]:
        print(
            f"{v['step']:>4}  {v['epoch']:5.2f}  {v['examples_seen']:>8}  {v['eval_loss']:8.4f}  "
            f"{100 * (v.get('exact_match') or 0):6.1f}  {v.get('chrf') or 0:10.1f}"
        )
    print(f"final model, evaluator on dev: {figures['final_dev_score']} ({figures['metric']})")
    print(f"plot: {figures['png']}")


if __name__ == "__main__":
    main()
