"""What each stage of a run does: one call (or a few) to a stage service, and what it records.

Each stage reads what earlier stages left in the ``Run`` message and writes its own results
there, so a run resumed after a restart has everything it needs. A stage raises ``Skip`` when it
has nothing to do (with the reason) and a ``P2MError`` when it fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2m.common.dataset_preview import preview_line
from p2m.common.errors import FailedPrecondition, NotFound, P2MError
from p2m.gateway.clients import StageClients
from prompt2model.v1 import (
    common_pb2,
    deployer_pb2,
    evaluator_pb2,
    gateway_pb2,
    generator_pb2,
    parser_pb2,
    retriever_pb2,
    trainer_pb2,
)

S = common_pb2
DEFAULT_STUDENT = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATASET_CANDIDATES = 5
MODEL_CANDIDATES = 5
GENERATED_ONLY_NOTE = (
    "the scores rest on generated data alone: the held-out examples were written by the "
    "teacher, which shares its style and its errors with the training data, so they flatter the "
    "student; the scores on the demonstrations are the only human-made check"
)
NO_DEMONSTRATIONS_NOTE = "the prompt has no demonstrations, so no human-made example checks them"
DEMONSTRATIONS_VALIDATED_NOTE = (
    "the trainer validated on the demonstrations, so they also chose which epoch's weights were "
    "kept: their score leans their way"
)
SHOWN_DEMONSTRATIONS_NOTE = (
    "every student prompt shows the first {shown} demonstrations, so the score on the "
    "demonstrations leaves them out"
)
ALL_SHOWN_NOTE = (
    "every student prompt shows all the demonstrations, so no human-made example checks them"
)


class Skip(Exception):
    """The stage has nothing to do; the message says why."""


@dataclass
class StageOutcome:
    """What a finished stage reports beside what it wrote into the run."""

    cached: bool = False
    artifacts: list[common_pb2.ArtifactRef] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    note: str = ""
    usage: common_pb2.LLMUsage | None = None


class StageContext(Protocol):
    """What a stage may use: the run, the prompt, the services, and ways to report and ask."""

    run: gateway_pb2.Run
    prompt: str
    clients: StageClients
    max_retrieved_rows: int
    default_student: str

    def progress(self, progress: common_pb2.Progress) -> None:
        """Report progress of the stage."""

    def warn(self, message: str) -> None:
        """Tell a person something that does not stop the run."""

    async def ask(self, choice: gateway_pb2.PendingChoice) -> list[str]:
        """The values chosen (by a person in interactive mode, else the defaults)."""

    def remaining_requests(self) -> int:
        """LLM requests left in the run's budget (0: no limit)."""

    def remaining_tokens(self) -> int:
        """LLM tokens left in the run's budget (0: no limit)."""


def _result(run: gateway_pb2.Run, stage: common_pb2.Stage) -> gateway_pb2.StageResult:
    return next(r for r in run.stages if r.stage == stage)


def _artifact(
    run: gateway_pb2.Run, stage: common_pb2.Stage, kind: str
) -> common_pb2.ArtifactRef | None:
    result = _result(run, stage)
    if result.state != gateway_pb2.STAGE_STATE_SUCCEEDED:
        return None
    return next((a for a in result.artifacts if a.kind == kind), None)


async def parse(ctx: StageContext) -> StageOutcome:
    """Prompt -> TaskSpec."""
    response = await ctx.clients.unary(
        "parser", lambda stub: stub.Parse(parser_pb2.ParseRequest(prompt=ctx.prompt), timeout=900)
    )
    ctx.run.task.CopyFrom(response.task)
    return StageOutcome(
        figures={"demonstrations": len(response.task.demonstrations)},
        note=f"instruction in {response.task.language}"
        if response.task.original_instruction
        else "",
        usage=response.llm_usage,
    )


