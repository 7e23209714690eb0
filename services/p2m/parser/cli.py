"""``p2m parse``: a prompt into a TaskSpec, in-process or through a running parser."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    PromptFile,
    client_settings,
    err,
    fail,
    out,
    parse_prompt,
    read_prompt,
    run_async,
)
from p2m.common.settings import Settings
from p2m.common.types import TaskSpec


def parse(
    prompt_file: PromptFile,
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


async def _parse_local(settings: Settings, prompt: bytes, translate: bool) -> TaskSpec:
    from p2m.local_llm.provider import LLMProvider

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
