"""``p2m generate``: a synthetic dataset for a prompt's task, with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    PromptFile,
    client_settings,
    err,
    fail,
    out,
    parse_prompt,
    read_prompt,
    run_async,
)
from p2m.common.errors import InvalidInput
from p2m.common.settings import Settings
from p2m.generator.options import GenerateOptions

DEFAULTS = GenerateOptions()


def generate(
    prompt_file: PromptFile,
    num_examples: Annotated[int, typer.Option(help="Examples to accept.")] = 100,
    out: Annotated[
        Path | None, typer.Option(help="Folder for train.jsonl / validation.jsonl.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    seed: Annotated[int, typer.Option(help="Seed: same prompt, options, seed -> same data.")] = 0,
    max_requests: Annotated[int, typer.Option(help="Request budget (0: none).")] = 0,
    max_tokens: Annotated[int, typer.Option(help="Token budget (0: none).")] = 0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Requests per round.")] = 16,
    self_consistency: Annotated[
        int,
        typer.Option(
            help="Outputs voted per input where answers are voted on (0: 5 where every output "
            "is a span of its input and the temperature is left to the task, else 3)."
        ),
    ] = DEFAULTS.self_consistency_samples,
    temperature: Annotated[
        tuple[float, float], typer.Option(help="Annealing range: start end.")
    ] = (0.3, 1.4),
    diverse: Annotated[bool, typer.Option(help="Vary the examples each prompt shows.")] = True,
    annealing: Annotated[bool, typer.Option(help="Raise the temperature as the set fills.")] = True,
    vote: Annotated[bool, typer.Option(help="Self-consistency vote on outputs.")] = True,
    dedup: Annotated[bool, typer.Option(help="Drop exact and near duplicates.")] = True,
    word_threshold: Annotated[
        float,
        typer.Option(
            help="Drop an input sharing this share of word trigrams with a kept one; 1: off."
        ),
    ] = 0.5,
    meaning_threshold: Annotated[
        float,
        typer.Option(
            help="Drop an input this close in meaning (cosine) to an accepted one; 1: off."
        ),
    ] = 0.95,
    check_invariants: Annotated[
        bool, typer.Option(help="Drop examples that break the demonstrations' invariants.")
    ] = True,
    span_first: Annotated[
        bool,
        typer.Option(
            help="Where the demonstrations' outputs are copied from a marked passage, write the "
            "passage first, choose a span of it as the answer, then write the question for it."
        ),
    ] = False,
    passage_first: Annotated[
        bool,
        typer.Option(
            help="Where the demonstrations' outputs are copied from a marked passage, write the "
            "passage first, then a question about it, answered by the vote as any input."
        ),
    ] = False,
    key_kinds: Annotated[
        bool,
        typer.Option(
            help="Where outputs are keyed items, hold every key to the demonstrations' keys' "
            "kind by meaning (output_key_kinds; off: it cost Temporal's student)."
        ),
    ] = False,
    judge: Annotated[
        bool, typer.Option(help="The teacher grades each example 1-5 (one request more each).")
    ] = False,
    judge_threshold: Annotated[int, typer.Option(help="Lowest grade kept with --judge.")] = 3,
    max_output_share: Annotated[
        float,
        typer.Option(
            help="Most of the examples one output may make when outputs are open (not a "
            "closed set of labels); 0: no cap."
        ),
    ] = DEFAULTS.max_output_share,
    input_demonstrations: Annotated[
        int,
        typer.Option(
            help="Demonstrations a request for a new input shows (a small teacher "
            f"copies what it is shown; answer requests show {DEFAULTS.few_shot_demonstrations})."
        ),
    ] = DEFAULTS.input_demonstrations,
    input_generated_examples: Annotated[
        int,
        typer.Option(
            help="Accepted examples a request for a new input shows after its demonstrations "
            "(the paper's way to vary the prompts; a small teacher may copy them)."
        ),
    ] = DEFAULTS.few_shot_generated,
    answer_generated_examples: Annotated[
        int,
        typer.Option(
            help="Accepted examples an answer request shows after the demonstrations (0: the "
            "demonstrations only, as the evaluator asks the teacher)."
        ),
    ] = DEFAULTS.answer_generated_examples,
    answer_temperature: Annotated[
        float | None,
        typer.Option(
            help="Temperature of the answer requests: 0 asks one greedy answer per input; above "
            "0, self-consistency votes on samples at this temperature. Default: 1.0 where every "
            "demonstration's output is a span of its input, else 0.",
            show_default=False,
        ),
    ] = DEFAULTS.answer_temperature,
    input_frequency_penalty: Annotated[
        float,
        typer.Option(
            help="frequency_penalty of a request for a new input (a small teacher "
            "loops through long inputs without one); 0: none."
        ),
    ] = DEFAULTS.input_frequency_penalty,
    stall_timeout: Annotated[
        float,
        typer.Option(
            help="Stop with what was made after this many seconds without a new "
            "example (0: never); the same command again resumes."
        ),
    ] = DEFAULTS.stall_timeout_s,
    invariants_file: Annotated[
        Path | None,
        typer.Option(
            "--invariants",
            help="The invariants as JSON (the form --show-invariants prints) instead of the "
            "learned ones; {} for none.",
        ),
    ] = None,
    show_invariants: Annotated[
        bool, typer.Option(help="Print the invariants learned from the prompt and exit.")
    ] = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Generate a synthetic dataset for the prompt's task with the teacher LLM."""
    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    prompt = read_prompt(prompt_file)
    if show_invariants:
        learned = run_async(lambda: _learned_invariants(settings, prompt, key_kinds))
        _show_invariants(learned, as_json)
        return
    invariants = _read_invariants(invariants_file) if invariants_file else None
    options = GenerateOptions(
        num_examples=num_examples,
        seed=seed,
        max_requests=max_requests,
        max_tokens=max_tokens,
        max_concurrency=concurrency,
        batch_size=batch_size,
        self_consistency_samples=self_consistency,
        temperature_start=temperature[0],
        temperature_end=temperature[1],
        diverse_prompts=diverse,
        annealing=annealing,
        self_consistency=vote,
        dedup=dedup,
        dedup_word_similarity_threshold=word_threshold,
        meaning_dedup_threshold=meaning_threshold,
        check_invariants=check_invariants,
        invariants=invariants,
        judge=judge,
        judge_threshold=judge_threshold,
        span_first=span_first,
        passage_first=passage_first,
        key_kinds=key_kinds,
        max_output_share=max_output_share,
        stall_timeout_s=stall_timeout,
        input_demonstrations=input_demonstrations,
        few_shot_generated=input_generated_examples,
        answer_generated_examples=answer_generated_examples,
        input_frequency_penalty=input_frequency_penalty,
        answer_temperature=answer_temperature,
    )
    try:
        options.validate()
    except InvalidInput as exc:
        fail(f"invalid generation option {exc.field.removeprefix('options.')}: {exc.problem}")
    report = run_async(lambda: _generate_local(settings, prompt, options, out, not as_json))
    if as_json:
        out_json = json.dumps(report, ensure_ascii=False)
        print(out_json)
    else:
        _show_generation(report)


