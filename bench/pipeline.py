"""The pipeline's own benchmark: the paper's three prompts through the gateway, embedded defaults.

For each task the local stack (`p2m up`: the default teacher on llama.cpp, the catalogs and
local datasets of ``--shared-data``, SmolLM2 as the student) runs the paper's prompt as a person
would: parse, retrieval, generation of ``--examples`` examples, student retrieval, training for
``--epochs`` (more on small data, up to ``--min-steps``, as the trainer does), and the run's own
evaluation (deployment skipped). Then the trained student and the teacher are scored on the
task's dev half, with the paper's metric, through the evaluator.

Figures: student and teacher on the dev half beside half of gpt-3.5-turbo's paper figure (the
bar both must clear), the run's own estimate and what it rests on, the time of each stage,
examples generated and dropped by reason, and the datasets retrieved.

    .venv/bin/python bench/pipeline.py [--tasks squad,temporal,mconala_ja] [--examples 80]
        [--epochs 3] [--min-steps N] [--eval-limit 100] [--teacher qwen] [--answer-temperature T]
        [--self-consistency-samples N] [--seed N] [--max-instruction-tokens N]
        [--prompt-demonstrations N] [--student NAME] [--learning-rate LR]
        [--eval-steps N] [--keep-best-by score|loss] [--span-first] [--invariants FILE]
        [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchkit
import paperdata
from paper import summary

from p2m.client import Budget, GatewayClient, RunOptions
from p2m.common.artifacts import ArtifactStore
from p2m.common.atomic import atomic_write_text
from p2m.common.convert import task_spec_from_pb
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.settings import Settings
from p2m.evaluator.engine import (
    EvaluateOptions,
    Evaluator,
    StudentSubject,
    TeacherSubject,
    read_jsonl,
)
from p2m.generator.invariants import Invariants
from p2m.generator.service import invariants_to_pb
from p2m.pipeline_cli import generation_json
from p2m.stack import Stack, down, up
from p2m.trainer.options import KEEP_BEST_BY, TrainOptions
from prompt2model.v1 import common_pb2, gateway_pb2, generator_pb2

GOAL_SHARE = 0.5  # of gpt-3.5-turbo's paper figure: a win between two failures does not count
TEACHER_TIMEOUT_S = 600.0
QUICK = {"examples": 4, "epochs": 1, "eval_limit": 4, "max_steps": 2}


def read_invariants(path: Path) -> generator_pb2.Invariants:
    """The generator's rules from a JSON file, checked as the CLI checks them."""
    rules = Invariants.from_json(json.loads(path.read_text(encoding="utf-8")), "--invariants")
    return invariants_to_pb(rules)


async def run_task(args: argparse.Namespace, stack: Stack, task: str) -> dict[str, Any]:
    """One task's run through the gateway, then its student and teacher on the dev half."""
    prompt = json.loads((args.shared_data / "benchmarks" / "prompts.json").read_text())
    options = RunOptions(
        budget=Budget(num_examples=args.examples, epochs=args.epochs),
        skip_stages=[common_pb2.STAGE_DEPLOY],
    )
    options.train.max_steps = args.max_steps
    if args.answer_temperature is not None:
        options.generate.answer_temperature = args.answer_temperature
    if args.self_consistency_samples is not None:
        options.generate.self_consistency_samples = args.self_consistency_samples
    options.generate.span_first = args.span_first
    options.generate.passage_first = args.passage_first
    if args.invariants is not None:
        options.generate.invariants.CopyFrom(read_invariants(args.invariants))
    if args.seed is not None:
        options.seed = args.seed
    if args.min_steps is not None:
        options.train.min_steps = args.min_steps
    options.train.max_instruction_tokens = args.max_instruction_tokens
    options.train.prompt_demonstrations = args.prompt_demonstrations
    if args.student:
        options.base_model_name = args.student
    if args.learning_rate is not None:
        options.train.learning_rate = args.learning_rate
    if args.eval_steps is not None:
        options.train.eval_steps = args.eval_steps
    options.train.keep_best_by = args.keep_best_by or ""
    options.evaluate.metrics.extend(["exact_match", "chrf"])
    started = time.monotonic()
    async with GatewayClient(stack.gateway, timeout_s=120) as gateway:
        created = await gateway.create_run(prompt["tasks"][task]["full_prompt"], options)
        run = await gateway.wait(created.run_id)
    figures: dict[str, Any] = {
        "task": task,
        "metric": paperdata.PAPER[task].metric,
        "state": gateway_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_").lower(),
        "error": run.error,
        "wall_s": round(time.monotonic() - started, 1),
        "stages": [stage_figures(stage) for stage in run.stages],
        "datasets": [d.name for d in run.datasets],
        "base_model": run.base_model.name,
        "generation": generation_figures(run.report.generation),
        "training": training_figures(run.report.training),
        "run_estimate": {
            "source": run.report.metrics_source,
            "student": dict(run.report.student_metrics.values),
            "student_on_demonstrations": dict(run.report.student_demonstration_metrics.values),
            "notes": list(run.report.estimate_notes),
        },
        "paper_gpt35": paperdata.PAPER[task].paper_teacher,
        "goal": round(GOAL_SHARE * paperdata.PAPER[task].paper_teacher, 1),
    }
    if run.state == gateway_pb2.RUN_STATE_SUCCEEDED and run.report.model.uri:
        figures.update(await dev_scores(args, stack, task, run))
    # Each task's figures as soon as they are known: a run stopped later keeps them in its log.
    print(f"task done: {json.dumps(figures, ensure_ascii=False)}", file=sys.stderr, flush=True)
    return figures


