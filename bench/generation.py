"""Generation benchmark against the real local endpoint (llama.cpp serving a shipped model).

Prints: examples/s at concurrency 1 and at the default concurrency (and their ratio), the
duplicate rate with and without diverse prompts, and the self-consistency agreement rate.

    .venv/bin/python bench/generation.py [--examples 20] [--model smollm2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
from dataclasses import replace
from pathlib import Path

from p2m.common.artifacts import ArtifactStore
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.types import TaskSpec
from p2m.generator.engine import DatasetGenerator, GenerationReport
from p2m.generator.options import GenerateOptions
from p2m.llm.models import resolve_gguf
from p2m.llm.server import LocalLLMConfig, LocalLLMServer
from p2m.parser.markers import parse_marked


def temporal_task(shared: Path) -> TaskSpec:
    prompts = json.loads((shared / "benchmarks" / "prompts.json").read_text(encoding="utf-8"))
    marked = parse_marked(prompts["tasks"]["temporal"]["full_prompt"])
    assert marked is not None
    return TaskSpec(marked.instruction, marked.demonstrations)


async def run(
    base_url: str, task: TaskSpec, options: GenerateOptions, work: Path
) -> GenerationReport:
    async with LLMClient(LLMConfig(base_url=base_url, max_concurrency=16)) as llm:
        generator = DatasetGenerator(llm, ArtifactStore(work / "artifacts"), work / "gen", "bench")
        return (await generator.generate(task, options)).report


def duplicate_rate(report: GenerationReport) -> float:
    duplicates = report.dropped["exact_duplicate"] + report.dropped["near_duplicate"]
    generated = report.accepted + sum(report.dropped.values())
    return duplicates / generated if generated else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--concurrency", type=int, default=GenerateOptions().max_concurrency)
    parser.add_argument("--quick", action="store_true", help="8 examples per run")
    parser.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("P2M_SHARED_DATA", "../shared/data")),
    )
    args = parser.parse_args()
    examples = 8 if args.quick else args.examples
    task = temporal_task(args.shared_data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path, alias = resolve_gguf(args.model, work / "models")
        server = LocalLLMServer(LocalLLMConfig(path, alias, n_parallel=max(4, args.concurrency)))
        base_url = server.start()
        base = GenerateOptions(
            num_examples=examples, few_shot_demonstrations=4, few_shot_generated=2,
            self_consistency_samples=3, seed=5,
        )  # fmt: skip
        runs = {
            "concurrency 1": replace(base, max_concurrency=1),
            f"concurrency {args.concurrency}": replace(base, max_concurrency=args.concurrency),
            "no diverse prompts": replace(
                base, diverse_prompts=False, max_concurrency=args.concurrency
            ),
        }
        reports = {}
        for label, options in runs.items():
            reports[label] = asyncio.run(
                run(base_url, task, options, work / label.replace(" ", "_"))
            )
        server.stop()
    one, many = reports["concurrency 1"], reports[f"concurrency {args.concurrency}"]
    rate = {label: r.accepted / r.elapsed_s for label, r in reports.items()}
    print(
        f"generation benchmark: {examples} Temporal examples per run, model {args.model}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print(f"{'run':<22}{'examples/s':>12}{'requests':>10}{'dup rate':>10}{'agreement':>11}")
    for label, report in reports.items():
        print(
            f"{label:<22}{rate[label]:>12.3f}{report.usage.requests:>10}"
            f"{duplicate_rate(report):>10.2f}{report.self_consistency_agreement:>11.2f}"
        )
    print(
        f"speed-up at concurrency {args.concurrency}: "
        f"{rate[f'concurrency {args.concurrency}'] / rate['concurrency 1']:.2f}x"
    )
    print(
        f"duplicate rate: {duplicate_rate(many):.2f} with diverse prompts, "
        f"{duplicate_rate(reports['no diverse prompts']):.2f} without"
    )
    print(
        f"self-consistency agreement: {many.self_consistency_agreement:.2f} (concurrency 1: "
        f"{one.self_consistency_agreement:.2f})"
    )


if __name__ == "__main__":
    main()
