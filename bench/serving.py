"""Serving benchmark: where a student's time goes, runtime by runtime, in one run.

One student: a trained model folder (``--model``) or SmolLM2-135M from the local model store with
the task's instruction (untrained). The same ``--inputs`` held-out inputs of ``--task`` (spread
evenly over the dev half; built-in sentences without ``--shared-data``), greedy, at most
``--max-output-tokens`` new tokens, one client, one input per call:

1. bare, in this process: transformers ``generate`` in fp32, then llama.cpp (the student's GGUF
   export) in each of ``--precisions``;
2. served by ``p2m serve-model`` (KServe) with each of ``--served`` (runtime:precision), through
   the v1 and the v2 REST endpoints: KServe's overhead is the served p50 over the same runtime's
   bare p50;
3. the teacher (``--teacher``, the embedded llama.cpp endpoint) on the same inputs through the
   evaluator's request: the student's speed-up per example;
4. with ``--score N``: the task metric of N dev examples (spread evenly) for each bare runtime, so a
   precision is judged by what it does to the answers, not only by its speed;
5. load: ``C`` v1 clients kept busy for ``--duration`` seconds per level, server-side batching off
   and on, for each served runtime.

Prints latency p50/p95/p99, tokens/s, ratios and the share of answers identical to fp32
transformers'.

    .venv/bin/python bench/serving.py [--model DIR] [--task temporal] [--inputs 20]
        [--precisions f32,bf16,q8_0,q5_0,q4_0]
        [--served llama.cpp:f32,llama.cpp:q8_0,llama.cpp:q4_0,transformers:f32]
        [--teacher qwen|none] [--score 0] [--concurrency 1,8] [--duration 20] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import benchkit
import paperdata

from p2m.common.budget import Budget
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.model_store import ModelStore
from p2m.common.procs import free_ports
from p2m.common.shipped_models import resolve_gguf
from p2m.common.student import Decoding, Student, StudentSpec
from p2m.common.types import TaskSpec
from p2m.evaluator.metrics import score
from p2m.evaluator.teacher import TeacherPredictor
from p2m.llamacpp.student import LlamaCppStudent
from p2m.local_llm.server import LocalLLMConfig, LocalLLMServer

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
QUICK = {"inputs": 4, "duration": 4.0, "score": 8, "precisions": "f32,q8_0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained student folder (default: SmolLM2)")
    parser.add_argument("--task", choices=paperdata.TASKS, default="temporal")
    parser.add_argument("--inputs", type=int, default=20, help="held-out inputs timed")
    parser.add_argument(
        "--max-output-tokens",
        type=int,
        default=16,
        help="the untrained default student's limit (a trained one keeps its own)",
    )
    parser.add_argument("--precisions", default="f32,bf16,q8_0,q5_0,q4_0", help="llama.cpp, bare")
    parser.add_argument(
        "--served",
        default="llama.cpp:f32,llama.cpp:q8_0,llama.cpp:q4_0,transformers:f32",
        help="runtime:precision served by serve-model",
    )
    parser.add_argument("--teacher", default="qwen", help="shipped teacher, or none")
    parser.add_argument("--score", type=int, default=0, help="dev examples scored per runtime")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated load levels")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load level")
    parser.add_argument("--max-batch-size", type=int, default=8, help="when batching is on")
    parser.add_argument("--max-latency-ms", type=float, default=20.0, help="when batching is on")
    parser.add_argument("--models-dir", type=Path, help="model store to reuse (default: temp)")
    args = benchkit.parse_arguments(parser, QUICK)
    load_start = benchkit.load_average()
    with tempfile.TemporaryDirectory(prefix="p2m-bench-serving-", ignore_cleanup_errors=True) as t:
        work = Path(t)
        figures = measure(args, work)
    benchkit.finish("serving", args, load_start, figures, show)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every part of the run, in order; the figures."""
    models_dir = (args.models_dir or work / "models").resolve()
    task, inputs, dev = task_inputs(args)
    folder, described = student_folder(args, work, models_dir, task)
    # The served model decodes up to its spec's limit; the bare calls and the teacher get the same.
    limit = StudentSpec.load(folder).max_output_tokens
    decoding = Decoding(max_new_tokens=limit, batch_size=8)
    bare, answers = bare_latencies(args, folder, work / "gguf", inputs, decoding)
    served: dict[str, Any] = {}
    for choice in [c.strip() for c in args.served.split(",") if c.strip()]:
        runtime, _, precision = choice.partition(":")
        served[choice] = serve_and_measure(
            args, folder, work, runtime, precision or "f32", inputs, answers
        )
    scores = dev_scores(args, folder, work / "gguf", dev, decoding) if dev else {}
    teacher = (
        teacher_latency(args, models_dir, task, inputs, limit) if args.teacher != "none" else {}
    )
    figures: dict[str, Any] = {
        "model": described,
        "task": args.task if has_benchmarks(args) else "built-in sentiment sentences",
        "inputs": len(inputs),
        "dev_rows": paperdata.DEV_ROWS if has_benchmarks(args) else None,
        "max_output_tokens": limit,
        "threads": os.cpu_count(),
        "bare": bare,
        "served": served,
        "scores": scores,
        "teacher": teacher,
        "duration_s": args.duration,
        "concurrency": levels_of(args),
        "batching": {"max_batch_size": args.max_batch_size, "max_latency_ms": args.max_latency_ms},
    }
    figures["summary"] = summary(figures)
    return figures


