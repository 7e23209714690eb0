"""Processes and ports on this machine: free ports, liveness by pid, stopping a process group."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
from pathlib import Path

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def free_ports(count: int, host: str = LOOPBACK) -> tuple[int, ...]:
    """``count`` distinct ports free on ``host`` now (held together while chosen).

    Raises:
        OSError: ``host`` cannot be bound.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return tuple(int(s.getsockname()[1]) for s in sockets)
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOOPBACK) -> int:
    """A port free on ``host`` now (another process may take it before it is bound)."""
    return free_ports(1, host)[0]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could listen on ``port`` now.

    Bound as uvicorn and gRPC bind (SO_REUSEADDR), so that connections of a dead server still
    in TIME_WAIT do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pid_running(pid: int) -> bool:
    """True when ``pid`` is a process that has not exited (a zombie has)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    with contextlib.suppress(OSError, IndexError):  # no procfs: the pid is all there is
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    return True


def command_line(pid: int) -> list[str] | None:
    """The argv of ``pid`` from procfs; None where it cannot be read."""
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")]


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (its children too), else the process alone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        log.warning("not allowed to signal process group %d", pid)


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity, capped by its cgroup's CPU quota (a pod's limit).

    A container limited to 2 CPUs on a 64-core node still sees 64 cores; llama.cpp running 64
    threads there would spend its time descheduled.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text(encoding="utf-8").split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        pass  # no cgroup v2 quota to read: the affinity is all there is
    return max(1, cpus)
