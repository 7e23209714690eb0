"""The ``p2m`` command line: serve any service, parse a prompt, and (later) run the pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    client_settings,
    err,
    fail,
    load_settings,
    out,
    parse_prompt,
    read_prompt,
    run_async,
)
from p2m.common.errors import InvalidInput
from p2m.common.log import setup_logging
from p2m.common.settings import Settings
from p2m.common.types import TaskSpec
from p2m.demo import cli as demo_cli
from p2m.deployer.server import serve_model
from p2m.evaluator.cli import evaluate
from p2m.retriever.cli import catalog_app, datasets_app, models_app
from p2m.runcli import down_command, run_command, up_command
from p2m.trainer.cli import train
from p2m.trainer.train_job import train_job

app = typer.Typer(
    help="Prompt2Model: from a prompt to a small, deployed model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(catalog_app, name="catalog")
app.command()(demo_cli.demo)
app.command()(evaluate)
app.command()(train)
app.command(name="train-job")(train_job)
app.command(name="up")(up_command)
app.command(name="down")(down_command)
app.command(name="run")(run_command)
app.command(name="serve-model")(serve_model)

# Every gRPC service `p2m serve` can start: name -> "module:build function".
SERVICES = {
    "parser": "p2m.parser.service:build",
    "generator": "p2m.generator.service:build",
    "retriever": "p2m.retriever.service:build",
    "evaluator": "p2m.evaluator.service:build",
    "trainer": "p2m.trainer.service:build",
    "deployer": "p2m.deployer.service:build",
    "gateway": "p2m.gateway.service:build",
}
SERVABLE = sorted([*SERVICES, "llm"])


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVABLE)}.")],
    port: Annotated[int | None, typer.Option(help="Port (env P2M_PORT; 0: any free).")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (env P2M_HOST).")] = None,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Start one service and serve until SIGTERM/SIGINT."""
    if service not in SERVABLE:
        fail(f"unknown service {service!r}; choose one of: {', '.join(SERVABLE)}")
    settings = load_settings(
        port=port, host=host, data_dir=data_dir, log_level=log_level,
        llm_base_url=llm_base_url, llm_model=llm_model, local_llm=local_llm,
    )  # fmt: skip
    setup_logging(settings.log_level, settings.log_format)
    if service == "llm":
        from p2m.llm.main import serve_llm

        run_async(lambda: serve_llm(settings))
        return
    run_async(lambda: _serve_grpc(service, settings))


async def _serve_grpc(service: str, settings: Settings) -> None:
    import importlib

    from p2m.common.server import GrpcServer, serve_until_signalled

    module_name, function = SERVICES[service].split(":")
    binding = getattr(importlib.import_module(module_name), function)(settings)
    server = GrpcServer([binding], settings.host, settings.port)
    await serve_until_signalled(server, settings.grace_s)