async def retrieve_datasets(ctx: StageContext) -> StageOutcome:
    """Rank the dataset catalog; keep the candidates (or a person's pick) in ``run.datasets``."""
    options = ctx.run.options
    if options.WhichOneof("own_dataset") == "dataset":
        del ctx.run.datasets[:]
        ctx.run.datasets.append(options.dataset)
        raise Skip(f"the person brought the dataset {options.dataset.name}")
    if options.WhichOneof("own_dataset") == "dataset_path":
        del ctx.run.datasets[:]
        ctx.run.datasets.append(
            common_pb2.DatasetRef(
                name=options.dataset_path, input_columns=["input"], output_column="output"
            )
        )
        raise Skip("the person brought a dataset file")
    _skip_if_asked(ctx, S.STAGE_RETRIEVE_DATASETS)
    search = ctx.run.options.dataset_search
    request = retriever_pb2.SearchDatasetsRequest(
        task=ctx.run.task,
        top_k=DATASET_CANDIDATES,
        run_id=ctx.run.run_id,
        include_gated=search.include_gated,
        rerank=search.rerank,
    )
    response = await ctx.clients.unary(
        "retriever", lambda stub: stub.SearchDatasets(request, timeout=900)
    )
    if not response.catalog_available:
        raise Skip(response.note or "no dataset catalog")
    candidates = list(response.datasets)
    if ctx.run.options.mode == gateway_pb2.INTERACTION_MODE_INTERACTIVE and candidates:
        chosen = await ctx.ask(
            gateway_pb2.PendingChoice(
                choice_id="dataset",
                stage=S.STAGE_RETRIEVE_DATASETS,
                question="Which dataset should the student also learn from? (none: only "
                "generated data)",
                options=[
                    gateway_pb2.ChoiceOption(
                        value=d.name, label=d.name, detail=_dataset_detail(d), score=d.score
                    )
                    for d in candidates
                ],
                default_values=[candidates[0].name],
                min_values=0,
                max_values=1,
            )
        )
        candidates = [d for d in candidates if d.name in chosen]
    del ctx.run.datasets[:]
    ctx.run.datasets.extend(candidates)
    return StageOutcome(
        figures={
            "candidates": len(candidates),
            "catalog_size": response.catalog_size,
            "gated_left_out": response.gated_left_out,
            "search_s": round(response.first_stage_seconds, 3),
            **(
                {"rerank_s": round(response.rerank.seconds, 1)}
                if response.HasField("rerank")
                else {}
            ),
        },
        note=response.note,
        usage=response.llm_usage,
    )


def _dataset_detail(dataset: common_pb2.DatasetRef) -> str:
    """What a person sees of a candidate: its description, what it holds, its variants."""
    lines = [" ".join(dataset.description.split())[:240], preview_line(dataset.preview)]
    if dataset.variants:
        lines.append("also: " + ", ".join(dataset.variants[:5]))
    return "\n".join(lines)


async def prepare_dataset(ctx: StageContext) -> StageOutcome:
    """Prepare the first usable candidate (loadable, with columns that fit the task)."""
    candidates = list(ctx.run.datasets)
    if not candidates:
        raise Skip("no dataset to prepare")
    _skip_if_asked(ctx, S.STAGE_PREPARE_DATASET)
    passed: list[str] = []
    usage = common_pb2.LLMUsage()
    for candidate in candidates:
        request = retriever_pb2.PrepareDatasetRequest(
            dataset=common_pb2.DatasetRef(name=candidate.name, config=candidate.config),
            task=ctx.run.task,
            input_columns=candidate.input_columns,
            output_column=candidate.output_column,
            max_rows=ctx.max_retrieved_rows,
            seed=ctx.run.options.seed,
            run_id=ctx.run.run_id,
        )
        try:
            response = await ctx.clients.unary("retriever", _prepare_call(request))
        except NotFound as error:
            passed.append(f"{candidate.name}: cannot be loaded ({error})")
            continue
        add_usage(usage, response.llm_usage)
        if not response.proposal.suitable:
            passed.append(f"{candidate.name}: no columns fit the task")
            continue
        del ctx.run.datasets[:]
        ctx.run.datasets.append(response.dataset)
        return StageOutcome(
            cached=response.cached,
            artifacts=[response.dataset.artifact],
            figures={
                "train": response.rows.train,
                "validation": response.rows.validation,
                "test": response.rows.test,
            },
            note="; ".join(passed),
            usage=usage,
        )
    del ctx.run.datasets[:]
    raise Skip("no candidate could be used: " + "; ".join(passed))


def _prepare_call(
    request: retriever_pb2.PrepareDatasetRequest,
) -> Callable[[Any], Awaitable[retriever_pb2.PrepareDatasetResponse]]:
    return lambda stub: stub.PrepareDataset(request, timeout=1800)