def levels_of(args: argparse.Namespace) -> list[int]:
    """The load levels (clients) asked for."""
    return [int(level) for level in args.concurrency.split(",") if level.strip()]


def has_benchmarks(args: argparse.Namespace) -> bool:
    """True when the shared data's paper benchmarks are at hand."""
    return bool(args.shared_data) and (args.shared_data / "benchmarks").is_dir()


def task_inputs(args: argparse.Namespace) -> tuple[TaskSpec, list[str], list[Any]]:
    """The task, the timed inputs and the dev examples to score (none without shared data)."""
    if not has_benchmarks(args):
        return TaskSpec(INSTRUCTION), list(INPUTS)[: args.inputs], []
    task = paperdata.task_spec(args.shared_data, args.task)
    dev = paperdata.dev(args.shared_data, args.task)
    return (
        task,
        [e.input for e in paperdata.spread(dev, args.inputs)],
        paperdata.spread(dev, args.score) if args.score else [],
    )


def student_folder(
    args: argparse.Namespace, work: Path, models_dir: Path, task: TaskSpec
) -> tuple[Path, str]:
    """The folder to serve and a description of it."""
    if args.model:
        spec = StudentSpec.load(args.model)
        trained = f"a student trained from {spec.base_model or spec.architecture}"
        return args.model.resolve(), f"{trained} (folder {args.model.name[:16]})"
    stored = ModelStore(models_dir).import_shipped("smollm2")
    folder = work / "student"
    # Hard links where the file system allows: the store's entry stays as it is.
    shutil.copytree(stored.path, folder, copy_function=_link_or_copy)
    StudentSpec(
        "decoder-only",
        task.instruction,
        max_output_tokens=args.max_output_tokens,
        base_model=stored.name,
    ).save(folder)
    return folder, f"{stored.name} (untrained, shipped weights)"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def timed(
    predict: Callable[[list[str]], list[str]], inputs: Sequence[str], count: Callable[[str], int]
) -> tuple[dict[str, Any], list[str]]:
    """One call per input after one warm-up call: latency percentiles, tokens/s, the answers."""
    predict([inputs[0]])
    latencies, answers = [], []
    for text in inputs:
        tick = time.perf_counter()
        (answer,) = predict([text])
        latencies.append(1000 * (time.perf_counter() - tick))
        answers.append(answer)
    return latency_figures(latencies, sum(map(count, answers))), answers


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 of the latencies (ms)."""
    ordered = sorted(latencies_ms)
    return {
        name: round(benchkit.percentile(ordered, q), 1)
        for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
    }


def latency_figures(latencies_ms: list[float], tokens: int) -> dict[str, Any]:
    """p50/p95/p99 (ms), calls and output tokens per second of busy time."""
    busy_s = sum(latencies_ms) / 1000
    return {
        "calls": len(latencies_ms),
        "latency_ms": percentiles(latencies_ms),
        "tokens": tokens,
        "tokens_per_s": round(tokens / busy_s, 1) if busy_s else 0.0,
    }


def bare_latencies(
    args: argparse.Namespace, folder: Path, cache: Path, inputs: list[str], decoding: Decoding
) -> tuple[dict[str, Any], list[str]]:
    """transformers fp32, then llama.cpp in each precision, in this process."""
    student = Student(folder)
    tokenizer = student.tokenizer

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    figures: dict[str, Any] = {}
    figures["transformers:f32"], reference = timed(
        functools.partial(student.predict, decoding=decoding), inputs, count
    )
    figures["transformers:f32"]["same_as_transformers"] = 1.0
    del student
    gc.collect()
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        started = time.perf_counter()
        runtime = LlamaCppStudent(folder, precision, cache, parallel=1)
        load_s = time.perf_counter() - started
        row, answers = timed(functools.partial(runtime.predict, decoding=decoding), inputs, count)
        row["load_s"] = round(load_s, 1)  # the GGUF export included
        row["gguf_mb"] = round(runtime.gguf_path.stat().st_size / 2**20, 1)
        row["same_as_transformers"] = same_share(answers, reference)
        figures[f"llama.cpp:{precision}"] = row
        runtime.close()
        del runtime
        gc.collect()
    return figures, reference


def same_share(answers: Sequence[str], reference: Sequence[str]) -> float:
    """The share of answers identical to the reference's."""
    same = sum(a == b for a, b in zip(answers, reference, strict=True))
    return round(same / len(reference), 3) if reference else 0.0