async def _generate_local(
    settings: Settings, prompt: bytes, options: Any, out_dir: Path | None, show_bar: bool
) -> dict[str, Any]:
    import shutil

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from p2m.common.artifacts import ArtifactStore
    from p2m.common.encoder import shipped_encoder
    from p2m.generator.engine import DatasetGenerator, GenerationProgress
    from p2m.local_llm.provider import LLMProvider

    provider = LLMProvider(settings)
    bar = Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        disable=not show_bar,
    )
    try:
        task = await parse_prompt(provider, settings, prompt)
        generator = DatasetGenerator.from_settings(
            settings, await provider.client(), shipped_encoder()
        )
        store = ArtifactStore(settings.artifacts_dir)
        with bar:
            bar_id = bar.add_task("generate", total=options.num_examples, status="")

            def show(p: GenerationProgress) -> None:
                dups = p.dropped["exact_duplicate"] + p.dropped["near_duplicate"]
                status = f"dropped {sum(p.dropped.values())} ({dups} duplicates), {p.tokens} tokens"
                bar.update(bar_id, completed=p.accepted, status=status)

            result = await generator.generate(task, options, show)
        folder = store.path(result.dataset.sha256)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("train.jsonl", "validation.jsonl"):
                shutil.copyfile(folder / name, out_dir / name)
        return {
            "dataset": result.dataset.uri,
            "path": str(folder),
            "out": str(out_dir) if out_dir else None,
            "rows": result.rows,
            **result.report.to_json(),
        }
    finally:
        await provider.aclose()


