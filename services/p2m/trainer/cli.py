"""`p2m train`: fine-tune a student in-process on a local Ray, with a progress bar."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    client_settings,
    epochs_text,
    err,
    fail,
    out,
    parse_prompt,
    read_prompt,
    run_async,
)
from p2m.common.errors import Cancelled, InvalidInput, P2MError
from p2m.common.settings import Settings
from p2m.common.types import TaskSpec
from p2m.trainer.finalize import why_kept
from p2m.trainer.options import TrainOptions

EXIT_CANCELLED = 130
DEFAULTS = TrainOptions()


def train(
    data: Annotated[
        list[str],
        typer.Option(
            help="Training data: an artifact URI, a folder of train.jsonl "
            "(+ validation.jsonl) or a JSONL file of {input, output}; repeatable."
        ),
    ],
    base_model: Annotated[
        str,
        typer.Option(
            help="Local model store name (e.g. HuggingFaceTB/SmolLM2-135M-"
            "Instruct), a model folder, or a hub id when the hub is reachable."
        ),
    ],
    instruction: Annotated[
        str | None, typer.Option(help="The task's instruction, prepended to every input.")
    ] = None,
    prompt_file: Annotated[
        Path | None, typer.Option(help="Take the instruction from this prompt file instead.")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 3,
    workers: Annotated[int, typer.Option(help="Ray Train workers.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Examples per step per worker.")] = 8,
    learning_rate: Annotated[
        float,
        typer.Option(
            help="AdamW peak learning rate (0: by the base model's size, 5e-5 up to 135M "
            "parameters, less above)."
        ),
    ] = 0.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (0: none).")] = 0,
    min_steps: Annotated[
        int,
        typer.Option(
            help="Train at least this many steps: more epochs (up to 20) on small data with a "
            "validation split (0: exactly --epochs)."
        ),
    ] = DEFAULTS.min_steps,
    max_input_tokens: Annotated[int, typer.Option(help="Input truncation.")] = 384,
    max_output_tokens: Annotated[int, typer.Option(help="Output truncation.")] = 128,
    max_instruction_tokens: Annotated[
        int,
        typer.Option(
            help="Tokens the instruction may take (its start kept, a short task tag; 0: two "
            "thirds of --max-input-tokens)."
        ),
    ] = DEFAULTS.max_instruction_tokens,
    lora: Annotated[
        bool | None,
        typer.Option(
            "--lora/--no-lora",
            help="Train LoRA adapters (merged at the end), or every weight; unset: every "
            "weight where full fine-tuning fits the memory (16 bytes a parameter), else LoRA.",
        ),
    ] = None,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    gpu: Annotated[bool, typer.Option(help="One GPU per worker.")] = False,
    precision: Annotated[
        str,
        typer.Option(
            help="Forward pass arithmetic: auto (bf16 where the CPU or GPU runs it natively, "
            "about 2x faster; else fp32), fp32 or bf16."
        ),
    ] = DEFAULTS.precision,
    group_by_length: Annotated[
        bool, typer.Option(help="Batch examples of similar length together (less padding).")
    ] = True,
    max_tokens_per_pass: Annotated[
        int,
        typer.Option(
            help="Padded tokens one forward and backward pass may hold: a larger batch runs in "
            "passes whose gradients add up to its own (less memory; 0: one pass)."
        ),
    ] = DEFAULTS.max_tokens_per_pass,
    warmup_ratio: Annotated[
        float, typer.Option(help="Share of the steps the learning rate warms up over.")
    ] = DEFAULTS.warmup_ratio,
    eval_steps: Annotated[
        int, typer.Option(help="Validate every N steps too (0: at epoch ends only).")
    ] = 0,
    early_stopping_patience: Annotated[
        int, typer.Option(help="Stop after N validations without improvement (0: never).")
    ] = DEFAULTS.early_stopping_patience,
    eval_metric_examples: Annotated[
        int, typer.Option(help="Validation examples decoded for Exact Match and ChrF++.")
    ] = DEFAULTS.eval_metric_examples,
    keep_best: Annotated[
        bool,
        typer.Option(help="Keep the best weights (--keep-best-by), else the last."),
    ] = True,
    keep_best_by: Annotated[
        str,
        typer.Option(
            help="What makes weights the best: 'loss' (the lowest validation loss, "
            "--keep-best-tolerance) or 'score' (the decoded validation sample's ChrF++, the "
            "lower loss breaking a tie). Early stopping counts validations without a new best."
        ),
    ] = DEFAULTS.keep_best_by,
    keep_best_tolerance: Annotated[
        float,
        typer.Option(
            help="With --keep-best-by loss: validation losses within this share of the lowest "
            "count as tied; of tied ones the weights whose decoded validation sample scores the "
            "higher ChrF++ are kept (0: the lowest loss only)."
        ),
    ] = DEFAULTS.keep_best_tolerance,
    search_trials: Annotated[
        int,
        typer.Option(
            help="Search learning rate and epochs first: this many Ray Tune trials (ASHA "
            "stops the weak ones), keeping the one with the lowest validation loss (0: none)."
        ),
    ] = 0,
    search_min_learning_rate: Annotated[
        float, typer.Option(help="Lowest learning rate a search tries.")
    ] = DEFAULTS.search_min_learning_rate,
    search_max_learning_rate: Annotated[
        float, typer.Option(help="Highest learning rate a search tries.")
    ] = DEFAULTS.search_max_learning_rate,
    constrain_outputs: Annotated[
        bool,
        typer.Option(
            help="Hold answers to the form every training output takes (a span of the input, "
            "or one of a closed set of labels): an answer that breaks it becomes the span or "
            "label it is most like."
        ),
    ] = True,
    validate_on_demonstrations: Annotated[
        bool,
        typer.Option(
            help="Validate on the prompt's demonstrations too (with --prompt-file): they then "
            "choose the weights kept and when training stops."
        ),
    ] = DEFAULTS.validate_on_demonstrations,
    prompt_demonstrations: Annotated[
        int,
        typer.Option(
            help="Show the prompt's first N demonstrations in every student prompt (with "
            "--prompt-file), trained and served so; the prompt's token limit grows to hold them."
        ),
    ] = DEFAULTS.prompt_demonstrations,
    seed: Annotated[int, typer.Option(help="Seed for shuffling and initialisation.")] = 42,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Copy the trained model folder here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Fine-tune a base model on text-to-text data with Ray Train; rerun to resume."""
    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    if instruction is not None and prompt_file is not None:
        fail("give --instruction or --prompt-file, not both")
    options = TrainOptions(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_steps=max_steps,
        min_steps=min_steps,
        num_workers=workers,
        use_gpu=gpu,
        max_input_tokens=max_input_tokens,
        max_output_tokens=max_output_tokens,
        max_instruction_tokens=max_instruction_tokens,
        seed=seed,
        lora=bool(lora),
        lora_auto=lora is None,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        omit_instruction=instruction is None and prompt_file is None,
        precision=precision,
        group_by_length=group_by_length,
        max_tokens_per_pass=max_tokens_per_pass,
        warmup_ratio=warmup_ratio,
        eval_steps=eval_steps,
        early_stopping_patience=early_stopping_patience,
        eval_metric_examples=eval_metric_examples,
        keep_best=keep_best,
        keep_best_by=keep_best_by,
        keep_best_tolerance=keep_best_tolerance,
        search_trials=search_trials,
        search_min_learning_rate=search_min_learning_rate,
        search_max_learning_rate=search_max_learning_rate,
        constrain_outputs=constrain_outputs,
        validate_on_demonstrations=validate_on_demonstrations,
        prompt_demonstrations=prompt_demonstrations,
    )
    try:
        options.validate()
    except InvalidInput as exc:
        flag = exc.field.removeprefix("options.").replace(".", "-").replace("_", "-")
        fail(f"invalid training option --{flag}: {exc.problem}")
    if prompt_file is not None:
        task = run_async(lambda: _parse(settings, read_prompt(prompt_file)))
    else:
        task = TaskSpec(instruction=instruction or "")
    result = _train(settings, data, base_model, task, options, out_dir, show_bar=not as_json)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _show(result, options)