@app.command()
def parse(
    prompt_file: Annotated[Path, typer.Option(help="The prompt, a text file ('-': stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the TaskSpec as JSON.")] = False,
    parser_addr: Annotated[
        str | None, typer.Option(help="HOST:PORT of a running parser (default: in-process).")
    ] = None,
    no_translate: Annotated[bool, typer.Option(help="Do not translate the instruction.")] = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Parse a prompt into a TaskSpec {instruction, demonstrations, language}."""
    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    prompt = read_prompt(prompt_file)
    if parser_addr:
        task = run_async(lambda: _parse_remote(parser_addr, prompt, not no_translate))
    else:
        task = run_async(lambda: _parse_local(settings, prompt, not no_translate))
    if as_json:
        out.print_json(json.dumps(task.to_json(), ensure_ascii=False))
    else:
        _show_task(task)


@app.command()
def generate(
    prompt_file: Annotated[Path, typer.Option(help="The prompt, a text file ('-': stdin).")],
    num_examples: Annotated[int, typer.Option(help="Examples to accept.")] = 100,
    out: Annotated[
        Path | None, typer.Option(help="Folder for train.jsonl / validation.jsonl.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    seed: Annotated[int, typer.Option(help="Seed: same prompt, options, seed -> same data.")] = 0,
    max_requests: Annotated[int, typer.Option(help="Request budget (0: none).")] = 0,
    max_tokens: Annotated[int, typer.Option(help="Token budget (0: none).")] = 0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Requests per round.")] = 16,
    self_consistency: Annotated[int, typer.Option(help="Outputs voted per input.")] = 3,
    temperature: Annotated[
        tuple[float, float], typer.Option(help="Annealing range: start end.")
    ] = (0.3, 1.4),
    diverse: Annotated[bool, typer.Option(help="Vary the examples each prompt shows.")] = True,
    annealing: Annotated[bool, typer.Option(help="Raise the temperature as the set fills.")] = True,
    vote: Annotated[bool, typer.Option(help="Self-consistency vote on outputs.")] = True,
    dedup: Annotated[bool, typer.Option(help="Drop exact and near duplicates.")] = True,
    word_threshold: Annotated[
        float,
        typer.Option(
            help="Drop an input sharing this share of word trigrams with a kept one; 1: off."
        ),
    ] = 0.5,
    meaning_threshold: Annotated[
        float,
        typer.Option(
            help="Drop an input this close in meaning (cosine) to an accepted one; 1: off."
        ),
    ] = 0.95,
    check_invariants: Annotated[
        bool, typer.Option(help="Drop examples that break the demonstrations' invariants.")
    ] = True,
    judge: Annotated[
        bool, typer.Option(help="The teacher grades each example 1-5 (one request more each).")
    ] = False,
    judge_threshold: Annotated[int, typer.Option(help="Lowest grade kept with --judge.")] = 3,
    invariants_file: Annotated[
        Path | None,
        typer.Option(
            "--invariants",
            help="The invariants as JSON (the form --show-invariants prints) instead of the "
            "learned ones; {} for none.",
        ),
    ] = None,
    show_invariants: Annotated[
        bool, typer.Option(help="Print the invariants learned from the prompt and exit.")
    ] = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Generate a synthetic dataset for the prompt's task with the teacher LLM."""
    from p2m.generator.options import GenerateOptions

    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    prompt = read_prompt(prompt_file)
    if show_invariants:
        _show_invariants(run_async(lambda: _learned_invariants(settings, prompt)), as_json)
        return
    invariants = _read_invariants(invariants_file) if invariants_file else None
    options = GenerateOptions(
        num_examples=num_examples,
        seed=seed,
        max_requests=max_requests,
        max_tokens=max_tokens,
        max_concurrency=concurrency,
        batch_size=batch_size,
        self_consistency_samples=self_consistency,
        temperature_start=temperature[0],
        temperature_end=temperature[1],
        diverse_prompts=diverse,
        annealing=annealing,
        self_consistency=vote,
        dedup=dedup,
        dedup_word_similarity_threshold=word_threshold,
        meaning_dedup_threshold=meaning_threshold,
        check_invariants=check_invariants,
        invariants=invariants,
        judge=judge,
        judge_threshold=judge_threshold,
    )
    try:
        options.validate()
    except InvalidInput as exc:
        fail(f"invalid generation option {exc.field.removeprefix('options.')}: {exc.problem}")
    report = run_async(lambda: _generate_local(settings, prompt, options, out, not as_json))
    if as_json:
        out_json = json.dumps(report, ensure_ascii=False)
        print(out_json)
    else:
        _show_generation(report)


async def _generate_local(
    settings: Settings, prompt: bytes, options: Any, out_dir: Path | None, show_bar: bool
) -> dict[str, Any]:
    import shutil

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from p2m.common.artifacts import ArtifactStore
    from p2m.common.encoder import shipped_encoder
    from p2m.generator.engine import DatasetGenerator, GenerationProgress
    from p2m.llm.provider import LLMProvider

    provider = LLMProvider(settings)
    bar = Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), console=err, disable=not show_bar,
    )  # fmt: skip
    try:
        task = await parse_prompt(provider, settings, prompt)
        store = ArtifactStore(settings.data_dir / "artifacts")
        model = settings.llm_model if settings.llm_base_url else settings.local_llm
        generator = DatasetGenerator(
            await provider.client(),
            store,
            settings.data_dir / "cache" / "generate",
            model,
            shipped_encoder(),
        )
        with bar:
            bar_id = bar.add_task("generate", total=options.num_examples, status="")

            def show(p: GenerationProgress) -> None:
                dups = p.dropped["exact_duplicate"] + p.dropped["near_duplicate"]
                status = f"dropped {sum(p.dropped.values())} ({dups} duplicates), {p.tokens} tokens"
                bar.update(bar_id, completed=p.accepted, status=status)

            result = await generator.generate(task, options, show)
        folder = store.path(result.dataset.sha256)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("train.jsonl", "validation.jsonl"):
                shutil.copyfile(folder / name, out_dir / name)
        return {
            "dataset": result.dataset.uri,
            "path": str(folder),
            "out": str(out_dir) if out_dir else None,
            "rows": result.rows,
            **result.report.to_json(),
        }
    finally:
        await provider.aclose()