def _read_invariants(path: Path) -> Any:
    """The invariants in a JSON file; exit 2 naming the problem."""
    from p2m.generator.invariants import Invariants

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read --invariants {path}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"--invariants {path} is not JSON: {exc}")
    try:
        return Invariants.from_json(data, "--invariants")
    except InvalidInput as exc:
        fail(str(exc))


async def _learned_invariants(settings: Settings, prompt: bytes, key_kinds: bool) -> Any:
    from p2m.common.encoder import shipped_encoder
    from p2m.generator.invariants import infer
    from p2m.local_llm.provider import LLMProvider

    provider = LLMProvider(settings)
    try:
        task = await parse_prompt(provider, settings, prompt)
        return infer(task, shipped_encoder() if key_kinds else None)
    finally:
        await provider.aclose()


def _show_invariants(invariants: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(invariants.to_json(), ensure_ascii=False))
        return
    lines = invariants.describe() or ["none (fewer than two demonstrations, or nothing shared)"]
    out.print("invariants learned from the demonstrations:", highlight=False)
    for line in lines:
        out.print(f"  - {line}", highlight=False)


_STOPPED_SHORT = {
    "budget_exhausted": "the request or token budget ran out.",
    "no_progress": "several rounds in a row added no example (the teacher repeated itself or "
    "broke the demonstrations' rules: see the drops below).",
    "stalled": "no new example within --stall-timeout seconds (a slow or failing endpoint); "
    "the same command again resumes from the examples kept.",
}


def _show_generation(report: dict[str, Any]) -> None:
    out.print(
        f"[bold]{report['accepted']}/{report['requested']} examples[/] "
        f"({report['stop_reason']}, {report['rounds']} rounds, {report['elapsed_s']:.0f}s"
        f"{', cached' if report['cached'] else ''})"
    )
    if why := _STOPPED_SHORT.get(report["stop_reason"]):
        err.print(f"[yellow]stopped short:[/] {why}", highlight=False)
    table = Table("filter", "dropped", title="quality filters")
    for name, count in report["dropped"].items():
        table.add_row(name, str(count))
    for rule, count in report["invariant_drops"].items():
        table.add_row(f"  invariant {rule}", str(count))
    out.print(table)
    out.print(
        f"duplicates: {report['duplicate_share']:.0%} of the candidates dropped; "
        f"{report['near_duplicate_share']:.0%} of the kept inputs near another (word trigrams); "
        f"the commonest output makes {report['commonest_output_share']:.0%}"
    )
    if report["label_counts"]:
        labels = ", ".join(f"{label} {n}" for label, n in report["label_counts"].items())
        out.print(f"labels: {labels}", highlight=False)
    usage = report["usage"]
    out.print(
        f"LLM: {usage['requests']} requests ({usage['retries']} retries), "
        f"{usage['prompt_tokens'] + usage['completion_tokens']} tokens; "
        f"{usage['capped_answers']} answers cut at their token limit, "
        f"{usage['stopped_answers']} stopped looping; "
        f"self-consistency agreement {report['self_consistency_agreement']:.2f}"
    )
    out.print(f"dataset: {report['dataset']}", highlight=False, soft_wrap=True)
    out.print(f"  at {report['path']}", highlight=False, soft_wrap=True)
    if report["out"]:
        out.print(f"  copied to {report['out']}/train.jsonl, validation.jsonl", highlight=False)