async def _parse(settings: Settings, prompt: bytes) -> TaskSpec:
    from p2m.local_llm.provider import LLMProvider

    provider = LLMProvider(settings)
    try:
        return await parse_prompt(provider, settings, prompt)
    finally:
        await provider.aclose()


def _train(
    settings: Settings,
    sources: list[str],
    base_model: str,
    task: TaskSpec,
    options: Any,
    out_dir: Path | None,
    show_bar: bool,
) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from p2m.common.artifacts import ArtifactStore
    from p2m.trainer.engine import ModelTrainer, TrainEvent, TrainJob

    store = ArtifactStore(settings.artifacts_dir)
    cancel = threading.Event()
    bar = Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        disable=not show_bar,
    )
    try:
        datasets = tuple(_dataset(store, source, index) for index, source in enumerate(sources))
        trainer = ModelTrainer.from_settings(settings)
        job = TrainJob(datasets, base_model, task, options)
        with bar:
            bar_id = bar.add_task("train", total=None, status="starting Ray")

            def show(event: TrainEvent) -> None:
                loss = f"loss {event.loss:.4f}" if event.loss is not None else event.message
                speed = f", {event.samples_per_second:.1f} ex/s" if event.samples_per_second else ""
                trial = f"trial {event.trial}/{event.trials}, " if event.trial else ""
                bar.update(
                    bar_id,
                    completed=event.step,
                    total=event.total_steps or None,
                    status=f"{trial}epoch {event.epoch:.2f}, {loss}{speed}",
                )

            outcome = trainer.train(job, show, cancel)
    except KeyboardInterrupt:
        cancel.set()
        fail(
            "interrupted; rerun the same command to resume from the last checkpoint", EXIT_CANCELLED
        )
    except Cancelled as exc:
        fail(str(exc), EXIT_CANCELLED)
    except InvalidInput as exc:
        fail(str(exc), 2)
    except P2MError as exc:
        fail(str(exc), 1)
    folder = store.path(outcome.model.uri)
    if out_dir is not None:
        if out_dir.exists() and any(out_dir.iterdir()):
            fail(f"--out {out_dir} exists and is not empty")
        shutil.copytree(folder, out_dir, dirs_exist_ok=True)
    return {
        "model": outcome.model.uri,
        "path": str(folder),
        "out": str(out_dir) if out_dir else None,
        "report": asdict(outcome.report),
    }