def dev_scores(
    args: argparse.Namespace, folder: Path, cache: Path, dev: list[Any], decoding: Decoding
) -> dict[str, Any]:
    """The task metric on the scored dev examples, for each bare runtime (batched)."""
    metric = paperdata.PAPER[args.task].metric
    inputs, references = [e.input for e in dev], [e.output for e in dev]
    scored: dict[str, Any] = {}
    labels = ["transformers:f32"]
    labels += [f"llama.cpp:{p.strip()}" for p in args.precisions.split(",") if p.strip()]
    for label in labels:
        runtime, _, precision = label.partition(":")
        model: Student | LlamaCppStudent = (
            Student(folder)
            if runtime == "transformers"
            else LlamaCppStudent(folder, precision, cache, parallel=8)
        )
        started = time.perf_counter()
        predictions = model.predict(inputs, decoding)
        seconds = time.perf_counter() - started
        value = score(predictions, references, [metric]).aggregate[metric]
        scored[label] = {
            "metric": metric,
            "score": round(100 * value if metric == "exact_match" else value, 2),
            "examples": len(inputs),
            "max_new_tokens": decoding.max_new_tokens,
            "seconds": round(seconds, 1),
        }
        del model
        gc.collect()
    return scored


def teacher_latency(
    args: argparse.Namespace, models_dir: Path, task: TaskSpec, inputs: list[str], limit: int
) -> dict[str, Any]:
    """The embedded teacher on the same inputs, one request at a time (the evaluator's)."""
    path, alias = resolve_gguf(args.teacher, models_dir)
    server = LocalLLMServer(LocalLLMConfig(path, alias, n_parallel=1))
    base_url = server.start()
    try:

        async def run() -> Any:
            config = LLMConfig(base_url=base_url, model=alias, max_concurrency=1)
            async with LLMClient(config) as llm:
                predictor = TeacherPredictor(
                    llm,
                    task,
                    max_new_tokens=limit,
                    concurrency=1,
                    budget=Budget(),
                )
                await predictor.predict(inputs[:1])  # warm-up
                return await predictor.predict(inputs)

        answered = asyncio.run(run())
    finally:
        server.stop()
    latencies = [1000 * s for s in answered.latencies_s if s is not None]
    row = latency_figures(latencies, answered.usage.completion_tokens)
    row["model"] = alias
    return row