# Why a generation that stopped short did (the run goes on with what was made).
_STOPPED_SHORT = {
    generator_pb2.GENERATION_STOP_REASON_BUDGET_EXHAUSTED: "the LLM budget ran out",
    generator_pb2.GENERATION_STOP_REASON_NO_PROGRESS: (
        "several rounds in a row added no example (the teacher repeated itself or broke the "
        "demonstrations' rules; see the generation report's drops)"
    ),
    generator_pb2.GENERATION_STOP_REASON_STALLED: (
        "no new example within the stall timeout (a slow or failing endpoint); "
        "the same run again resumes from them"
    ),
}


async def generate(ctx: StageContext) -> StageOutcome:
    """Synthetic examples from the teacher."""
    _skip_if_asked(ctx, S.STAGE_GENERATE)
    options = generator_pb2.GenerateOptions()
    options.CopyFrom(ctx.run.options.generate)
    budget = ctx.run.options.budget
    if budget.num_examples:
        options.num_examples = budget.num_examples
    if not options.HasField("seed"):
        options.seed = ctx.run.options.seed
    options.max_requests = _tightest(options.max_requests, ctx.remaining_requests())
    options.max_tokens = _tightest(options.max_tokens, ctx.remaining_tokens())
    request = generator_pb2.GenerateRequest(
        task=ctx.run.task, options=options, run_id=ctx.run.run_id
    )
    last = await ctx.clients.stream(
        "generator",
        lambda stub: stub.Generate(request),
        lambda message: ctx.progress(message.progress),
    )
    result = last.result
    ctx.run.report.generation.CopyFrom(result.report)
    if why := _STOPPED_SHORT.get(result.report.stop_reason):
        report = result.report
        ctx.warn(f"generation stopped at {report.accepted} of {report.requested} examples: {why}")
    return StageOutcome(
        cached=result.report.cached,
        artifacts=[result.dataset],
        figures={
            "accepted": result.report.accepted,
            "requested": result.report.requested,
            "train": result.rows.train,
            "validation": result.rows.validation,
        },
        usage=result.report.llm_usage,
    )


async def retrieve_model(ctx: StageContext) -> StageOutcome:
    """Pick the student base model: brought, searched for, or the default."""
    options = ctx.run.options
    which = options.WhichOneof("own_base_model")
    if which is not None:
        chosen = (
            options.base_model
            if which == "base_model"
            else common_pb2.ModelRef(name=options.base_model_name)
        )
        ctx.run.base_model.CopyFrom(chosen)
        raise Skip(f"the person chose {chosen.name}")
    if S.STAGE_RETRIEVE_MODEL in options.skip_stages:
        ctx.run.base_model.CopyFrom(common_pb2.ModelRef(name=ctx.default_student))
        raise Skip(f"skipped on request; using the default student {ctx.default_student}")
    constraints = common_pb2.ModelConstraints()
    constraints.CopyFrom(options.student)
    constraints.only_resolvable = True
    request = retriever_pb2.SearchModelsRequest(
        task=ctx.run.task, constraints=constraints, top_k=MODEL_CANDIDATES, run_id=ctx.run.run_id
    )
    response = await ctx.clients.unary(
        "retriever", lambda stub: stub.SearchModels(request, timeout=900)
    )
    models = list(response.models)
    if not models:
        raise FailedPrecondition(
            "no student model meets the constraints and can be had "
            f"({response.note or 'import one with `p2m models import`'})"
        )
    chosen_model = models[0]
    if options.mode == gateway_pb2.INTERACTION_MODE_INTERACTIVE and len(models) > 1:
        values = await ctx.ask(
            gateway_pb2.PendingChoice(
                choice_id="model",
                stage=S.STAGE_RETRIEVE_MODEL,
                question="Which base model should the student be fine-tuned from?",
                options=[
                    gateway_pb2.ChoiceOption(
                        value=m.name,
                        label=m.name,
                        score=m.score,
                        detail=m.fit_reason
                        or f"{m.architecture}, {m.size_bytes / 1e6:.0f} MB, {m.license}",
                    )
                    for m in models
                ],
                default_values=[models[0].name],
                min_values=1,
                max_values=1,
            )
        )
        chosen_model = next(m for m in models if m.name == values[0])
    ctx.run.base_model.CopyFrom(chosen_model)
    why = f"{chosen_model.name}: {chosen_model.fit_reason}" if chosen_model.fit_reason else ""
    return StageOutcome(
        figures={"candidates": len(models), "skipped": len(response.skipped)},
        note="; ".join(part for part in (why, response.note) if part),
        usage=response.llm_usage,
    )


