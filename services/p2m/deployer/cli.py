"""``p2m serve-model``: serve one student model folder with KServe until SIGTERM.

The process answers KServe v1 REST (``/v1/models/<name>:predict``), Open Inference Protocol
(v2) REST (``/v2/models/<name>/infer``) and v2 gRPC (``ModelInfer``) on ``--host``, which is
loopback unless asked otherwise. Nothing here needs the network: the model is read from a local
folder with the Hugging Face hub forced offline, and KServe, uvicorn and gRPC send nothing out.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from p2m.cliutil import LogLevel, fail, load_settings, out
from p2m.common.errors import InvalidInput
from p2m.common.log import setup_logging
from p2m.common.names import is_deployment_name
from p2m.common.ranges import Within, check_ranges
from p2m.deployer.core import MAX_BATCH_SIZE, MAX_LATENCY_MS
from p2m.llamacpp.runtime import AUTO, UNSET, resolve

# Set for this process unless the caller set them: local files only, no telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}
STOP_GRACE_S = 5
# KServe's own default ports.
DEFAULT_HTTP_PORT = 8080
DEFAULT_GRPC_PORT = 8081
FALLBACK_NAME = "student"


def name_from_folder(folder: Path) -> str:
    """A model name made from the folder's name ("My Model_2" -> "my-model-2"), else "student"."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.name.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:45].rstrip("-")
    return name if is_deployment_name(name) else FALLBACK_NAME


def serve_model(
    model: Annotated[Path, typer.Option(help="Student model folder (with p2m_student.json).")],
    name: Annotated[
        str | None,
        typer.Option(help="Model name in the inference URLs (default: from the folder's name)."),
    ] = None,
    http_port: Annotated[int, typer.Option(help="REST port (v1 and v2).")] = DEFAULT_HTTP_PORT,
    grpc_port: Annotated[
        int, typer.Option(help="Open Inference Protocol gRPC port; 0: none.")
    ] = DEFAULT_GRPC_PORT,
    host: Annotated[str, typer.Option(help="Address both servers bind to.")] = "127.0.0.1",
    max_batch_size: Annotated[
        int, typer.Option(help="Most requests per batch; 0 or 1: no batching.")
    ] = 0,
    max_latency_ms: Annotated[
        float, typer.Option(help="Longest a request waits for its batch to fill.")
    ] = 20.0,
    runtime: Annotated[
        str,
        typer.Option(
            help="What decodes: llama.cpp (a GGUF export; decoder-only students), transformers, "
            "or auto (llama.cpp where it can, transformers otherwise)."
        ),
    ] = AUTO,
    precision: Annotated[
        str,
        typer.Option(
            help="llama.cpp's weights: q8_0 (int8), f32 (the same answers as transformers), "
            "f16, bf16, q5_0 or q4_0. Default: P2M_SERVING_PRECISION (q8_0) where llama.cpp "
            "serves, f32 where transformers does."
        ),
    ] = UNSET,
    log_level: LogLevel = None,
) -> None:
    """Serve a student model with KServe (v1 and v2 REST, v2 gRPC) until SIGTERM."""
    name = name if name is not None else name_from_folder(model.resolve())
    if not is_deployment_name(name):
        fail(f"--name must be a DNS-1123 label of 1 to 45 characters, got {name!r}")
    if not 1 <= http_port <= 65535 or not 0 <= grpc_port <= 65535 or http_port == grpc_port:
        fail("--http-port must be within 1..65535, --grpc-port within 0..65535, and differ")
    try:
        check_ranges(
            [
                Within("--max-batch-size", max_batch_size, 0, MAX_BATCH_SIZE),
                Within("--max-latency-ms", max_latency_ms, 0, MAX_LATENCY_MS),
            ]
        )
    except InvalidInput as exc:
        fail(f"{exc.field} {exc.problem}")
    folder = model.resolve()
    if not folder.is_dir():
        fail(f"--model: not a folder: {model}")
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    settings = load_settings(log_level=log_level)
    try:
        serving = resolve(
            folder, runtime, precision, prefix="--", default_precision=settings.serving_precision
        )
    except InvalidInput as exc:
        fail(f"{exc.field} {exc.problem}")
    setup_logging(settings.log_level, settings.log_format)
    if settings.log_level.upper() != "DEBUG":  # KServe's per-request timing lines
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    # kserve.model_server parses sys.argv when imported: give it only the flag we mean (keep
    # our logging) instead of this command's flags, which its parser would half-match.
    sys.argv = [sys.argv[0], "--configure_logging", "false"]

    from p2m.common.errors import P2MError
    from p2m.deployer.model import Batching, StudentModel
    from p2m.deployer.modelserver import HostModelServer

    student = StudentModel(
        name,
        folder,
        Batching(max_batch_size, max_latency_ms / 1000.0),
        serving,
        settings.cache_dir("gguf"),
    )
    try:
        student.load()
    except P2MError as exc:
        fail(f"cannot load {folder}: {exc}", 1)
    server = HostModelServer(
        host,
        http_port=http_port,
        grpc_port=grpc_port,
        enable_grpc=grpc_port != 0,
        grace_period=STOP_GRACE_S,
    )
    url = f"http://{host}:{http_port}/v1/models/{name}:predict"
    out.print(f"serving {name} at {url} ({serving.label})", highlight=False)
    if serving.reason:
        out.print(f"[dim]{serving.reason}[/]", highlight=False)
    server.start([student])