def serve_and_measure(
    args: argparse.Namespace,
    folder: Path,
    work: Path,
    runtime: str,
    precision: str,
    inputs: list[str],
    reference: list[str],
) -> dict[str, Any]:
    """One runtime behind serve-model: v1 and v2 one call at a time, then the load levels."""
    result: dict[str, Any] = {}
    modes = {"off": (0, 0.0), "on": (args.max_batch_size, args.max_latency_ms)}
    for mode, (batch_size, latency_ms) in modes.items():
        log_path = work / f"server-{runtime}-{precision}-{mode}.log"
        with served(folder, work, log_path, runtime, precision, batch_size, latency_ms) as base:
            if mode == "off":
                result["ready_s"] = base[1]
                for protocol in ("v1", "v2"):
                    row, answers = asyncio.run(sequential(base[0], protocol, inputs))
                    row["same_as_transformers"] = same_share(answers, reference)
                    result[protocol] = row
            levels = {}
            for level in levels_of(args):
                before = asyncio.run(batch_counters(base[0]))
                figures = asyncio.run(drive(base[0], level, args.duration, inputs))
                after = asyncio.run(batch_counters(base[0]))
                batches = after["batches"] - before["batches"]
                requests = after["requests"] - before["requests"]
                figures["server_batches"] = int(batches)
                figures["mean_batch_requests"] = round(requests / batches, 2) if batches else 0.0
                figures["load_avg"] = benchkit.load_average()
                levels[str(level)] = figures
            result[f"load_batching_{mode}"] = levels
    return result


@contextlib.contextmanager
def served(
    folder: Path,
    work: Path,
    log_path: Path,
    runtime: str,
    precision: str,
    max_batch_size: int,
    max_latency_ms: float,
) -> Any:
    """``p2m serve-model`` on loopback until the block ends: yields (base URL, seconds to ready)."""
    http_port, grpc_port = free_ports(2)
    argv = [sys.executable, "-m", "p2m", "serve-model", "--model", str(folder), "--name", NAME]
    argv += ["--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    argv += ["--max-batch-size", str(max_batch_size), "--max-latency-ms", f"{max_latency_ms:g}"]
    argv += ["--runtime", runtime, "--precision", precision]
    env = {**os.environ, "P2M_DATA_DIR": str(work / "data")}
    base = f"http://127.0.0.1:{http_port}"
    started = time.perf_counter()
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        asyncio.run(wait_ready(base, server, log_path))
        yield base, round(time.perf_counter() - started, 1)
    finally:
        stop(server)


async def sequential(base: str, protocol: str, inputs: list[str]) -> tuple[dict[str, Any], list]:
    """One client, one input per request, after one warm-up request: latencies and answers."""
    if protocol == "v1":
        url = f"{base}/v1/models/{NAME}:predict"

        def body(text: str) -> dict[str, Any]:
            return {"instances": [text]}

        def answer(payload: dict[str, Any]) -> str:
            return str(payload["predictions"][0])
    else:
        url = f"{base}/v2/models/{NAME}/infer"

        def body(text: str) -> dict[str, Any]:
            return {
                "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [text]}]
            }

        def answer(payload: dict[str, Any]) -> str:
            return str(payload["outputs"][0]["data"][0])

    latencies, answers = [], []
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(url, json=body(inputs[0])) as response:
            await response.read()
        for text in inputs:
            tick = time.perf_counter()
            async with session.post(url, json=body(text)) as response:
                payload = await response.json(content_type=None)
            latencies.append(1000 * (time.perf_counter() - tick))
            answers.append(answer(payload))
    return latency_figures(latencies, 0), answers


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


async def drive(
    base: str, concurrency: int, duration: float, inputs: Sequence[str]
) -> dict[str, Any]:
    """``concurrency`` clients sending one-input requests back to back for ``duration`` s."""
    url = f"{base}/v1/models/{NAME}:predict"
    latencies: list[float] = []
    errors: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        # One request first, outside the figures: the first call pays for lazy setup.
        async with session.post(url, json={"instances": [inputs[0]]}) as response:
            await response.read()
        started = time.perf_counter()
        deadline = started + duration

        async def client(index: int) -> None:
            sent = index
            while time.perf_counter() < deadline:
                body = {"instances": [inputs[sent % len(inputs)]]}
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
    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 3) if elapsed else 0.0,
        "latency_ms": percentiles(latencies),
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


