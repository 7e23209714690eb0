"""``p2m demo``: serve the Gradio demo of a model deployed behind a KServe v1 endpoint."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TypeVar

import typer

from p2m.cliutil import LogLevel, fail, out
from p2m.common.errors import InvalidInput, P2MError
from p2m.common.log import setup_logging
from p2m.common.procs import free_port
from p2m.common.types import TaskSpec
from p2m.demo.app import RunMetrics, task_from_json
from p2m.demo.endpoint import KServeClient, check_endpoint

T = TypeVar("T")


def demo(
    endpoint: Annotated[
        str,
        typer.Option(
            help="Base URL of the KServe model server (v1 protocol), e.g. http://127.0.0.1:8080.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(help="Model name at the endpoint (default: the only one it lists)."),
    ] = None,
    task_json: Annotated[
        Path | None,
        typer.Option(
            help='The task: {"instruction": str, "demonstrations": [{"input", "output"}]} '
            "(e.g. `p2m parse --json`'s output). Its demonstrations become the examples."
        ),
    ] = None,
    metrics_json: Annotated[
        Path | None,
        typer.Option(
            help='The run\'s scores: {"metric": number}, {"student": {...}, "teacher": {...}} '
            "or `p2m evaluate --json`'s report."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free).", min=0, max=65535)] = 7860,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for one prediction.", min=0.1)
    ] = 60.0,
    log_level: LogLevel = None,
) -> None:
    """Serve a web demo of a deployed model until SIGTERM/SIGINT; print its URL.

    Gradio's analytics are off and the page loads nothing from the internet.
    """
    try:
        endpoint = check_endpoint(endpoint, "--endpoint")
        task = _load(task_json, "--task-json", task_from_json)
        metrics = _load(metrics_json, "--metrics-json", RunMetrics.from_json)
    except InvalidInput as exc:
        fail(f"{exc.field}: {exc.problem}")
    level = (log_level or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level: must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}")
    setup_logging(level, "json")

    if name is not None and not name.strip():
        fail("--name: must not be empty")
    with KServeClient(endpoint, name or _only_model(endpoint), timeout_s=timeout) as client:
        _serve(client, task, metrics, host, port or _free_port(host))


def _load(path: Path | None, option: str, parse: Callable[[Any], T]) -> T | None:
    """``parse`` of the JSON in ``path`` (None: not given); InvalidInput naming ``option``."""
    if path is None:
        return None
    data = _read_json(path, option)
    try:
        return parse(data)
    except InvalidInput as exc:
        raise InvalidInput(option, f"{path}: {exc.field}: {exc.problem}") from None


def _read_json(path: Path, option: str) -> Any:
    """The JSON value in ``path``; InvalidInput naming ``option`` when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(option, f"file not found: {path}") from None
    except IsADirectoryError:
        raise InvalidInput(option, f"is a folder, not a file: {path}") from None
    except UnicodeDecodeError:
        raise InvalidInput(option, f"not UTF-8 text: {path}") from None
    except OSError as exc:
        raise InvalidInput(option, f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            option, f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def _only_model(endpoint: str) -> str:
    """The one model the endpoint lists; exits with a message when there is not exactly one."""
    try:
        with KServeClient(endpoint, "", timeout_s=10.0) as lister:
            models = lister.list_models()
    except P2MError as exc:
        fail(f"cannot list the endpoint's models ({exc}); give the model with --name", 1)
    if len(models) != 1:
        listed = ", ".join(models) if models else "none"
        fail(f"{endpoint} serves {len(models)} models ({listed}); choose one with --name")
    return models[0]


def _free_port(host: str) -> int:
    """A port nothing listens on at ``host`` now (it may be taken before Gradio binds it)."""
    try:
        return free_port(host)
    except OSError as exc:
        fail(f"--host {host}: cannot bind: {exc.strerror or exc}")


def _serve(
    client: KServeClient, task: TaskSpec | None, metrics: RunMetrics | None, host: str, port: int
) -> None:
    """Build and launch the demo, print its URL, and stop it cleanly on SIGTERM/SIGINT."""
    from p2m.demo.app import build_demo, launch_options

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    app = build_demo(client.endpoint, client.name, task, metrics, client=client)
    try:
        app.launch(**launch_options(host, port))
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc}", 1)
    try:
        out.print(f"Demo of {client.name} running at {app.local_url}", highlight=False)
        out.file.flush()
        while not stop.wait(0.5):
            pass
    finally:
        app.close()
