"""`p2m up`, `p2m down` and `p2m run`: the whole pipeline from one command."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.live import Live
from rich.prompt import Prompt
from rich.table import Table

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    PromptFile,
    client_settings,
    epochs_text,
    err,
    fail,
    out,
    read_prompt,
)
from p2m.common.errors import P2MError
from prompt2model.v1 import common_pb2, gateway_pb2

G = gateway_pb2
EXIT_FAILED = 1
EXIT_CANCELLED = 130
_STATE_MARK = {
    G.STAGE_STATE_PENDING: "[dim]·[/]",
    G.STAGE_STATE_RUNNING: "[yellow]▶[/]",
    G.STAGE_STATE_SUCCEEDED: "[green]✓[/]",
    G.STAGE_STATE_FAILED: "[red]✗[/]",
    G.STAGE_STATE_SKIPPED: "[dim]-[/]",
    G.STAGE_STATE_CANCELLED: "[red]■[/]",
}


def up_command(
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Start every service and the local LLM on loopback; print the gateway's address."""
    from p2m.stack import up

    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    try:
        stack = up(settings, lambda line: err.print(line, highlight=False))
    except P2MError as error:
        fail(str(error), 1)
    out.print(f"gateway {stack.gateway}", highlight=False)


def down_command(data_dir: DataDir = None) -> None:
    """Stop the deployments, the services and the LLM started by `p2m up` or `p2m run`."""
    from p2m.stack import down

    settings = client_settings(data_dir, None, None, None, None)
    if not down(settings, lambda line: err.print(line, highlight=False)):
        err.print("no local stack is up")


