"""bench/report.py: the plan of bench processes a report run starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report


def _plan(*argv: str, tmp_path: Path) -> list[tuple[str, list[str]]]:
    args = report.parser().parse_args(["--only", "curves", *argv])
    shared, models, curves = tmp_path / "shared", tmp_path / "models", tmp_path / "curves"
    return report.planned(args, ["curves"], ["mconala_ja"], shared, models, curves, tmp_path)


def test_each_curves_student_gets_its_own_run_and_folder(tmp_path):
    plan = _plan("--students", "smollm2,qwen", "--curves-epochs", "1", tmp_path=tmp_path)
    assert [name for name, _ in plan] == ["curves:mconala_ja", "curves:mconala_ja:qwen"]
    (_, default), (_, qwen) = plan
    flag = {argv[i]: argv[i + 1] for argv in [qwen] for i in range(len(argv) - 1)}
    assert flag["--student"] == "qwen" and flag["--epochs"] == "1"
    assert flag["--data-dir"] == str(tmp_path / "curves" / "mconala_ja-qwen")
    assert default[default.index("--data-dir") + 1] == str(tmp_path / "curves" / "mconala_ja")


def test_the_curves_bench_keeps_its_own_epochs_unless_told(tmp_path):
    ((_, argv),) = _plan(tmp_path=tmp_path)
    assert "--epochs" not in argv and argv[argv.index("--student") + 1] == "smollm2"


def test_a_bench_owns_the_cpu_of_the_sessions_its_processes_start():
    """A bench starts a service in a session of its own, which burns CPU: it is the bench's."""
    service = (
        "import time\nend = time.process_time() + 0.6\n"
        "while time.process_time() < end: pass\ntime.sleep(30)"
    )
    bench = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {service!r}], start_new_session=True)\n"
        "print(child.pid, flush=True)\ntime.sleep(30)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", bench], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    service_pid = int(proc.stdout.readline())
    try:
        sampler = report.SessionCpu(proc.pid)
        deadline = time.monotonic() + 20
        while sampler.cpu_s < 0.5 and time.monotonic() < deadline:
            sampler.sample()
            time.sleep(0.2)
        assert sampler.cpu_s >= 0.5  # the bench itself idles: the rest is the service's
    finally:
        for group in (service_pid, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        proc.wait()