async def dev_scores(
    args: argparse.Namespace, stack: Stack, task: str, run: gateway_pb2.Run
) -> dict[str, Any]:
    """The run's student and the stack's teacher on ``--eval-limit`` dev examples spread evenly."""
    store = ArtifactStore(args.data_dir / "artifacts")
    rows = paperdata.dev(args.shared_data, task, args.eval_limit)
    data = read_jsonl(paperdata.write_jsonl(rows, args.data_dir / f"dev-{task}.jsonl"))
    options = EvaluateOptions(metrics=("exact_match", "chrf"), max_new_tokens=64)
    config = LLMConfig(base_url=stack.llm_base_url, timeout_s=TEACHER_TIMEOUT_S)
    metric = paperdata.PAPER[task].metric
    spec = task_spec_from_pb(run.task)
    async with LLMClient(config) as llm:

        async def source() -> LLMClient:
            return llm

        evaluator = Evaluator(store, llm=source, teacher_model=args.teacher)
        student = await evaluator.evaluate(
            StudentSubject.from_store(store, run.report.model.uri), data, options, spec
        )
        teacher = await evaluator.evaluate(TeacherSubject(), data, options, spec)
    return {"student": summary(student, metric), "teacher": summary(teacher, metric)}


def training_figures(report: Any) -> dict[str, Any]:
    """Steps, epochs done and planned, and where validation stopped it."""
    return {
        "steps": report.steps,
        "epochs": round(report.epochs, 2),
        "planned_epochs": report.planned_epochs,
        "best_step": report.best_step,
        "stopped_early": report.stopped_early,
    }


def stage_figures(stage: gateway_pb2.StageResult) -> dict[str, Any]:
    """A stage's state, seconds, note and figures."""
    seconds = 0.0
    if stage.HasField("start_time") and stage.HasField("finish_time"):
        seconds = stage.finish_time.ToNanoseconds() / 1e9 - stage.start_time.ToNanoseconds() / 1e9
    return {
        "stage": common_pb2.Stage.Name(stage.stage).removeprefix("STAGE_").lower(),
        "state": gateway_pb2.StageState.Name(stage.state).removeprefix("STAGE_STATE_").lower(),
        "seconds": round(seconds, 1),
        "note": stage.note,
        "error": stage.error,
    }


