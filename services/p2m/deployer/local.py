"""Deployments on this machine: a KServe ModelServer process (and a Gradio demo) per name.

Each deployment is ``p2m serve-model`` (and, unless skipped, ``p2m demo``) started as its own
session (process group) on free loopback ports. The registry is one JSON file per deployment,
``<root>/<name>.json`` (written atomically), beside ``<root>/<name>.d/`` with the processes'
logs and the demo's task and metrics files. Processes outlive the deployer: when it starts, it
adopts the deployments whose processes still run and restarts the others, on the same ports
when they are free, so a crashed server or a rebooted machine comes back.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.atomic import atomic_write_text
from p2m.common.errors import InvalidInput, NotFound, P2MError
from p2m.common.names import is_deployment_name
from p2m.common.procs import (
    LOOPBACK,
    command_line,
    free_ports,
    pid_running,
    port_free,
    signal_group,
)
from p2m.deployer.core import (
    DEFAULT_PAGE_SIZE,
    KIND_LOCAL,
    MAX_PAGE_SIZE,
    DeployOptions,
    DeployOutcome,
    DeploySpec,
    Endpoint,
    NameLocks,
    Page,
    PageTokens,
    serve_model_args,
    serving_identity,
    student_model,
)

log = logging.getLogger(__name__)

REGISTRY_VERSION = 1
STOP_GRACE_S = 10.0
POLL_S = 0.2
PROBE_TIMEOUT_S = 2.0
LOG_TAIL_LINES = 4
# A log line naming an error ("RuntimeError: cannot listen on ...", "OSError: [Errno 98] ...").
_ERROR_LINE = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b")
MAX_LOG_SCAN_BYTES = 1 << 20
# Environment every child gets unless the deployer's own sets otherwise: local files only and
# nothing that phones home (Hugging Face, Gradio).
CHILD_ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
}


@dataclass(frozen=True)
class _Proc:
    """A process the deployer started: its pid (also its process group), ports and log."""

    pid: int
    ports: tuple[int, ...]
    log: str


@dataclass(frozen=True)
class _Record:
    """One deployment as the registry keeps it."""

    name: str
    served_as: str
    model: ArtifactRef
    model_path: str
    options: DeployOptions
    server: _Proc
    demo: _Proc | None
    task_file: str
    metrics_file: str
    run_id: str
    create_time: str
    update_time: str

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.ports[0]}"

    @property
    def ready_url(self) -> str:
        return f"{self.base_url}/v2/models/{self.name}/ready"

    @property
    def demo_url(self) -> str:
        return f"http://{LOOPBACK}:{self.demo.ports[0]}/" if self.demo else ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = REGISTRY_VERSION
        data["urls"] = {  # for a person reading the file; rebuilt from the ports when read
            "base_url": self.base_url,
            "v1_predict_url": f"{self.base_url}/v1/models/{self.name}:predict",
            "v2_infer_url": f"{self.base_url}/v2/models/{self.name}/infer",
            "grpc_address": f"{LOOPBACK}:{self.server.ports[1]}",
            "demo_url": self.demo_url,
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Record:
        values = {k: v for k, v in data.items() if k not in ("version", "urls")}
        demo = values["demo"]
        return cls(
            **{
                **values,
                "model": ArtifactRef(**values["model"]),
                "options": DeployOptions(**values["options"]),
                "server": _proc_from_json(values["server"]),
                "demo": _proc_from_json(demo) if demo else None,
            }
        )


def _proc_from_json(data: dict[str, Any]) -> _Proc:
    return _Proc(int(data["pid"]), tuple(int(p) for p in data["ports"]), str(data["log"]))


@dataclass(frozen=True)
class _Status:
    ready: bool
    message: str
    dead: bool = False


class LocalDeployments:
    """``Deployments`` as processes on this machine, listening on loopback only."""

    def __init__(
        self,
        store: ArtifactStore,
        root: Path,
        *,
        python: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        """Serve artifacts of ``store``; keep the registry, logs and demo files under ``root``.

        Args:
            store: Where model artifacts are read.
            root: The registry folder, e.g. ``<data_dir>/deployments``.
            python: Interpreter that runs ``-m p2m serve-model`` and ``-m p2m demo``.
            environ: Environment of the children (default: this process's), to which
                ``CHILD_ENV_DEFAULTS`` are added where unset.
            stop_grace_s: Seconds between SIGTERM and SIGKILL when stopping a process.
        """
        self._store = store
        self.root = root
        self._python = python
        self._env = {**CHILD_ENV_DEFAULTS, **(os.environ if environ is None else environ)}
        self._stop_grace_s = stop_grace_s
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = NameLocks()
        self._tokens = PageTokens()
        self._http: httpx.AsyncClient | None = None

    # -- the Deployments protocol ---------------------------------------------------------

    async def start(self) -> None:
        """Adopt deployments whose processes run; restart the others (without waiting)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for name in self._names():
            async with self._lock(name):
                record = self._read(name)
                if record is None:
                    continue
                if self._running(record):
                    log.info("adopted deployment", extra=_log_fields(record))
                    continue
                try:
                    record = self._revive(record)
                except P2MError as exc:
                    log.error("cannot restart deployment %s: %s", name, exc)
                    continue
                log.info("restarted deployment", extra=_log_fields(record))

    async def close(self) -> None:
        """Release the HTTP client; the deployments keep serving."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def deploy(self, spec: DeploySpec) -> DeployOutcome:
        """Serve ``spec.model`` as ``spec.name`` and wait (at most the ready timeout) for it.

        The same model with the same options again changes nothing (dead processes are
        restarted). Another model, or other options, starts a new server beside the old one;
        once it answers the registry points to it and the old one is stopped (``replaced``). If
        it does not answer in time it is stopped and the old one keeps serving. The work goes
        on when the caller gives up waiting, so no process is left unrecorded.

        Raises:
            NotFound: The model artifact is not in the store.
            InvalidInput: The artifact is not a student model folder.
        """
        return await asyncio.shield(self._deploy(spec))

    async def undeploy(self, name: str, allow_missing: bool = False) -> Endpoint | None:
        """Stop the deployment's processes (SIGTERM, then SIGKILL) and forget it.

        Raises:
            NotFound: No such deployment and ``allow_missing`` is false.
        """
        return await asyncio.shield(self._undeploy(name, allow_missing))

    async def list(self, page_size: int = 0, page_token: str = "") -> Page:
        """One page of deployments ordered by name, each with its current readiness.

        Raises:
            InvalidInput: ``page_size`` out of 0..1000, or a page token not given out here.
        """
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidInput("page_size", f"must be within 0..{MAX_PAGE_SIZE}, got {page_size}")
        after = self._tokens.name_of(page_token) if page_token else ""
        names = [n for n in self._names() if n > after]
        size = page_size or DEFAULT_PAGE_SIZE
        page, more = names[:size], len(names) > size
        records = [r for r in map(self._read, page) if r is not None]
        statuses = await asyncio.gather(*(self._status(r) for r in records))
        endpoints = tuple(self._endpoint(r, s) for r, s in zip(records, statuses, strict=True))
        return Page(endpoints, self._tokens.token(page[-1]) if more else "")

    # -- deploy and undeploy ----------------------------------------------------------------

    async def _deploy(self, spec: DeploySpec) -> DeployOutcome:
        model, folder = student_model(self._store, spec.model)
        spec = replace(spec, options=spec.options.served_on(folder))
        served_as = serving_identity(spec, model.sha256)
        timeout_s = spec.options.ready_timeout_s
        async with self._lock(spec.name):
            current = self._read(spec.name)
            if current is not None and current.served_as == served_as:
                if not self._running(current):
                    current = self._revive(current)
                status = await self._wait_ready(current, timeout_s)
                return DeployOutcome(self._endpoint(current, status), replaced=False)
            record = self._launch(spec, model, folder, served_as, current)
            log.info("deploying", extra={**_log_fields(record), "run_id": spec.run_id})
            if current is None:
                self._write(record)
                status = await self._wait_ready(record, timeout_s)
                return DeployOutcome(self._endpoint(record, status), replaced=False)
            status = await self._wait_ready(record, timeout_s)
            if not status.ready:
                await self._stop(record)
                self._remove_files(record, keep=current, logs=False)  # logs say why
                kept = f"{status.message}; {spec.name} still serves {current.model.uri}"
                return DeployOutcome(self._endpoint(record, _Status(False, kept)), False)
            self._write(record)
            await self._stop(current)
            self._remove_files(current, keep=record)
            log.info("rolled deployment", extra=_log_fields(record))
            return DeployOutcome(self._endpoint(record, status), replaced=True)

    async def _undeploy(self, name: str, allow_missing: bool) -> Endpoint | None:
        record = self._read(name) if is_deployment_name(name) else None
        if record is None:
            if allow_missing:
                return None
            raise NotFound(f"no deployment named {name[:60]!r}")
        async with self._lock(name):
            record = self._read(name)
            if record is None:  # removed while this call waited for the lock
                if allow_missing:
                    return None
                raise NotFound(f"no deployment named {name!r}")
            status = await self._status(record)
            await self._stop(record)
            self._registry_path(name).unlink(missing_ok=True)
            shutil.rmtree(self._files_dir(name), ignore_errors=True)
            log.info("undeployed", extra=_log_fields(record))
            return self._endpoint(record, status)

    def _launch(
        self,
        spec: DeploySpec,
        model: ArtifactRef,
        folder: Path,
        served_as: str,
        current: _Record | None,
    ) -> _Record:
        """Start the processes of ``spec`` on free ports; return their (unwritten) record."""
        files = self._files_dir(spec.name)
        files.mkdir(parents=True, exist_ok=True)
        tag = served_as[:12]
        task_file = metrics_file = ""
        if spec.task is not None and spec.task.instruction.strip():
            task_file = str(files / f"task-{tag}.json")
            atomic_write_text(Path(task_file), json.dumps(spec.task.to_json(), ensure_ascii=False))
        if spec.metrics:
            metrics_file = str(files / f"metrics-{tag}.json")
            atomic_write_text(Path(metrics_file), json.dumps({"metrics": spec.metrics}))
        ports = free_ports(2 if spec.options.skip_demo else 3)
        demo = None
        if not spec.options.skip_demo:
            demo = _Proc(0, (ports[2],), str(files / f"demo-{tag}.log"))
        now = _now()
        record = _Record(
            name=spec.name,
            served_as=served_as,
            model=model,
            model_path=str(folder),
            options=spec.options,
            server=_Proc(0, (ports[0], ports[1]), str(files / f"server-{tag}.log")),
            demo=demo,
            task_file=task_file,
            metrics_file=metrics_file,
            run_id=spec.run_id,
            create_time=current.create_time if current else now,
            update_time=now,
        )
        record = replace(record, server=self._start_server(record))
        if record.demo is not None:
            record = replace(record, demo=self._start_demo(record, record.demo))
        return record

    def _revive(self, record: _Record) -> _Record:
        """Restart the record's dead processes (same ports when free); write and return it."""
        _, folder = student_model(self._store, record.model)
        record = replace(record, model_path=str(folder))
        if not self._alive(record.server, _server_marker(record.name)):
            ports = record.server.ports
            if not all(port_free(p) for p in ports):
                ports = free_ports(2)
            record = replace(record, server=replace(record.server, ports=ports))
            record = replace(record, server=self._start_server(record))
        demo = record.demo
        if demo is not None and not self._alive(demo, _demo_marker(record.name)):
            demo = replace(demo, ports=demo.ports if port_free(demo.ports[0]) else free_ports(1))
            record = replace(record, demo=self._start_demo(record, demo))
        self._write(record)
        return record

    def _start_server(self, record: _Record) -> _Proc:
        http_port, grpc_port = record.server.ports
        options = record.options
        argv = serve_model_args(
            record.model_path, record.name, LOOPBACK, http_port, grpc_port, options
        )
        return replace(record.server, pid=self._spawn(argv, Path(record.server.log)))

    def _start_demo(self, record: _Record, demo: _Proc) -> _Proc:
        argv = [
            "demo",
            "--endpoint",
            record.base_url,
            "--name",
            record.name,
            "--host",
            LOOPBACK,
            "--port",
            str(demo.ports[0]),
        ]
        if record.task_file:
            argv += ["--task-json", record.task_file]
        if record.metrics_file:
            argv += ["--metrics-json", record.metrics_file]
        return replace(demo, pid=self._spawn(argv, Path(demo.log)))

    def _spawn(self, argv: Sequence[str], log_path: Path) -> int:
        """Start ``python -m p2m <argv>`` in its own session, output appended to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            child = subprocess.Popen(
                [self._python, "-m", "p2m", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=log_path.parent,
                env=self._env,
                start_new_session=True,
            )
        self._children[child.pid] = child
        log.info("started", extra={"pid": child.pid, "command": argv[0], "log": str(log_path)})
        return child.pid

    # -- processes ----------------------------------------------------------------------

    def _running(self, record: _Record) -> bool:
        server = self._alive(record.server, _server_marker(record.name))
        demo = record.demo is None or self._alive(record.demo, _demo_marker(record.name))
        return server and demo

    def _alive(self, proc: _Proc, marker: tuple[str, ...]) -> bool:
        child = self._children.get(proc.pid)
        if child is not None:
            return child.poll() is None
        return _pid_runs(proc.pid, marker)

    async def _stop(self, record: _Record) -> None:
        """Stop the record's processes together: SIGTERM, then SIGKILL after the grace."""
        procs = [(record.server, _server_marker(record.name))]
        if record.demo is not None:
            procs.append((record.demo, _demo_marker(record.name)))
        await asyncio.gather(*(self._stop_proc(p, m) for p, m in procs))

    async def _stop_proc(self, proc: _Proc, marker: tuple[str, ...]) -> None:
        loop = asyncio.get_running_loop()
        for sig, wait_s in ((signal.SIGTERM, self._stop_grace_s), (signal.SIGKILL, 5.0)):
            if not self._alive(proc, marker):
                break
            signal_group(proc.pid, sig)
            deadline = loop.time() + wait_s
            while self._alive(proc, marker) and loop.time() < deadline:
                await asyncio.sleep(0.05)
        child = self._children.pop(proc.pid, None)
        if child is not None and child.poll() is None:
            log.error("process %d outlived SIGKILL", proc.pid)

    # -- readiness ----------------------------------------------------------------------

    async def _wait_ready(self, record: _Record, timeout_s: float) -> _Status:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            status = await self._status(record)
            if status.ready or status.dead:
                return status
            if loop.time() >= deadline:
                return _Status(False, f"not ready after {timeout_s:g}s: {status.message}")
            await asyncio.sleep(POLL_S)

    async def _status(self, record: _Record) -> _Status:
        """Whether the model (and the demo, when there is one) answers now, and if not why."""
        if not self._alive(record.server, _server_marker(record.name)):
            return _Status(False, self._dead_message("model server", record.server), dead=True)
        client = self._client()
        try:
            response = await client.get(record.ready_url)
        except httpx.HTTPError:
            return _Status(False, "the model server does not answer yet (loading the model)")
        if response.status_code != 200:
            return _Status(False, f"the model is not ready (HTTP {response.status_code})")
        if record.demo is None:
            return _Status(True, "")
        if not self._alive(record.demo, _demo_marker(record.name)):
            return _Status(False, self._dead_message("demo", record.demo), dead=True)
        try:
            response = await client.get(record.demo_url)
        except httpx.HTTPError:
            return _Status(False, "the model answers; the demo does not answer yet")
        if response.status_code != 200:
            return _Status(False, f"the demo answers HTTP {response.status_code}")
        return _Status(True, "")

    def _dead_message(self, what: str, proc: _Proc) -> str:
        child = self._children.get(proc.pid)
        code = f" (exit code {child.returncode})" if child is not None else ""
        tail = _log_tail(Path(proc.log))
        where = f"; last log lines: {tail}" if tail else ""
        first = first_error_line(Path(proc.log))
        cause = f"; first error: {first}" if first and first not in tail else ""
        return f"the {what} (pid {proc.pid}) is not running{code}; log {proc.log}{cause}{where}"

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # Loopback only: never through a proxy from the environment.
            self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, trust_env=False)
        return self._http

    # -- registry -------------------------------------------------------------------------

    def _endpoint(self, record: _Record, status: _Status) -> Endpoint:
        base = record.base_url
        return Endpoint(
            name=record.name,
            base_url=base,
            v1_predict_url=f"{base}/v1/models/{record.name}:predict",
            v2_infer_url=f"{base}/v2/models/{record.name}/infer",
            grpc_address=f"{LOOPBACK}:{record.server.ports[1]}",
            demo_url=record.demo_url,
            kind=KIND_LOCAL,
            ready=status.ready,
            message="" if status.ready else status.message,
            model=record.model,
            update_time=datetime.fromisoformat(record.update_time),
            runtime=f"{record.options.runtime} {record.options.precision}",
        )

    def _names(self) -> builtins.list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if is_deployment_name(p.stem))

    def _registry_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _files_dir(self, name: str) -> Path:
        return self.root / f"{name}.d"

    def _read(self, name: str) -> _Record | None:
        path = self._registry_path(name)
        try:
            return _Record.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("unreadable registry entry %s: %s", path, exc)
            return None

    def _write(self, record: _Record) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n"
        atomic_write_text(self._registry_path(record.name), text)

    def _remove_files(self, record: _Record, keep: _Record, logs: bool = True) -> None:
        """Delete ``record``'s task and metrics (and log) files that ``keep`` does not use."""
        used = {keep.task_file, keep.metrics_file, keep.server.log}
        if keep.demo is not None:
            used.add(keep.demo.log)
        mine = [record.task_file, record.metrics_file]
        if logs:
            mine += [record.server.log, record.demo.log if record.demo else ""]
        for path in mine:
            if path and path not in used:
                Path(path).unlink(missing_ok=True)


