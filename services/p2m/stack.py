"""The local stack: every service and the LLM endpoint as processes on loopback (`p2m up/down`).

Each service runs as ``python -m p2m serve <name>`` in its own process group, logging to
``<data_dir>/logs/<name>.log``; ``<data_dir>/stack.json`` records pids and addresses, so `p2m down`
(or a later `p2m run`) finds them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from p2m.common.errors import FailedPrecondition, Unavailable
from p2m.common.model_store import DEFAULT_STUDENT, ModelStore
from p2m.common.procs import free_port, pid_running, signal_group
from p2m.common.settings import Settings
from p2m.local_llm.server import penalty_window

STACK_FILE = "stack.json"
# Start order: the LLM first (others call it), the gateway last (it calls the others).
STAGE_SERVICES = ("parser", "retriever", "generator", "trainer", "evaluator", "deployer")
LLM_USERS = ("parser", "retriever", "generator", "evaluator")
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class StackProcess:
    """One process of the stack."""

    name: str
    pid: int
    address: str
    log: str


@dataclass(frozen=True)
class Stack:
    """A running local stack."""

    gateway: str
    processes: tuple[StackProcess, ...]
    llm_base_url: str

    def save(self, data_dir: Path) -> None:
        """Write ``stack.json``."""
        body = {
            "gateway": self.gateway,
            "llm_base_url": self.llm_base_url,
            "processes": [asdict(p) for p in self.processes],
        }
        path = data_dir / STACK_FILE
        path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, data_dir: Path) -> Stack | None:
        """The recorded stack, or None."""
        path = data_dir / STACK_FILE
        if not path.exists():
            return None
        body = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            body["gateway"],
            tuple(StackProcess(**p) for p in body["processes"]),
            body.get("llm_base_url", ""),
        )

    def alive(self) -> bool:
        """Every process runs and the gateway answers health checks."""
        return all(pid_running(p.pid) for p in self.processes) and _grpc_serving(self.gateway)


def up(settings: Settings, say: Callable[[str], None] = lambda line: None) -> Stack:
    """Start the stack (or return the one already up)."""
    settings = dataclasses.replace(settings, data_dir=settings.data_dir.resolve())
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    existing = Stack.load(data_dir)
    if existing is not None and existing.alive():
        say(f"the stack is already up (gateway {existing.gateway})")
        return existing
    if existing is not None:
        down(settings, say)
    settings.logs_dir.mkdir(exist_ok=True)
    say("checking the local model store (the default student)")
    ModelStore(settings.models_dir).import_shipped(DEFAULT_STUDENT)
    env = service_env(settings, data_dir)
    started: list[StackProcess] = []
    try:
        llm_base_url = settings.llm_base_url
        caller_env = llm_caller_env(settings, env)
        if not llm_base_url:
            say(f"starting the local LLM endpoint ({settings.local_llm})")
            llm = _start("llm", settings, env, ["--local-llm", settings.local_llm])
            started.append(llm)
            _wait_http(f"http://{llm.address}/health", llm)
            llm_base_url = f"http://{llm.address}/v1"
        addresses: dict[str, str] = {}
        for name in STAGE_SERVICES:
            say(f"starting the {name}")
            uses_llm = name in LLM_USERS
            extra = ["--llm-base-url", llm_base_url] if uses_llm else []
            process = _start(name, settings, caller_env if uses_llm else env, extra)
            started.append(process)
            addresses[name] = process.address
        for process in started:
            if process.name != "llm":
                _wait_grpc(process)
        say("starting the gateway")
        gateway_env = {**env, **{f"P2M_{n.upper()}_ADDR": a for n, a in addresses.items()}}
        gateway = _start("gateway", settings, gateway_env, [])
        started.append(gateway)
        _wait_grpc(gateway)
    except BaseException:
        for process in reversed(started):
            _stop(process)
        raise
    stack = Stack(gateway.address, tuple(started), llm_base_url)
    stack.save(data_dir)
    return stack


def down(settings: Settings, say: Callable[[str], None] = lambda line: None) -> bool:
    """Stop the deployments and every process of the recorded stack; False when none was up."""
    data_dir = settings.data_dir.resolve()
    stack = Stack.load(data_dir)
    if stack is None:
        return False
    deployer = next((p for p in stack.processes if p.name == "deployer"), None)
    if deployer is not None and pid_running(deployer.pid):
        removed = undeploy_all(deployer.address)
        if removed:
            say(f"stopped {removed} deployment(s)")
    for process in reversed(stack.processes):
        say(f"stopping the {process.name}")
        _stop(process)
    (data_dir / STACK_FILE).unlink(missing_ok=True)
    return True


def service_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """The environment of the stack's services: this one, ``settings``, the data dir, path roots.

    ``P2M_PATH_ROOTS`` are the folders a request may name files in; by default the home and
    working folders, where the files a person names in ``p2m run`` on their own machine are.
    """
    own = os.pathsep.join(str(folder) for folder in (Path.home(), Path.cwd().resolve()))
    return {
        **os.environ,
        **settings.as_environ(),
        "P2M_DATA_DIR": str(data_dir),
        "P2M_PATH_ROOTS": settings.path_roots or own,
    }


def llm_caller_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """The environment of a service that calls the LLM, with the stack's llama.cpp's penalty window.

    A configured endpoint gets only what was set: it may not be llama.cpp.
    """
    if settings.llm_base_url:
        return env
    return {**env, "P2M_LLM_PENALTY_WINDOW": str(penalty_window(settings))}


def _start(name: str, settings: Settings, env: dict[str, str], extra: list[str]) -> StackProcess:
    port = free_port()
    log = settings.logs_dir / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "p2m",
        "serve",
        name,
        "--port",
        str(port),
        "--data-dir",
        str(settings.data_dir),
        *extra,
    ]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return StackProcess(name, process.pid, f"127.0.0.1:{port}", str(log))


def _wait_grpc(process: StackProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pid_running(process.pid):
            raise FailedPrecondition(f"the {process.name} exited at start; see {process.log}")
        if _grpc_serving(process.address):
            return
        time.sleep(0.3)
    raise Unavailable(
        f"the {process.name} was not ready in {START_TIMEOUT_S:.0f}s; see {process.log}"
    )


def _wait_http(url: str, process: StackProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pid_running(process.pid):
            raise FailedPrecondition(f"the {process.name} exited at start; see {process.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise Unavailable(
        f"the {process.name} was not ready in {START_TIMEOUT_S:.0f}s; see {process.log}"
    )


def _grpc_serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def _stop(process: StackProcess, grace_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace_s``."""
    signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_running(process.pid):
        time.sleep(0.2)
    signal_group(process.pid, signal.SIGKILL)  # what is left of the group


def undeploy_all(address: str) -> int:
    """Stop every deployment of the deployer at ``address``; return how many."""
    from prompt2model.v1 import deployer_pb2, deployer_pb2_grpc

    removed = 0
    try:
        with grpc.insecure_channel(address) as channel:
            stub = deployer_pb2_grpc.DeployerStub(channel)
            listing = stub.ListDeployments(
                deployer_pb2.ListDeploymentsRequest(page_size=1000), timeout=30
            )
            for endpoint in listing.endpoints:
                stub.Undeploy(
                    deployer_pb2.UndeployRequest(name=endpoint.name, allow_missing=True), timeout=60
                )
                removed += 1
    except grpc.RpcError:
        pass
    return removed
