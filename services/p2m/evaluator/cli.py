"""``p2m evaluate``: score a trained student, the teacher LLM, or both, on a JSONL file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    client_settings,
    err,
    fail,
    out,
    parse_prompt,
    read_prompt,
    run_async,
)
from p2m.common.errors import InvalidInput, NotFound
from p2m.common.settings import Settings
from p2m.common.student import SPEC_FILE
from p2m.evaluator.metrics import METRICS, check_metrics

if TYPE_CHECKING:
    from p2m.evaluator.engine import EvalData, EvaluateOptions, StudentSubject, TeacherSubject

#: What the command computes when --metrics is not given (the service's default is cheaper).
CLI_METRICS = METRICS


def evaluate(
    test: Annotated[
        Path, typer.Option(help="JSONL file of examples, one object per line.", show_default=False)
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="Trained model folder (with p2m_student.json), or a p2m-artifact:// URI in "
            "the data dir's artifact store."
        ),
    ] = None,
    input_field: Annotated[str, typer.Option(help="Field of each line read as input.")] = "input",
    output_field: Annotated[
        str, typer.Option(help="Field of each line read as the reference output.")
    ] = "output",
    teacher: Annotated[
        bool,
        typer.Option(
            "--teacher",
            help="Score the teacher LLM prompted with --prompt-file's instruction and "
            "demonstrations: alone, or beside the --model student on the same examples.",
        ),
    ] = False,
    prompt_file: Annotated[
        Path | None, typer.Option(help="The task's prompt, for --teacher ('-': stdin).")
    ] = None,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Metrics, repeated or comma-separated: {', '.join(METRICS)} (default: all)."
        ),
    ] = None,
    max_examples: Annotated[int, typer.Option(help="Score the first N examples (0: all).")] = 0,
    max_new_tokens: Annotated[
        int, typer.Option(help="Tokens per prediction (0: the model's own limit; teacher 128).")
    ] = 0,
    num_beams: Annotated[int, typer.Option(help="Beams of beam search (1: greedy).")] = 1,
    batch_size: Annotated[
        int, typer.Option(help="Examples per forward pass / teacher requests in flight (0: auto).")
    ] = 0,
    worst: Annotated[int, typer.Option(help="Lowest-scoring examples to show.")] = 5,
    runtime: Annotated[
        str,
        typer.Option(
            help="What decodes the model: auto (llama.cpp where the model server would use it), "
            "llama.cpp or transformers. Default: P2M_SERVING_RUNTIME (auto), as the model "
            "server's."
        ),
    ] = "",
    precision: Annotated[
        str,
        typer.Option(
            help="llama.cpp's weights: q8_0, f32, f16, bf16, q5_0 or q4_0. Default: "
            "P2M_SERVING_PRECISION (q8_0), as the model server serves it; f32 where "
            "transformers decodes."
        ),
    ] = "",
    teacher_max_requests: Annotated[
        int, typer.Option(help="Request budget of the teacher, retries included (0: none).")
    ] = 0,
    bertscore_hub_model: Annotated[
        bool,
        typer.Option(help="BERTScore with xlm-roberta-large when the hub is reachable."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Score a student (--model), the teacher (--teacher), or both on the same examples.

    With both, the report is the student's, with the teacher's beside it under "teacher".
    """
    from p2m.evaluator.engine import EvaluateOptions, TeacherSubject, read_jsonl

    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    names = [n.strip() for value in metrics or [] for n in value.split(",") if n.strip()]
    try:
        options = EvaluateOptions(
            metrics=check_metrics(names or CLI_METRICS),
            max_examples=max_examples,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            batch_size=batch_size,
            num_worst_examples=worst,
            runtime=runtime,
            precision=precision,
        )
        options.validate()
        teacher_subject = TeacherSubject(max_requests=teacher_max_requests)
    except InvalidInput as exc:
        name = exc.field.removeprefix("options.").removeprefix("decoding.").replace(".", "_")
        fail(f"invalid option {name}: {exc.problem}")
    if model is None and not teacher:
        fail("nothing to score: give --model, --teacher (with --prompt-file), or both")
    if teacher and prompt_file is None:
        fail("--teacher needs --prompt-file: the teacher is prompted with the task's prompt")
    try:
        data = read_jsonl(test, input_field, output_field)
    except InvalidInput as exc:
        fail(f"test file {test}: {exc.problem}")
    if not data.examples:
        fail(f"test file {test}: no examples")
    model_ref = _model_subject(settings, model) if model is not None else None
    prompt = read_prompt(prompt_file) if teacher and prompt_file is not None else None
    show_bar = not as_json
    report = run_async(
        lambda: _evaluate_local(
            settings,
            model_ref,
            prompt,
            teacher_subject,
            data,
            options,
            bertscore_hub_model,
            show_bar,
        )
    )
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _show(report)