def summary(f: dict[str, Any]) -> dict[str, Any]:
    """The ratios the serving goals are stated in (p50s of one client, one input per call)."""
    bare = {label: row["latency_ms"]["p50"] for label, row in f["bare"].items()}
    base = bare["transformers:f32"]
    out: dict[str, Any] = {"bare_p50_ms": bare, "to_bare_transformers": {}, "kserve_overhead": {}}
    for choice, row in f["served"].items():
        for protocol in ("v1", "v2"):
            p50 = row[protocol]["latency_ms"]["p50"]
            out["to_bare_transformers"][f"{choice} {protocol}"] = round(p50 / base, 3)
            if choice in bare:
                out["kserve_overhead"][f"{choice} {protocol}"] = round(p50 / bare[choice], 3)
    teacher = f["teacher"].get("latency_ms", {}).get("p50")
    if teacher:
        out["teacher_p50_ms"] = teacher
        out["speedup_over_teacher"] = {
            f"{choice} v1": round(teacher / row["v1"]["latency_ms"]["p50"], 2)
            for choice, row in f["served"].items()
        }
    return out


def show(figures: dict[str, Any]) -> None:
    """The figures for people."""
    print(
        f"serving {figures['model']}: {figures['inputs']} inputs of {figures['task']}, at most "
        f"{figures['max_output_tokens']} new tokens; {benchkit.machine_line(figures['machine'])}"
    )
    print(f"{'where':<28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'tokens/s':>10}{'same':>7}")
    rows = [(f"bare {label}", row) for label, row in figures["bare"].items()]
    for choice, row in figures["served"].items():
        rows += [(f"{protocol} {choice}", row[protocol]) for protocol in ("v1", "v2")]
    if figures["teacher"]:
        rows.append((f"teacher {figures['teacher']['model']}", figures["teacher"]))
    for label, row in rows:
        latency = row["latency_ms"]
        tokens = f"{row['tokens_per_s']:.1f}" if row.get("tokens") else "-"
        same = f"{row['same_as_transformers']:.2f}" if "same_as_transformers" in row else "-"
        print(
            f"{label:<28}{latency['p50']:>9.0f}{latency['p95']:>9.0f}{latency['p99']:>9.0f}"
            f"{tokens:>10}{same:>7}"
        )
    for label, row in figures["scores"].items():
        print(f"dev {row['metric']} {label}: {row['score']} ({row['examples']} examples)")
    summary_ = figures["summary"]
    print(f"served p50 / bare transformers p50: {summary_['to_bare_transformers']}")
    print(f"KServe overhead (served / bare, same runtime): {summary_['kserve_overhead']}")
    if "speedup_over_teacher" in summary_:
        print(f"student speed-up over the teacher: {summary_['speedup_over_teacher']}")
    for choice, row in figures["served"].items():
        for mode in ("off", "on"):
            for level, load in row[f"load_batching_{mode}"].items():
                latency = load["latency_ms"]
                print(
                    f"load {choice} batching {mode} {level} clients: "
                    f"{load['requests_per_s']:.2f} req/s, p50 {latency['p50']:.0f} ms, "
                    f"{load['errors']} errors, {load['mean_batch_requests']:.2f} per batch"
                )


if __name__ == "__main__":
    main()
