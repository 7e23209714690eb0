"""Start real p2m processes on loopback ports for tests, and stop them cleanly."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from p2m.common import procs

REPO = Path(__file__).resolve().parents[1]
# Under pytest-xdist each worker ("gw0", "gw1", ...) picks its ports from a range of its own, below
# the kernel's ephemeral ports (32768 and up), so two workers never pick one port between its
# choice and a service's bind.
WORKER_PORTS_FROM, WORKER_PORTS_EACH = 20000, 3000


def xdist_worker() -> int | None:
    """This pytest-xdist worker's number ("gw1": 1), or None outside one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") else None


def free_port() -> int:
    """A loopback port free now: from this pytest-xdist worker's own range, if under one."""
    worker = xdist_worker()
    if worker is None:
        return procs.free_port()
    first = WORKER_PORTS_FROM + worker * WORKER_PORTS_EACH
    for port in random.sample(range(first, first + WORKER_PORTS_EACH), 200):
        if procs.port_free(port):
            return port
    return procs.free_port()


class ServiceProcess:
    """`p2m serve <service>` in a subprocess; its stderr goes to a log file."""

    def __init__(
        self,
        service: str,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        port: int = 0,
    ):
        self.service = service
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = data_dir / f"{service}-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._cmd = [
            sys.executable,
            "-m",
            "p2m",
            "serve",
            service,
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            *args,
        ]
        self.extra_env = dict(env or {})
        self._env = {**os.environ, **self.extra_env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> ServiceProcess:
        """Launch the process and wait until it serves."""
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> ServiceProcess:
        """Start the process without waiting for it."""
        log = self.log_path.open("ab")  # a restart on the same port keeps the earlier log
        self.proc = subprocess.Popen(
            self._cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env, start_new_session=True
        )
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> ServiceProcess:
        """Wait until the launched process serves; stop it and raise when it cannot."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.service} exited early:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.service} not ready in {timeout_s}s:\n{self.log()}")

    def ready(self) -> bool:
        if self.service == "llm":
            try:
                with urllib.request.urlopen(f"http://{self.address}/health", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        return grpc_health_status(self.address) == health_pb2.HealthCheckResponse.SERVING

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._kill_leftovers()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the service and every process it started, as when its machine dies."""
        assert self.proc is not None
        self._kill_leftovers()
        self.proc.wait()

    def _kill_leftovers(self) -> None:
        """The service's own process group (e.g. Ray's agents) goes with it."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def base_url(self) -> str:
        return f"http://{self.address}/v1"

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_together(processes: list[ServiceProcess], timeout_s: float = 300.0) -> None:
    """Launch every process at once (their imports overlap), then wait for each to serve.

    Raises:
        RuntimeError, TimeoutError: One did not come up; every one launched is stopped.
    """
    try:
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready(timeout_s)
    except BaseException:
        for process in processes:
            if process.proc is not None:
                process.stop()
        raise


def grpc_health_status(address: str, service: str = "") -> int | None:
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            return int(reply.status)
    except grpc.RpcError:
        return None


def run_p2m(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `p2m` command line in a subprocess from the repo root; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "p2m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        input=stdin if stdin is not None else "",
    )


def seed_catalog_index(index: Path | None, data_dir: Path) -> None:
    """Copy the session's catalog index (the ``catalog_index`` fixture) into ``data_dir``."""
    if index is not None:
        shutil.copytree(index, data_dir / "cache" / "retriever", dirs_exist_ok=True)