def _model_subject(settings: Settings, model: str) -> StudentSubject:
    from p2m.common.artifacts import ArtifactStore
    from p2m.evaluator.engine import StudentSubject

    try:
        stored = None
        if model.startswith("p2m-artifact:"):
            store = ArtifactStore(settings.artifacts_dir)
            stored = StudentSubject.from_store(store, model, field="model")
        folder = stored.folder if stored else Path(model)
        if not folder.is_dir():
            fail(f"--model {model}: no such folder")
        if not (folder / SPEC_FILE).is_file():
            fail(f"--model {model}: not a trained student (no {SPEC_FILE} in the folder)")
        return stored or StudentSubject.from_folder(folder)
    except InvalidInput as exc:
        fail(f"--model {model}: {exc.problem}")
    except NotFound as exc:
        fail(f"--model {model}: {exc} (data dir {settings.data_dir})")


async def _evaluate_local(
    settings: Settings,
    student: StudentSubject | None,
    prompt: bytes | None,
    teacher: TeacherSubject,
    data: EvalData,
    options: EvaluateOptions,
    bertscore_hub_model: bool,
    show_bar: bool,
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from p2m.evaluator.engine import EvaluationProgress, Evaluator, Subject
    from p2m.local_llm.provider import LLMProvider

    provider = LLMProvider(settings)
    if bertscore_hub_model:
        settings = dataclasses.replace(settings, bertscore_hub_model=True)
    evaluator = Evaluator.from_settings(settings, provider.client)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        disable=not show_bar,
    )
    try:
        subjects: list[tuple[str, Subject]] = []
        task = None
        if student is not None:
            subjects.append(("student", student))
        if prompt is not None:
            task = await parse_prompt(provider, settings, prompt)
            subjects.append(("teacher", teacher))
        reports: dict[str, dict[str, Any]] = {}
        with bar:
            for name, subject in subjects:
                bar_id = bar.add_task(f"evaluating the {name}", total=None)

                def show(p: EvaluationProgress, bar_id: Any = bar_id) -> None:
                    bar.update(bar_id, completed=p.done, total=p.total)

                result = await evaluator.evaluate(subject, data, options, task, show)
                reports[name] = _with_short_names(result.to_json())
    finally:
        await provider.aclose()
    if "student" in reports:
        report = reports["student"]
        if "teacher" in reports:
            report["teacher"] = reports["teacher"]
        return report
    return reports["teacher"]


def _with_short_names(report: dict[str, Any]) -> dict[str, Any]:
    """Add "bertscore" beside "bertscore_f1" in the metrics: the name the CLI documents."""
    if "bertscore_f1" in report["metrics"]:
        report["metrics"]["bertscore"] = report["metrics"]["bertscore_f1"]
    return report


def _show(report: dict[str, Any]) -> None:
    columns = [("student" if "teacher" in report else report["notes"].get("subject", ""), report)]
    if "teacher" in report:
        columns.append(("teacher", report["teacher"]))
    table = Table("", *[name for name, _ in columns], title="evaluation")
    for metric in (m for m in report["metrics"] if m != "bertscore"):  # an alias
        table.add_row(metric, *[f"{r['metrics'].get(metric, 0.0):.4f}" for _, r in columns])
    table.add_row("examples", *[str(r["num_examples"]) for _, r in columns])
    table.add_row("latency p50 (ms)", *[f"{r['latency']['p50_ms']:.1f}" for _, r in columns])
    table.add_row("latency p95 (ms)", *[f"{r['latency']['p95_ms']:.1f}" for _, r in columns])
    table.add_row("size (MB)", *[f"{r['model_size_bytes'] / 1e6:.1f}" for _, r in columns])
    table.add_row("parameters", *[f"{r['num_parameters']:,}" for _, r in columns])
    table.add_row("LLM requests", *[str(r["llm_usage"]["requests"]) for _, r in columns])
    table.add_row("cached", *[str(r["cached"]) for _, r in columns])
    out.print(table)
    for name, r in columns:
        worst = Table("input", "reference", "prediction", "scores", title=f"worst ({name})")
        for e in r["worst_examples"]:
            scores = ", ".join(f"{k} {v:.2f}" for k, v in e["scores"].items())
            worst.add_row(e["input"], e["reference"], e["prediction"], scores)
        out.print(worst)
        notes = "; ".join(f"{k}: {v}" for k, v in r["notes"].items())
        out.print(f"[dim]{name} notes: {notes}[/]", highlight=False, soft_wrap=True)
