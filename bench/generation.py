"""Generation benchmark against the real local endpoint (llama.cpp serving a shipped model).

Prints: examples/s at concurrency 1 and at the default concurrency (and their ratio), the
duplicate rate with and without diverse prompts, and the self-consistency agreement rate when
answers are voted on (``--json``: one JSON object instead).

    .venv/bin/python bench/generation.py [--examples 20] [--model smollm2] [--answer-temperature T]
        [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import benchkit

from p2m.common.artifacts import ArtifactStore
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.shipped_models import resolve_gguf
from p2m.common.types import TaskSpec
from p2m.generator.engine import DatasetGenerator, GenerationReport
from p2m.generator.options import GenerateOptions
from p2m.local_llm.server import LocalLLMConfig, LocalLLMServer
from p2m.parser.markers import parse_marked

QUICK_EXAMPLES = 4
LLM_TIMEOUT_S = 900.0


def temporal_task(shared: Path) -> TaskSpec:
    prompts = json.loads((shared / "benchmarks" / "prompts.json").read_text(encoding="utf-8"))
    marked = parse_marked(prompts["tasks"]["temporal"]["full_prompt"])
    assert marked is not None
    return TaskSpec(marked.instruction, marked.demonstrations)


async def run(
    base_url: str, task: TaskSpec, options: GenerateOptions, work: Path
) -> GenerationReport:
    # A long timeout: on a busy 2-core machine a request can take minutes, and a retry after a
    # timeout would measure the client's patience rather than the generator.
    config = LLMConfig(base_url=base_url, max_concurrency=16, timeout_s=LLM_TIMEOUT_S)
    async with LLMClient(config) as llm:
        generator = DatasetGenerator(llm, ArtifactStore(work / "artifacts"), work / "gen", "bench")
        return (await generator.generate(task, options)).report


def duplicate_rate(report: GenerationReport) -> float:
    duplicates = report.dropped["exact_duplicate"] + report.dropped["near_duplicate"]
    generated = report.accepted + sum(report.dropped.values())
    return duplicates / generated if generated else 0.0


def _temperature(value: float | None) -> str:
    """The answers' temperature for people (None: the generator's, by the task)."""
    return "by the task" if value is None else f"{value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--concurrency", type=int, default=GenerateOptions().max_concurrency)
    parser.add_argument(
        "--answer-temperature",
        type=float,
        default=GenerateOptions().answer_temperature,
        help="the answers' temperature; above 0, self-consistency votes (default: the generator's)",
    )
    benchkit.common_arguments(parser, f"{QUICK_EXAMPLES} examples per run")
    args = parser.parse_args()
    load_start = benchkit.load_average()
    examples = QUICK_EXAMPLES if args.quick else args.examples
    task = temporal_task(args.shared_data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path, alias = resolve_gguf(args.model, work / "models")
        server = LocalLLMServer(LocalLLMConfig(path, alias, n_parallel=max(4, args.concurrency)))
        base_url = server.start()
        try:
            base = GenerateOptions(
                num_examples=examples,
                few_shot_demonstrations=4,
                few_shot_generated=2,
                self_consistency_samples=3,
                answer_temperature=args.answer_temperature,
                seed=5,
            )
            runs = {
                "concurrency 1": replace(base, max_concurrency=1),
                f"concurrency {args.concurrency}": replace(base, max_concurrency=args.concurrency),
                "no diverse prompts": replace(
                    base, diverse_prompts=False, max_concurrency=args.concurrency
                ),
            }
            reports, loads = {}, {}
            for label, options in runs.items():
                reports[label] = asyncio.run(
                    run(base_url, task, options, work / label.replace(" ", "_"))
                )
                loads[label] = benchkit.load_average()
        finally:
            server.stop()
    one, many = reports["concurrency 1"], reports[f"concurrency {args.concurrency}"]
    rate = {label: r.accepted / r.elapsed_s if r.elapsed_s else 0.0 for label, r in reports.items()}
    figures = {
        "bench": "generation",
        "quick": args.quick,
        "machine": benchkit.machine(),
        "load_avg_start": load_start,
        "load_avg_end": benchkit.load_average(),
        "task": "temporal",
        "model": args.model,
        "examples_per_run": examples,
        "answer_temperature": args.answer_temperature,
        "runs": {
            label: {
                "max_concurrency": runs[label].max_concurrency,
                "diverse_prompts": runs[label].diverse_prompts,
                "accepted": report.accepted,
                "elapsed_s": round(report.elapsed_s, 2),
                "examples_per_s": round(rate[label], 4),
                "requests": report.usage.requests,
                "duplicate_rate": round(duplicate_rate(report), 4),
                "self_consistency_agreement": round(report.self_consistency_agreement, 4),
                "load_avg": loads[label],
            }
            for label, report in reports.items()
        },
        "speedup": round(
            rate[f"concurrency {args.concurrency}"] / rate["concurrency 1"]
            if rate["concurrency 1"]
            else 0.0,
            3,
        ),
        "duplicate_rate_diverse": round(duplicate_rate(many), 4),
        "duplicate_rate_plain": round(duplicate_rate(reports["no diverse prompts"]), 4),
        "self_consistency_agreement": round(many.self_consistency_agreement, 4),
    }
    if args.json:
        benchkit.emit(figures)
        return
    print(
        f"generation benchmark: {examples} Temporal examples per run, model {args.model}, "
        f"answer temperature {_temperature(args.answer_temperature)}, "
        f"{benchkit.machine_line(figures['machine'])}"
    )
    print(f"{'run':<22}{'examples/s':>12}{'requests':>10}{'dup rate':>10}{'agreement':>11}  load")
    for label, report in reports.items():
        print(
            f"{label:<22}{rate[label]:>12.3f}{report.usage.requests:>10}"
            f"{duplicate_rate(report):>10.2f}{report.self_consistency_agreement:>11.2f}"
            f"  {benchkit.load_note(loads[label])}"
        )
    print(f"speed-up at concurrency {args.concurrency}: {figures['speedup']:.2f}x")
    print(
        f"duplicate rate: {duplicate_rate(many):.2f} with diverse prompts, "
        f"{duplicate_rate(reports['no diverse prompts']):.2f} without"
    )
    if not many.self_consistency_agreement:
        print("self-consistency: nothing voted on (one greedy answer per input)")
        return
    print(
        f"self-consistency agreement: {many.self_consistency_agreement:.2f} (concurrency 1: "
        f"{one.self_consistency_agreement:.2f})"
    )


if __name__ == "__main__":
    main()