def _server_marker(name: str) -> tuple[str, ...]:
    return ("serve-model", "--name", name)


def _demo_marker(name: str) -> tuple[str, ...]:
    return ("demo", "--name", name)


def _pid_runs(pid: int, marker: tuple[str, ...]) -> bool:
    """True when ``pid`` runs and (where /proc tells) is the process ``marker`` describes.

    ``marker`` is (command, "--name", name): after a reboot the pid may belong to anything.
    """
    if not pid_running(pid):
        return False
    argv = command_line(pid)
    if argv is None:
        return not Path("/proc/self").exists()  # no procfs: the pid is all there is to go on
    command, flag, name = marker
    return command in argv and any(
        argv[i] == flag and argv[i + 1] == name for i in range(len(argv) - 1)
    )


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            lines = fh.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:])[-800:]


def first_error_line(path: Path) -> str:
    """The log's first line naming an error: the cause, where its tail shows only the fallout.

    A model server that fails at start ends its log with asyncio's complaints about the loop it
    was closing ("Event loop is closed"), not with what failed.
    """
    try:
        with path.open("rb") as fh:
            text = fh.read(MAX_LOG_SCAN_BYTES).decode(errors="replace")
    except OSError:
        return ""
    line = next((line for line in text.splitlines() if _ERROR_LINE.search(line)), "")
    return line.strip()[:400]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _log_fields(record: _Record) -> dict[str, Any]:
    return {
        "deployment": record.name,
        "model_uri": record.model.uri,
        "server_pid": record.server.pid,
        "base_url": record.base_url,
        "demo_url": record.demo_url,
    }