def _read_invariants(path: Path) -> Any:
    """The invariants in a JSON file; exit 2 naming the problem."""
    from p2m.generator.invariants import Invariants

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read --invariants {path}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"--invariants {path} is not JSON: {exc}")
    try:
        return Invariants.from_json(data, "--invariants")
    except InvalidInput as exc:
        fail(str(exc))


async def _learned_invariants(settings: Settings, prompt: bytes) -> Any:
    from p2m.generator.invariants import infer
    from p2m.llm.provider import LLMProvider

    provider = LLMProvider(settings)
    try:
        return infer(await parse_prompt(provider, settings, prompt))
    finally:
        await provider.aclose()


def _show_invariants(invariants: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(invariants.to_json(), ensure_ascii=False))
        return
    lines = invariants.describe() or ["none (fewer than two demonstrations, or nothing shared)"]
    out.print("invariants learned from the demonstrations:", highlight=False)
    for line in lines:
        out.print(f"  - {line}", highlight=False)


def _show_generation(report: dict[str, Any]) -> None:
    out.print(
        f"[bold]{report['accepted']}/{report['requested']} examples[/] "
        f"({report['stop_reason']}, {report['rounds']} rounds, {report['elapsed_s']:.0f}s"
        f"{', cached' if report['cached'] else ''})"
    )
    table = Table("filter", "dropped", title="quality filters")
    for name, count in report["dropped"].items():
        table.add_row(name, str(count))
    for rule, count in report["invariant_drops"].items():
        table.add_row(f"  invariant {rule}", str(count))
    out.print(table)
    out.print(
        f"duplicates: {report['duplicate_share']:.0%} of the candidates dropped; "
        f"{report['near_duplicate_share']:.0%} of the kept inputs near another (word trigrams)"
    )
    if report["label_counts"]:
        labels = ", ".join(f"{label} {n}" for label, n in report["label_counts"].items())
        out.print(f"labels: {labels}", highlight=False)
    usage = report["usage"]
    out.print(
        f"LLM: {usage['requests']} requests ({usage['retries']} retries), "
        f"{usage['prompt_tokens'] + usage['completion_tokens']} tokens; "
        f"self-consistency agreement {report['self_consistency_agreement']:.2f}"
    )
    out.print(f"dataset: {report['dataset']}", highlight=False, soft_wrap=True)
    out.print(f"  at {report['path']}", highlight=False, soft_wrap=True)
    if report["out"]:
        out.print(f"  copied to {report['out']}/train.jsonl, validation.jsonl", highlight=False)


async def _parse_local(settings: Settings, prompt: bytes, translate: bool) -> TaskSpec:
    from p2m.llm.provider import LLMProvider

    provider = LLMProvider(settings)
    try:
        return await parse_prompt(provider, settings, prompt, translate)
    finally:
        await provider.aclose()


async def _parse_remote(address: str, prompt: bytes, translate: bool) -> TaskSpec:
    import grpc

    from p2m.common.convert import task_spec_from_pb
    from prompt2model.v1 import parser_pb2, parser_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = parser_pb2_grpc.ParserStub(channel)
        request = parser_pb2.ParseRequest(prompt_bytes=prompt, skip_translation=not translate)
        try:
            response = await stub.Parse(request, timeout=600)
        except grpc.aio.AioRpcError as exc:
            code = 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
            fail(f"parser at {address}: {exc.code().name}: {exc.details()}", code)
    return task_spec_from_pb(response.task)


def _show_task(task: TaskSpec) -> None:
    out.print(f"[bold]Instruction[/] ({task.language}, {task.parse_method.value})")
    out.print(task.instruction, highlight=False)
    if task.original_instruction:
        out.print("[bold]As written[/]")
        out.print(task.original_instruction, highlight=False)
    table = Table("#", "input", "output", title=f"{len(task.demonstrations)} demonstrations")
    for number, demo in enumerate(task.demonstrations, 1):
        table.add_row(str(number), demo.input, demo.output)
    out.print(table)
    for warning in task.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()