def _dataset(store: Any, source: str, index: int) -> Any:
    from p2m.common.artifacts import URI_PREFIX
    from p2m.trainer.data import store_dataset

    field = f"--data[{index}]"
    if source.startswith(URI_PREFIX):
        try:
            return store.ref(source)
        except P2MError as exc:
            raise InvalidInput(field, str(exc)) from None
    return store_dataset(store, Path(source), field)


def _show(result: dict[str, Any], options: TrainOptions) -> None:
    report = result["report"]
    eval_loss = report["final_eval_loss"]
    epochs = epochs_text(report["epochs"], report["planned_epochs"])
    out.print(
        f"[bold]{report['steps']} steps[/], {epochs} on "
        f"{report['train_examples']} examples ({report['num_workers']} {report['device']} "
        f"worker(s), {report['precision']}, {report['train_seconds']:.0f}s, "
        f"{report['samples_per_second']:.2f} ex/s"
        f"{', cached' if report['cached'] else ''}"
        f"{', memory tight (freed memory returned at once)' if report.get('memory_tight') else ''}"
        f"{', resumed from step ' + str(report['resumed_from_step']) if report['resumed_from_checkpoint'] else ''})"  # noqa: E501
    )
    out.print(
        f"final loss {report['final_loss']:.4f}"
        + (f", validation loss {eval_loss:.4f}" if eval_loss is not None else "")
    )
    if report["best_eval_loss"] is not None:
        demonstrations = report["validation_demonstrations"]
        out.print(
            f"kept the weights of step {report['best_step']} ({why_kept(report, options)}; "
            f"{report['validation_examples']} validation examples"
            + (f", {demonstrations} of them the prompt's demonstrations" if demonstrations else "")
            + ")"
            + (", stopped early: no improvement" if report["stopped_early"] else "")
        )
    if report.get("prompt_demonstrations"):
        out.print(f"every prompt shows {report['prompt_demonstrations']} of the demonstrations")
    if report.get("lora_reason"):
        out.print(report["lora_reason"], highlight=False, soft_wrap=True)
    for trial in report["search_trials"]:
        loss = trial["best_eval_loss"]
        out.print(
            f"trial {trial['trial']}: learning rate {trial['learning_rate']:.1e}, "
            f"{trial['epochs']} epoch(s), {trial['steps']} steps, validation loss "
            f"{'-' if loss is None else f'{loss:.4f}'}: {trial['outcome']}",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"model: {result['model']}", highlight=False, soft_wrap=True)
    out.print(f"  at {result['path']}", highlight=False, soft_wrap=True)
    if result["out"]:
        out.print(f"  copied to {result['out']}", highlight=False, soft_wrap=True)