async def train(ctx: StageContext) -> StageOutcome:
    """Fine-tune the base model on the prepared and generated data."""
    datasets = [
        ref
        for ref in (
            _artifact(ctx.run, S.STAGE_PREPARE_DATASET, "dataset"),
            _artifact(ctx.run, S.STAGE_GENERATE, "dataset"),
        )
        if ref is not None
    ]
    if not datasets:
        raise FailedPrecondition("no data to train on: no dataset was prepared or generated")
    options = trainer_pb2.TrainOptions()
    options.CopyFrom(ctx.run.options.train)
    if ctx.run.options.budget.epochs:
        options.epochs = ctx.run.options.budget.epochs
    if not options.HasField("seed"):
        options.seed = ctx.run.options.seed
    base = common_pb2.ModelRef(
        name=ctx.run.base_model.name, architecture=ctx.run.base_model.architecture
    )
    if ctx.run.base_model.artifact.uri:
        base.artifact.CopyFrom(ctx.run.base_model.artifact)
    request = trainer_pb2.TrainRequest(
        datasets=datasets,
        base_model=base,
        task=ctx.run.task,
        options=options,
        run_id=ctx.run.run_id,
    )
    last = await ctx.clients.stream(
        "trainer", lambda stub: stub.Train(request), lambda m: ctx.progress(m.progress)
    )
    result = last.result
    ctx.run.report.training.CopyFrom(result.report)
    ctx.run.report.model.CopyFrom(result.model)
    figures = {
        "steps": result.report.steps,
        "loss": result.report.final_loss,
        "samples_per_second": result.report.samples_per_second,
    }
    if result.report.HasField("final_eval_loss"):
        figures["eval_loss"] = result.report.final_eval_loss
    return StageOutcome(cached=result.report.cached, artifacts=[result.model], figures=figures)


async def evaluate(ctx: StageContext) -> StageOutcome:
    """Score the student, then the teacher, on the held-out split."""
    _skip_if_asked(ctx, S.STAGE_EVALUATE)
    prepared = _artifact(ctx.run, S.STAGE_PREPARE_DATASET, "dataset")
    generated = _artifact(ctx.run, S.STAGE_GENERATE, "dataset")
    del ctx.run.report.estimate_notes[:]  # a stage run again writes them again
    if prepared is not None:
        dataset, split, note = prepared, "test", "on the retrieved dataset's test split"
    elif generated is not None and _result(ctx.run, S.STAGE_GENERATE).figures["validation"] > 0:
        dataset, split, note = generated, "validation", "on held-out generated examples"
        ctx.run.report.estimate_notes.append(GENERATED_ONLY_NOTE)
    else:
        raise Skip("no held-out data to score on")
    ctx.run.report.metrics_source = note.removeprefix("on ")
    request = evaluator_pb2.EvaluateRequest(
        model=ctx.run.report.model,
        dataset=dataset,
        split=split,
        task=ctx.run.task,
        options=ctx.run.options.evaluate,
        run_id=ctx.run.run_id,
    )
    student = await _evaluate(ctx, request)
    ctx.run.report.student_metrics.CopyFrom(student.metrics)
    ctx.run.report.student_latency.CopyFrom(student.latency)
    ctx.run.report.student_size_bytes = student.model_size_bytes
    figures = {f"student_{k}": v for k, v in student.metrics.values.items()}
    figures.update(await _score_on_demonstrations(ctx, request))
    usage = common_pb2.LLMUsage()
    if not ctx.run.options.skip_teacher_evaluation:
        request.ClearField("model")
        request.teacher.CopyFrom(evaluator_pb2.TeacherModel(max_requests=ctx.remaining_requests()))
        try:
            teacher = await _evaluate(ctx, request)
        except P2MError as error:
            ctx.warn(f"the teacher could not be scored: {error}")
        else:
            ctx.run.report.teacher_metrics.CopyFrom(teacher.metrics)
            figures.update({f"teacher_{k}": v for k, v in teacher.metrics.values.items()})
            usage = teacher.llm_usage
    return StageOutcome(cached=student.cached, figures=figures, note=f"scored {note}", usage=usage)