def generation_figures(report: Any) -> dict[str, Any]:
    """Accepted, dropped by reason, duplicate shares and the label histogram of a run."""
    figures = generation_json(report)
    for share in ("duplicate_share", "near_duplicate_share", "commonest_output_share"):
        figures[share] = round(figures[share], 3)
    usage = report.llm_usage
    return {
        **figures,
        "requests": usage.requests,
        "capped_answers": usage.capped_answers,
        "stopped_answers": usage.stopped_answers,
    }


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each task's figures: kept from an earlier run of the same code and sizes, else measured.

    The stack starts once, for the tasks left, if any.
    """
    kept = {task: kept_figures(args, task) for task in args.tasks}
    left = [task for task in args.tasks if kept[task] is None]
    for task in args.tasks:
        if kept[task] is not None:
            print(f"{task}: kept from {kept_path(args, task)}", file=sys.stderr, flush=True)
    if left:
        kept.update(zip(left, measure_tasks(args, left), strict=True))
    return [figures for task in args.tasks if (figures := kept[task]) is not None]


def measure_tasks(args: argparse.Namespace, tasks: list[str]) -> list[dict[str, Any]]:
    """Start the stack, run ``tasks`` through it (each kept once it succeeded), stop it."""
    settings = Settings.load(
        {
            "data_dir": args.data_dir,
            "local_llm": args.teacher,
            "catalog_dir": str(args.shared_data.resolve() / "catalogs"),
            "datasets_dir": str(args.shared_data.resolve() / "datasets"),
            "max_retrieved_rows": args.retrieved_rows,
            "llm_timeout_s": TEACHER_TIMEOUT_S,
        }
    )
    stack = up(settings)
    measured = []
    try:
        asyncio.run(cancel_leftovers(stack))
        for task in tasks:
            figures = asyncio.run(run_task(args, stack, task))
            keep(args, task, figures)
            measured.append(figures)
    finally:
        down(settings)
    return measured


async def cancel_leftovers(stack: Stack) -> None:
    """Cancel the runs an earlier, stopped bench left unfinished in this data dir.

    The gateway resumes them on its start, so they would run beside this bench's own (two
    MCoNaLa runs and a SQuAD run at once); what they made stays in the services' caches and
    journals, which this bench's runs of the same tasks pick up.
    """
    unfinished = (
        gateway_pb2.RUN_STATE_QUEUED,
        gateway_pb2.RUN_STATE_RUNNING,
        gateway_pb2.RUN_STATE_WAITING_FOR_INPUT,
    )
    async with GatewayClient(stack.gateway, timeout_s=120) as gateway:
        page = await gateway.list_runs(page_size=500, states=unfinished)
        for run in page.runs:
            print(f"cancelling {run.run_id}, left by an earlier run", file=sys.stderr, flush=True)
            await gateway.cancel_run(run.run_id)


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    """What a task's figures depend on besides the code: kept figures must match them."""
    chosen = {
        "answer_temperature": args.answer_temperature,
        "self_consistency_samples": args.self_consistency_samples,
        "seed": args.seed,
        "invariants": rules_digest(args),
        "max_instruction_tokens": args.max_instruction_tokens or None,
        "prompt_demonstrations": args.prompt_demonstrations or None,
        "student": args.student or None,
        "learning_rate": args.learning_rate,
        "eval_steps": args.eval_steps,
        "keep_best_by": args.keep_best_by,
        "span_first": args.span_first or None,
        "passage_first": args.passage_first or None,
    }
    return {
        **{name: value for name, value in chosen.items() if value is not None},
        "examples": args.examples,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "min_steps": TrainOptions().min_steps if args.min_steps is None else args.min_steps,
        "eval_limit": args.eval_limit,
        "dev_rows": paperdata.DEV_ROWS,
        "teacher": args.teacher,
        "retrieved_rows": args.retrieved_rows,
    }


def rules_digest(args: argparse.Namespace) -> str | None:
    """The first 12 hex digits of the ``--invariants`` file's sha256 (None without one)."""
    path = getattr(args, "invariants", None)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path else None


def kept_path(args: argparse.Namespace, task: str) -> Path:
    """Where a task's figures are kept in the data dir (a pinned setting: its own file)."""
    digest = rules_digest(args)
    variant = "".join(
        f"-{part}"
        for part in (
            (args.student or "").replace("/", "--"),
            args.learning_rate and f"lr{args.learning_rate:g}",
            args.eval_steps is not None and f"eval{args.eval_steps}",
            args.keep_best_by and f"by-{args.keep_best_by}",
            args.prompt_demonstrations and f"demos{args.prompt_demonstrations}",
            args.span_first and "span-first",
            args.passage_first and "passage-first",
            digest and f"rules{digest}",
        )
        if part
    )
    return args.data_dir / "bench-pipeline" / f"{task}{variant}.json"


def keep(args: argparse.Namespace, task: str, figures: dict[str, Any]) -> None:
    """Keep a task's figures when its run succeeded and both were scored on the dev half."""
    scored = figures.get("student") and figures.get("teacher")
    if figures["state"] != "succeeded" or not scored:
        return
    measured = {"commit": benchkit.git_commit(), "finished": benchkit.utc_now()}
    record = {"sizes": sizes(args), "measured": measured, "figures": figures}
    atomic_write_text(kept_path(args, task), json.dumps(record, ensure_ascii=False))


def kept_figures(args: argparse.Namespace, task: str) -> dict[str, Any] | None:
    """A task's figures from an earlier run in this data dir of the same code and sizes, or None.

    The same code is the same commit with nothing uncommitted: figures measured before a change
    to the generator or the trainer are not the figures of the code after it.
    """
    path = kept_path(args, task)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    commit = record["measured"]["commit"]
    uncommitted = commit.endswith("uncommitted changes")  # as benchkit.git_commit says it
    if record["sizes"] != sizes(args) or commit != benchkit.git_commit() or uncommitted:
        return None
    return {**record["figures"], "kept_from": record["measured"]}


