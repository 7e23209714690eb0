"""The ``p2m`` command line.

One command per stage (each defined beside its stage), ``serve`` for any service, and
``up``/``run``/``down`` for the pipeline on the local stack.
"""

from __future__ import annotations

from typing import Annotated

import typer

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    fail,
    load_settings,
    run_async,
)
from p2m.common.log import setup_logging
from p2m.common.settings import Settings
from p2m.demo import cli as demo_cli
from p2m.deployer.cli import serve_model
from p2m.evaluator.cli import evaluate
from p2m.generator.cli import generate
from p2m.parser.cli import parse
from p2m.pipeline_cli import down_command, run_command, up_command
from p2m.retriever.cli import catalog_app, datasets_app, models_app
from p2m.trainer.cli import train
from p2m.trainer.train_job import train_job

app = typer.Typer(
    help="Prompt2Model: from a prompt to a small, deployed model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# In the pipeline's order: the whole of it, then each stage, then the services.
app.command(name="run")(run_command)
app.command(name="up")(up_command)
app.command(name="down")(down_command)
app.command()(parse)
app.add_typer(datasets_app, name="datasets")
app.command()(generate)
app.add_typer(models_app, name="models")
app.command()(train)
app.command()(evaluate)
app.command(name="serve-model")(serve_model)
app.command()(demo_cli.demo)
app.add_typer(catalog_app, name="catalog")
app.command(name="train-job")(train_job)

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
        port=port,
        host=host,
        data_dir=data_dir,
        log_level=log_level,
        llm_base_url=llm_base_url,
        llm_model=llm_model,
        local_llm=local_llm,
    )
    setup_logging(settings.log_level, settings.log_format)
    if service == "llm":
        from p2m.local_llm.main import serve_llm

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


def main() -> None:
    """Console-script entry point."""
    app()