async def _score_on_demonstrations(
    ctx: StageContext, request: evaluator_pb2.EvaluateRequest
) -> dict[str, float]:
    """The student on the person's own demonstrations (never trained on); figures by metric.

    Those its prompts show (``prompt_demonstrations``) are left out: each holds its own answer.
    """
    demonstrations, note = demonstrations_to_score(
        ctx.run.task.demonstrations, ctx.run.report.training.prompt_demonstrations
    )
    if note:
        ctx.run.report.estimate_notes.append(note)
    if not demonstrations:
        return {}
    on_demos = evaluator_pb2.EvaluateRequest()
    on_demos.CopyFrom(request)
    on_demos.ClearField("dataset")
    on_demos.examples.extend(demonstrations)
    result = await _evaluate(ctx, on_demos)
    ctx.run.report.student_demonstration_metrics.CopyFrom(result.metrics)
    if ctx.run.report.training.validation_demonstrations:
        ctx.run.report.estimate_notes.append(DEMONSTRATIONS_VALIDATED_NOTE)
    return {f"student_demonstrations_{k}": v for k, v in result.metrics.values.items()}


def demonstrations_to_score(
    demonstrations: Sequence[common_pb2.Example], shown: int
) -> tuple[list[common_pb2.Example], str]:
    """The demonstrations a student whose prompts show the first ``shown`` is scored on.

    With the note that says which are left out, or why none is scored (empty: nothing to say).
    """
    left = list(demonstrations[shown:])
    if not left:
        return [], ALL_SHOWN_NOTE if shown else NO_DEMONSTRATIONS_NOTE
    return left, SHOWN_DEMONSTRATIONS_NOTE.format(shown=shown) if shown else ""


async def _evaluate(
    ctx: StageContext, request: evaluator_pb2.EvaluateRequest
) -> evaluator_pb2.EvaluateResponse:
    last = await ctx.clients.stream(
        "evaluator", lambda stub: stub.EvaluateStream(request), lambda m: ctx.progress(m.progress)
    )
    return last.result


async def deploy(ctx: StageContext) -> StageOutcome:
    """Serve the student (and its demo)."""
    _skip_if_asked(ctx, S.STAGE_DEPLOY)
    model = ctx.run.report.model
    name = ctx.run.options.deployment_name or f"student-{model.sha256[:12]}"
    request = deployer_pb2.DeployRequest(
        model=model,
        name=name,
        task=ctx.run.task,
        metrics=ctx.run.report.student_metrics,
        options=ctx.run.options.deploy,
        run_id=ctx.run.run_id,
    )
    response = await ctx.clients.unary("deployer", lambda stub: stub.Deploy(request, timeout=900))
    endpoint = response.endpoint
    ctx.run.report.endpoint.CopyFrom(endpoint)
    ctx.run.report.demo_url = endpoint.demo_url
    if not endpoint.ready:
        raise FailedPrecondition(f"the endpoint did not become ready: {endpoint.message}")
    return StageOutcome(note=f"serving at {endpoint.base_url}", figures={"ready": 1.0})


StageFunction = Callable[[StageContext], Awaitable[StageOutcome]]
PIPELINE: tuple[tuple[common_pb2.Stage, StageFunction], ...] = (
    (S.STAGE_PARSE, parse),
    (S.STAGE_RETRIEVE_DATASETS, retrieve_datasets),
    (S.STAGE_PREPARE_DATASET, prepare_dataset),
    (S.STAGE_GENERATE, generate),
    (S.STAGE_RETRIEVE_MODEL, retrieve_model),
    (S.STAGE_TRAIN, train),
    (S.STAGE_EVALUATE, evaluate),
    (S.STAGE_DEPLOY, deploy),
)


def _skip_if_asked(ctx: StageContext, stage: common_pb2.Stage) -> None:
    if stage in ctx.run.options.skip_stages:
        raise Skip("skipped on request")


def _tightest(own: int, remaining: int) -> int:
    """The smaller of two limits where 0 means none."""
    limits = [v for v in (own, remaining) if v > 0]
    return min(limits) if limits else 0


def add_usage(total: common_pb2.LLMUsage, part: common_pb2.LLMUsage) -> None:
    """Add ``part``'s requests, tokens and answer counts to ``total``."""
    for counter in common_pb2.LLMUsage.DESCRIPTOR.fields:
        setattr(total, counter.name, getattr(total, counter.name) + getattr(part, counter.name))