def show(figures: dict[str, Any]) -> None:
    """The figures for people."""
    print(f"machine: {benchkit.machine_line(figures['machine'])}")
    print(f"{'task':<12}{'metric':<13}{'student':>9}{'teacher':>9}{'goal':>7}  stages (s)")
    for task in figures["tasks"]:
        student = (task.get("student") or {}).get("score", "-")
        teacher = (task.get("teacher") or {}).get("score", "-")
        stages = ", ".join(f"{s['stage']} {s['seconds']:.0f}" for s in task["stages"])
        print(
            f"{task['task']:<12}{task['metric']:<13}{student!s:>9}{teacher!s:>9}"
            f"{task['goal']:>7}  {stages}"
        )
        generation = task["generation"]
        print(
            f"{'':<12}generated {generation['accepted']}/{generation['requested']}, dropped "
            f"{generation['dropped']}; datasets {task['datasets'] or 'none'}; {task['state']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default=",".join(paperdata.TASKS))
    parser.add_argument("--examples", type=int, default=80, help="examples to generate per task")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=0, help="stop training here (0: none)")
    parser.add_argument(
        "--min-steps", type=int, help="train at least this many steps (default: the trainer's)"
    )
    parser.add_argument("--eval-limit", type=int, default=100, help="dev examples per task")
    parser.add_argument("--teacher", default="qwen", help="the embedded model: qwen or smollm2")
    parser.add_argument("--retrieved-rows", type=int, default=200)
    parser.add_argument(
        "--answer-temperature",
        type=float,
        help="the generator's answer temperature (default: the generator's own)",
    )
    parser.add_argument(
        "--self-consistency-samples",
        type=int,
        help="answers sampled and voted on when the answer temperature is above 0"
        " (default: the generator's own)",
    )
    parser.add_argument("--seed", type=int, help="the run's seed (default: the server's)")
    parser.add_argument(
        "--prompt-demonstrations",
        type=int,
        default=0,
        help="demonstrations shown in every student prompt (0: none)",
    )
    parser.add_argument(
        "--max-instruction-tokens",
        type=int,
        default=0,
        help="tokens the instruction may take in the student's prompts (0: the trainer's default)",
    )
    parser.add_argument(
        "--student",
        help="the base model to train (a local model store name); default: the run's retrieval",
    )
    parser.add_argument(
        "--learning-rate", type=float, help="the training's learning rate (default: the trainer's)"
    )
    parser.add_argument(
        "--eval-steps",
        type=int,
        help="validate every N steps as well as at each epoch's end (default: the trainer's)",
    )
    parser.add_argument(
        "--keep-best-by",
        choices=KEEP_BEST_BY,
        help="what chooses the weights kept: the validation sample's score or the loss "
        "(default: the trainer's)",
    )
    parser.add_argument(
        "--span-first",
        action="store_true",
        help="span-first inputs where they apply (SQuAD): the passage, then the question",
    )
    parser.add_argument(
        "--passage-first",
        action="store_true",
        help="passage-first inputs where they apply (SQuAD): the passage, then a question on it",
    )
    parser.add_argument(
        "--invariants",
        type=Path,
        help="a JSON file of the generator's rules (the form `p2m generate --show-invariants "
        "--json` prints) instead of those learned from the demonstrations",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the run's data here (default: temp)")
    args = benchkit.parse_arguments(parser, QUICK)
    args.tasks = [t for t in args.tasks.split(",") if t]
    load_start = benchkit.load_average()
    with tempfile.TemporaryDirectory(prefix="p2m-bench-pipeline-") as temp:
        args.data_dir = (args.data_dir or Path(temp)).resolve()
        tasks = measure(args)
    figures = {
        "examples": args.examples,
        "epochs": args.epochs,
        "eval_limit": args.eval_limit,
        "dev_rows": paperdata.DEV_ROWS,
        "teacher": args.teacher,
        "answer_temperature": args.answer_temperature,
        "self_consistency_samples": args.self_consistency_samples,
        "seed": args.seed,
        "invariants": args.invariants and str(args.invariants),
        "invariants_sha256": rules_digest(args),
        "max_instruction_tokens": args.max_instruction_tokens,
        "prompt_demonstrations": args.prompt_demonstrations,
        "goal_share": GOAL_SHARE,
        "tasks": tasks,
    }
    benchkit.finish("pipeline", args, load_start, figures, show)


if __name__ == "__main__":
    main()
