"""Serving benchmark: the real KServe model server on loopback under load, batching off and on.

Serves a student with ``p2m serve-model`` (the process the deployer starts): SmolLM2-135M from the
local model store with a ``p2m_student.json`` (8 output tokens), or a trained model folder given
by ``--model``. Once ``GET /v2/models/NAME/ready`` answers 200, an asyncio + aiohttp load
generator keeps ``C`` v1 ``:predict`` requests (one short input each) in flight for ``D`` seconds,
for each concurrency, first with server-side batching off, then on. Prints requests/s, latency
p50/p95/p99, errors, and the server's own batch counters (mean requests per batch).

    .venv/bin/python bench/serving.py [--model DIR] [--concurrency 1,8] [--duration 20]
        [--max-batch-size 8] [--max-latency-ms 20] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import benchkit

from p2m.common.model_store import ModelStore
from p2m.common.procs import free_ports
from p2m.common.student import StudentSpec

NAME = "bench-student"
INSTRUCTION = "Classify the sentiment of the review as positive or negative."
INPUTS = (
    "I loved it.",
    "Terrible service, never again.",
    "The food was fine but the wait was long.",
    "Best concert of my life!",
    "It broke after two days.",
    "Quite good value for the price.",
)
READY_TIMEOUT_S = 600.0
STOP_GRACE_S = 15.0
REQUEST_TIMEOUT_S = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="a trained student folder (default: SmolLM2)")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated levels")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--max-batch-size", type=int, default=8, help="when batching is on")
    parser.add_argument("--max-latency-ms", type=float, default=20.0, help="when batching is on")
    parser.add_argument("--max-output-tokens", type=int, default=8)
    parser.add_argument("--models-dir", type=Path, help="model store to reuse (default: temp)")
    benchkit.common_arguments(parser, "5 s per measurement", shared=False)
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 5.0)
    levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    load_start = benchkit.load_average()
    with tempfile.TemporaryDirectory(prefix="p2m-bench-serving-", ignore_cleanup_errors=True) as t:
        work = Path(t)
        folder, described = student_folder(args, work)
        modes = {
            "off": (0, 0.0),
            "on": (args.max_batch_size, args.max_latency_ms),
        }
        results: dict[str, Any] = {}
        for mode, (batch_size, latency_ms) in modes.items():
            results[mode] = serve_and_measure(
                folder, work / f"server-{mode}.log", batch_size, latency_ms, levels, args.duration
            )
    figures = {
        "bench": "serving",
        "quick": args.quick,
        "machine": benchkit.machine(),
        "load_avg_start": load_start,
        "load_avg_end": benchkit.load_average(),
        "model": described,
        "protocol": "KServe v1 REST :predict, one input per request, loopback",
        "duration_s": args.duration,
        "concurrency": levels,
        "max_output_tokens": args.max_output_tokens,
        "batching": {
            mode: {"max_batch_size": size, "max_latency_ms": latency}
            for mode, (size, latency) in modes.items()
        },
        "results": results,
    }
    if args.json:
        benchkit.emit(figures)
        return
    show(figures)


def student_folder(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """The folder to serve and a description of it."""
    if args.model:
        spec = StudentSpec.load(args.model)
        return args.model.resolve(), f"{args.model} ({spec.base_model or spec.architecture})"
    store = ModelStore((args.models_dir or work / "models").resolve())
    stored = store.import_shipped("smollm2")
    folder = work / "student"
    # Hard links where the file system allows: the store's entry stays as it is.
    shutil.copytree(stored.path, folder, copy_function=_link_or_copy)
    StudentSpec(
        "decoder-only",
        INSTRUCTION,
        max_output_tokens=args.max_output_tokens,
        base_model=stored.name,
    ).save(folder)
    return folder, f"{stored.name} (untrained, shipped weights)"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def serve_and_measure(
    folder: Path,
    log_path: Path,
    max_batch_size: int,
    max_latency_ms: float,
    levels: list[int],
    duration: float,
) -> dict[str, Any]:
    """Start the model server, measure each concurrency level, stop it."""
    http_port, grpc_port = free_ports(2)
    argv = [
        sys.executable,
        "-m",
        "p2m",
        "serve-model",
        "--model",
        str(folder),
        "--name",
        NAME,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--max-batch-size",
        str(max_batch_size),
        "--max-latency-ms",
        f"{max_latency_ms:g}",
    ]
    base = f"http://127.0.0.1:{http_port}"
    started = time.perf_counter()
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        asyncio.run(wait_ready(base, server, log_path))
        ready_s = time.perf_counter() - started
        levels_out = {}
        for level in levels:
            before = asyncio.run(batch_counters(base))
            figures = asyncio.run(drive(base, level, duration))
            after = asyncio.run(batch_counters(base))
            batches = after["batches"] - before["batches"]
            requests = after["requests"] - before["requests"]
            figures["server_batches"] = int(batches)
            figures["mean_batch_requests"] = round(requests / batches, 2) if batches else 0.0
            figures["load_avg"] = benchkit.load_average()
            levels_out[str(level)] = figures
        return {"ready_s": round(ready_s, 1), "levels": levels_out}
    finally:
        stop(server)


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def wait_ready(base: str, server: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll the v2 readiness URL until 200; fail with the log's tail if the server dies."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"{base}/v2/models/{NAME}/ready"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"serve-model exited with {server.returncode}:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise SystemExit(f"serve-model not ready after {READY_TIMEOUT_S:.0f} s")


async def drive(base: str, concurrency: int, duration: float) -> dict[str, Any]:
    """``concurrency`` clients sending one-input requests back to back for ``duration`` s."""
    url = f"{base}/v1/models/{NAME}:predict"
    latencies: list[float] = []
    errors: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        # One request first, outside the figures: the first call pays for lazy setup.
        async with session.post(url, json={"instances": [INPUTS[0]]}) as response:
            await response.read()
        started = time.perf_counter()
        deadline = started + duration

        async def client(index: int) -> None:
            sent = index
            while time.perf_counter() < deadline:
                body = {"instances": [INPUTS[sent % len(INPUTS)]]}
                sent += concurrency
                tick = time.perf_counter()
                try:
                    async with session.post(url, json=body) as response:
                        payload = await response.json(content_type=None)
                        ok = response.status == 200 and len(payload.get("predictions", [])) == 1
                        kind = "ok" if ok else f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    kind = type(exc).__name__
                if kind == "ok":
                    latencies.append(1000 * (time.perf_counter() - tick))
                else:
                    errors[kind] = errors.get(kind, 0) + 1

        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 3) if elapsed else 0.0,
        "latency_ms": {
            name: round(benchkit.percentile(latencies, q), 1)
            for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
        },
    }


_COUNTER = re.compile(
    r'^(p2m_batch(?:es|_requests)_total)\{[^}]*model_name="([^"]+)"[^}]*\}\s+(\S+)'
)


async def batch_counters(base: str) -> dict[str, float]:
    """The server's batch counters from ``GET /metrics`` (zeros when absent)."""
    counts = {"batches": 0.0, "requests": 0.0}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{base}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        match = _COUNTER.match(line)
        if match and match.group(2) == NAME:
            key = "batches" if match.group(1) == "p2m_batches_total" else "requests"
            counts[key] = float(match.group(3))
    return counts


def show(figures: dict[str, Any]) -> None:
    """The figures for people."""
    print(
        f"serving: {figures['model']}, {figures['protocol']}, {figures['duration_s']:g} s per "
        f"level; {benchkit.machine_line(figures['machine'])}"
    )
    print(
        f"{'batching':<10}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'per batch':>11}  load"
    )
    for mode, result in figures["results"].items():
        for level, row in result["levels"].items():
            latency = row["latency_ms"]
            print(
                f"{mode:<10}{level:>8}{row['requests_per_s']:>9.2f}{latency['p50']:>9.0f}"
                f"{latency['p95']:>9.0f}{latency['p99']:>9.0f}{row['errors']:>8}"
                f"{row['mean_batch_requests']:>11.2f}  {benchkit.load_note(row['load_avg'])}"
            )


if __name__ == "__main__":
    main()