def run_command(
    prompt_file: PromptFile,
    gateway: Annotated[
        str | None, typer.Option(help="HOST:PORT of a gateway (default: the local stack).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Bearer token of the gateway (env P2M_GATEWAY_TOKEN).")
    ] = None,
    num_examples: Annotated[int, typer.Option(help="Synthetic examples (0: default).")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs (0: 3).")] = 0,
    max_steps: Annotated[int, typer.Option(help="Stop training after N steps (0: no cap).")] = 0,
    min_steps: Annotated[
        int | None,
        typer.Option(
            help="Train at least N steps: more epochs (up to 20) on small data, the best "
            "weights kept by validation (default 100; 0: exactly the epochs).",
            show_default=False,
            min=0,
        ),
    ] = None,
    prompt_demonstrations: Annotated[
        int,
        typer.Option(
            help="Show the prompt's first N demonstrations in every student prompt, trained "
            "and served so (0: none).",
            min=0,
            max=64,
        ),
    ] = 0,
    max_llm_requests: Annotated[int, typer.Option(help="LLM requests for the run (0: any).")] = 0,
    base_model: Annotated[str | None, typer.Option(help="Use this student base model.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Use this dataset (catalog name, or a JSONL/CSV path).")
    ] = None,
    skip: Annotated[
        list[str] | None, typer.Option(help="Stage to skip, e.g. generate (repeatable).")
    ] = None,
    no_teacher: Annotated[bool, typer.Option(help="Do not score the teacher LLM.")] = False,
    interactive: Annotated[bool, typer.Option(help="Ask at the choice points.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the whole run.")] = None,
    deployment_name: Annotated[str | None, typer.Option(help="Name of the deployment.")] = None,
    rerank_datasets: Annotated[
        bool, typer.Option(help="Let the LLM rerank the dataset search's candidates (slower).")
    ] = False,
    include_gated_datasets: Annotated[
        bool, typer.Option(help="Also consider datasets the hub gates behind conditions.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Run the whole pipeline on a prompt and print the report; the endpoint stays up."""
    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    prompt = read_prompt(prompt_file)
    try:
        text = prompt.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"prompt file {prompt_file} is not UTF-8 text")
    options = _options(
        num_examples,
        epochs,
        max_steps,
        max_llm_requests,
        base_model,
        dataset,
        skip or [],
        no_teacher,
        interactive,
        seed,
        deployment_name,
    )
    if min_steps is not None:
        options.train.min_steps = min_steps
    options.train.prompt_demonstrations = prompt_demonstrations
    options.dataset_search.rerank = rerank_datasets
    options.dataset_search.include_gated = include_gated_datasets
    if gateway is None:
        from p2m.stack import up

        try:
            gateway = up(settings, lambda line: err.print(line, highlight=False)).gateway
        except P2MError as error:
            fail(str(error), 1)
    token = token if token is not None else os.environ.get("P2M_GATEWAY_TOKEN", "")
    run = asyncio.run(_run(gateway, token, text, options, show=not as_json, ask=interactive))
    report = report_json(run)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _show_report(run, report)
    if run.state == G.RUN_STATE_CANCELLED:
        raise typer.Exit(EXIT_CANCELLED)
    if run.state != G.RUN_STATE_SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)


def _options(
    num_examples: int,
    epochs: int,
    max_steps: int,
    max_llm_requests: int,
    base_model: str | None,
    dataset: str | None,
    skip: list[str],
    no_teacher: bool,
    interactive: bool,
    seed: int | None,
    deployment_name: str | None,
) -> G.RunOptions:
    options = G.RunOptions(
        budget=G.Budget(
            num_examples=num_examples, epochs=epochs, llm_max_requests=max_llm_requests
        ),
        skip_teacher_evaluation=no_teacher,
        mode=G.INTERACTION_MODE_INTERACTIVE if interactive else G.INTERACTION_MODE_UNATTENDED,
        deployment_name=deployment_name or "",
    )
    options.train.max_steps = max_steps
    if seed is not None:
        options.seed = seed
    if base_model:
        local = Path(base_model).expanduser()
        options.base_model_name = str(local.resolve()) if local.is_dir() else base_model
    if dataset:
        if Path(dataset).exists():
            options.dataset_path = str(Path(dataset).resolve())
        else:
            options.dataset.name = dataset
    for name in skip:
        key = f"STAGE_{name.upper().replace('-', '_')}"
        if key not in set(common_pb2.Stage.keys()):
            stages = ", ".join(
                k.removeprefix("STAGE_").lower() for k in common_pb2.Stage.keys()[1:]
            )
            fail(f"--skip {name}: not a stage (one of {stages})")
        options.skip_stages.append(common_pb2.Stage.Value(key))
    return options


async def _run(
    address: str, token: str, prompt: str, options: G.RunOptions, show: bool, ask: bool
) -> G.Run:
    from p2m.client import GatewayClient

    async with GatewayClient(address, token) as client:
        try:
            run = await client.create_run(prompt, options)
        except grpc.aio.AioRpcError as error:
            code = 2 if error.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
            fail(f"the gateway refused the run: {error.details()}", code)
        view = _RunView(run)
        try:
            quiet = Console(file=io.StringIO())  # --json: no live display
            with Live(
                view.table(),
                console=err if show else quiet,
                refresh_per_second=4,
                redirect_stdout=False,
            ) as live:
                async for event in client.watch(run.run_id):
                    view.update(event)
                    live.update(view.table())
                    if event.kind == G.RUN_EVENT_KIND_INPUT_REQUIRED and ask:
                        live.stop()
                        await _answer(client, run.run_id, event.choice)
                        live.start()
        except (KeyboardInterrupt, asyncio.CancelledError):
            err.print("interrupted: cancelling the run")
            await client.cancel_run(run.run_id)
        return await client.get_run(run.run_id)


async def _answer(client: Any, run_id: str, choice: G.PendingChoice) -> None:
    err.print(f"\n[bold]{choice.question}[/]")
    for number, option in enumerate(choice.options, 1):
        err.print(f"  {number}. {option.label}  [dim]{option.detail[:100]}[/]", highlight=False)
    default = ",".join(
        str(i) for i, o in enumerate(choice.options, 1) if o.value in choice.default_values
    )
    hint = "numbers separated by commas" + (", or none" if choice.min_values == 0 else "")
    answer = await asyncio.to_thread(
        Prompt.ask, f"Your choice ({hint})", default=default, console=err
    )
    picks = [] if answer.strip().lower() == "none" else [a for a in answer.split(",") if a.strip()]
    values = [
        choice.options[int(p) - 1].value
        for p in picks
        if p.strip().isdigit() and 1 <= int(p) <= len(choice.options)
    ]
    try:
        await client.answer_choice(run_id, choice.choice_id, values)
    except grpc.aio.AioRpcError as error:
        err.print(f"[red]{error.details()}[/]; taking the defaults")
        await client.answer_choice(run_id, choice.choice_id, accept_default=True)


class _RunView:
    """The live table: one line per stage, with the current stage's progress."""

    def __init__(self, run: G.Run) -> None:
        self.run_id = run.run_id
        self.states = {r.stage: r.state for r in run.stages}
        self.lines = {r.stage: "" for r in run.stages}
        self.headline = "queued"

    def update(self, event: G.RunEvent) -> None:
        if event.HasField("stage_result"):
            result = event.stage_result
            self.states[result.stage] = result.state
            self.lines[result.stage] = result.note or result.error or _figures(result.figures)
        elif event.kind == G.RUN_EVENT_KIND_STAGE_STARTED:
            self.states[event.stage] = G.STAGE_STATE_RUNNING
        elif event.kind == G.RUN_EVENT_KIND_STAGE_PROGRESS:
            progress = event.progress
            done = f" {progress.done}/{progress.total}" if progress.total else ""
            self.lines[event.stage] = f"{progress.message}{done}"[:90]
        elif event.kind in (G.RUN_EVENT_KIND_WARNING, G.RUN_EVENT_KIND_INPUT_REQUIRED):
            self.lines[event.stage] = event.message[:90]
        self.headline = event.message or self.headline

    def table(self) -> Table:
        table = Table(
            title=f"run {self.run_id}: {self.headline[:80]}",
            show_header=False,
            box=None,
            title_justify="left",
        )
        for stage, state in self.states.items():
            name = common_pb2.Stage.Name(stage).removeprefix("STAGE_").lower().replace("_", " ")
            table.add_row(_STATE_MARK.get(state, "?"), name, self.lines.get(stage, ""))
        return table


def _figures(figures: Any) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in list(figures.items())[:5])


def report_json(run: G.Run) -> dict[str, Any]:
    """The run's outcome as one JSON object (what `p2m run --json` prints)."""
    report = run.report
    metrics: dict[str, Any] = {"student": dict(report.student_metrics.values)}
    if report.HasField("teacher_metrics"):
        metrics["teacher"] = dict(report.teacher_metrics.values)
    if report.HasField("student_demonstration_metrics"):
        metrics["student_on_demonstrations"] = dict(report.student_demonstration_metrics.values)
    return {
        "run_id": run.run_id,
        "state": G.RunState.Name(run.state).removeprefix("RUN_STATE_").lower(),
        "error": run.error,
        "endpoint": report.endpoint.base_url,
        "v1_predict_url": report.endpoint.v1_predict_url,
        "v2_infer_url": report.endpoint.v2_infer_url,
        "grpc_address": report.endpoint.grpc_address,
        "runtime": report.endpoint.runtime,
        "demo": report.demo_url,
        "metrics": metrics,
        "metrics_source": report.metrics_source,
        "estimate_notes": list(report.estimate_notes),
        "num_examples": report.student_metrics.num_examples,
        "datasets": [d.name for d in run.datasets],
        "base_model": run.base_model.name,
        "model": report.model.uri,
        "student_size_bytes": report.student_size_bytes,
        "student_latency_ms": report.student_latency.p50_ms,
        "generation": generation_json(report.generation),
        "training": {
            "steps": report.training.steps,
            "epochs": report.training.epochs,
            "planned_epochs": report.training.planned_epochs,
            "final_loss": report.training.final_loss,
            "train_seconds": report.training.train_seconds,
            "samples_per_second": report.training.samples_per_second,
            "cached": report.training.cached,
            "precision": report.training.precision,
            "best_step": report.training.best_step,
            "best_eval_loss": (
                report.training.best_eval_loss
                if report.training.HasField("best_eval_loss")
                else None
            ),
            "stopped_early": report.training.stopped_early,
        },
        "llm_usage": {
            "requests": report.llm_usage.requests,
            "tokens": report.llm_usage.prompt_tokens + report.llm_usage.completion_tokens,
            "capped_answers": report.llm_usage.capped_answers,
            "stopped_answers": report.llm_usage.stopped_answers,
        },
        "duration_s": report.duration.seconds,
        "stages": [
            {
                "stage": common_pb2.Stage.Name(r.stage).removeprefix("STAGE_").lower(),
                "state": G.StageState.Name(r.state).removeprefix("STAGE_STATE_").lower(),
                "cached": r.cached,
                "note": r.note,
                "error": r.error,
                "figures": dict(r.figures),
            }
            for r in run.stages
        ],
    }


def _cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _show_report(run: G.Run, report: dict[str, Any]) -> None:
    state = report["state"]
    colour = "green" if state == "succeeded" else "red"
    out.print(f"\n[bold {colour}]run {run.run_id} {state}[/] in {report['duration_s']} s")
    if run.error:
        out.print(f"[red]{run.error}[/]", highlight=False)
    out.print(
        f"datasets: {', '.join(report['datasets']) or 'none (generated data only)'}",
        highlight=False,
    )
    out.print(f"student base model: {report['base_model'] or '-'}", highlight=False)
    generation = report["generation"]
    out.print(
        f"generated: {generation['accepted']}/{generation['requested']} examples"
        f"{' (cached)' if generation['cached'] else ''}"
    )
    dropped = ", ".join(f"{k} {v}" for k, v in generation["dropped"].items())
    if dropped:
        by_rule = ", ".join(f"{k} {v}" for k, v in generation["invariant_drops"].items())
        out.print(f"  dropped: {dropped}" + (f" (invariants: {by_rule})" if by_rule else ""))
    training = report["training"]
    out.print(
        f"training: {training['steps']} steps, "
        f"{epochs_text(training['epochs'], training['planned_epochs'])}, final loss "
        f"{training['final_loss']:.4f}, {training['train_seconds']:.0f} s"
        f"{' (cached)' if training['cached'] else ''}"
    )
    if training["best_eval_loss"] is not None:
        out.print(
            f"  kept step {training['best_step']}'s weights (validation loss "
            f"{training['best_eval_loss']:.4f})"
            + ("; stopped early, no improvement" if training["stopped_early"] else "")
        )
    metrics = report["metrics"]
    if metrics["student"]:
        on_demos = metrics.get("student_on_demonstrations", {})
        table = Table(
            "metric",
            "student",
            "teacher",
            "student on the demonstrations",
            title=f"student vs teacher, on {report['metrics_source']}",
        )
        for name, value in metrics["student"].items():
            teacher, demos = metrics.get("teacher", {}).get(name), on_demos.get(name)
            table.add_row(name, f"{value:.4f}", _cell(teacher), _cell(demos))
        out.print(table)
    for note in report["estimate_notes"]:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    if report["endpoint"]:
        served = f", {report['runtime']}" if report["runtime"] else ""
        out.print(
            f"endpoint: {report['endpoint']}  (v1: {report['v1_predict_url']}{served})",
            highlight=False,
            soft_wrap=True,
        )
    if report["demo"]:
        out.print(f"demo: {report['demo']}", highlight=False, soft_wrap=True)
    if report["endpoint"]:
        out.print("[dim]the endpoint and demo stay up until `p2m down`[/]")


def generation_json(report: Any) -> dict[str, Any]:
    """A run's generation report (``GenerationReport``) as plain JSON values."""
    return {
        "requested": report.requested,
        "accepted": report.accepted,
        "cached": report.cached,
        "dropped": {f.name: v for f, v in report.dropped.ListFields()},
        "invariant_drops": dict(report.invariant_drops),
        "label_counts": dict(report.label_counts),
        "duplicate_share": report.duplicate_share,
        "near_duplicate_share": report.near_duplicate_share,
        "commonest_output_share": report.commonest_output_share,
        "invariants": MessageToDict(report.invariants, preserving_proto_field_name=True),
    }
