"""gRPC servicer of the evaluator: checks and converts messages, runs Evaluator, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from grpc import aio

from p2m.common.artifacts import ArtifactStore
from p2m.common.convert import artifact_ref_from_pb, progress_pb, task_spec_from_pb, usage_to_pb
from p2m.common.errors import InvalidInput
from p2m.common.log import run_id_var
from p2m.common.names import check_run_id
from p2m.common.server import ServiceBinding
from p2m.common.settings import Settings
from p2m.common.streaming import Finished, progress_stream
from p2m.common.types import Example, TaskSpec
from p2m.evaluator.engine import (
    DEFAULT_NUM_WORST,
    DEFAULT_SPLIT,
    EvalData,
    EvaluateOptions,
    EvaluationProgress,
    EvaluationResult,
    Evaluator,
    StudentSubject,
    Subject,
    TeacherSubject,
    inline_data,
    read_split,
)
from p2m.evaluator.metrics import check_metrics
from p2m.local_llm.provider import LLMProvider
from prompt2model.v1 import common_pb2, evaluator_pb2, evaluator_pb2_grpc

MAX_INLINE_EXAMPLES = 10_000


def options_from_pb(message: evaluator_pb2.EvaluateOptions) -> EvaluateOptions:
    """Proto options -> dataclass (zero or unset fields: the documented defaults), checked.

    Raises:
        InvalidInput: A field out of its range, or an unknown or repeated metric (named).
    """
    decoding = message.decoding
    options = EvaluateOptions(
        metrics=check_metrics(list(message.metrics)),
        max_examples=message.max_examples,
        max_new_tokens=decoding.max_new_tokens,
        num_beams=decoding.num_beams or 1,
        batch_size=decoding.batch_size,
        num_worst_examples=message.num_worst_examples or DEFAULT_NUM_WORST,
        runtime=message.runtime or EvaluateOptions.runtime,
        precision=message.precision or EvaluateOptions.precision,
    )
    options.validate()
    return options


def result_to_pb(result: EvaluationResult) -> evaluator_pb2.EvaluateResponse:
    """Engine result -> proto."""
    latency = result.latency
    return evaluator_pb2.EvaluateResponse(
        metrics=common_pb2.Metrics(
            values=result.metrics,
            num_examples=result.num_examples,
            worst_examples=[
                common_pb2.ScoredExample(
                    example=common_pb2.Example(input=e.input, output=e.reference),
                    prediction=e.prediction,
                    scores=e.scores,
                )
                for e in result.worst_examples
            ],
            notes=result.notes,
        ),
        latency=evaluator_pb2.Latency(
            mean_ms=latency.mean_ms,
            p50_ms=latency.p50_ms,
            p95_ms=latency.p95_ms,
            total_seconds=latency.total_seconds,
        ),
        model_size_bytes=result.model_size_bytes,
        num_parameters=result.num_parameters,
        llm_usage=usage_to_pb(result.usage),
        cached=result.cached,
    )


def progress_to_pb(progress: EvaluationProgress) -> common_pb2.Progress:
    """Engine progress -> the common Progress message."""
    return progress_pb(
        common_pb2.STAGE_EVALUATE,
        f"predicted {progress.done}/{progress.total} examples",
        progress.done,
        progress.total,
    )


@dataclass(frozen=True)
class _Job:
    """A checked request, ready for the engine."""

    subject: Subject
    data: EvalData
    options: EvaluateOptions
    task: TaskSpec


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Serves ``prompt2model.v1.Evaluator``."""

    def __init__(self, evaluator: Evaluator, store: ArtifactStore) -> None:
        """Evaluate with ``evaluator``; read model and dataset artifacts from ``store``."""
        self._evaluator = evaluator
        self._store = store

    async def Evaluate(  # noqa: N802 (gRPC method name)
        self, request: evaluator_pb2.EvaluateRequest, context: aio.ServicerContext
    ) -> evaluator_pb2.EvaluateResponse:
        """Score the model or the teacher on one split."""
        job = self._job(request)
        result = await self._evaluator.evaluate(job.subject, job.data, job.options, job.task)
        return result_to_pb(result)

    async def EvaluateStream(  # noqa: N802 (gRPC method name)
        self, request: evaluator_pb2.EvaluateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[evaluator_pb2.EvaluateProgress]:
        """Score as Evaluate does, streaming progress; the last message carries the result."""
        job = self._job(request)
        last = EvaluationProgress(0, 0)
        stream: AsyncIterator[EvaluationProgress | Finished[EvaluationResult]] = progress_stream(
            lambda report: self._evaluator.evaluate(
                job.subject, job.data, job.options, job.task, report
            )
        )
        async for update in stream:
            if isinstance(update, Finished):
                result = update.value
            else:
                last = update
                yield evaluator_pb2.EvaluateProgress(progress=progress_to_pb(last))
        final = EvaluationProgress(result.num_examples, max(last.total, result.num_examples))
        yield evaluator_pb2.EvaluateProgress(
            progress=progress_to_pb(final), result=result_to_pb(result)
        )

    def _job(self, request: evaluator_pb2.EvaluateRequest) -> _Job:
        """Check every field of the request (naming the bad one) and read the examples.

        Raises:
            InvalidInput: A malformed field.
            NotFound: The model or dataset artifact, or the split, does not exist.
        """
        check_run_id(request.run_id)
        run_id_var.set(request.run_id)
        options = options_from_pb(request.options)
        task = task_spec_from_pb(request.task)
        which = request.WhichOneof("subject")
        subject: Subject
        if which == "model":
            artifact_ref_from_pb(request.model, "model")
            subject = StudentSubject.from_store(self._store, request.model.uri)
        elif which == "teacher":
            if not task.instruction.strip():
                raise InvalidInput("task.instruction", "is empty; the teacher's prompt needs it")
            subject = TeacherSubject(request.teacher.model, request.teacher.max_requests)
        else:
            raise InvalidInput("subject", "set exactly one of model or teacher")
        return _Job(subject, self._data(request), options, task)

    def _data(self, request: evaluator_pb2.EvaluateRequest) -> EvalData:
        """The examples: a dataset artifact's split, or the request's own examples."""
        if not request.examples:
            artifact_ref_from_pb(request.dataset, "dataset")
            return read_split(self._store, request.dataset.uri, request.split or DEFAULT_SPLIT)
        if request.dataset.uri:
            raise InvalidInput("examples", "give a dataset or examples, not both")
        if len(request.examples) > MAX_INLINE_EXAMPLES:
            raise InvalidInput("examples", f"at most {MAX_INLINE_EXAMPLES}")
        for index, example in enumerate(request.examples):
            if not example.input.strip() or not example.output.strip():
                raise InvalidInput(f"examples[{index}]", "needs a non-empty input and output")
        examples = [Example(e.input, e.output) for e in request.examples]
        return inline_data(examples, f"{len(examples)} examples given in the request")


def build(settings: Settings) -> ServiceBinding:
    """The evaluator's binding (BERTScore's encoder as ``Evaluator.from_settings`` chooses)."""
    provider = LLMProvider(settings)
    store = ArtifactStore(settings.artifacts_dir)
    evaluator = Evaluator.from_settings(settings, provider.client)
    servicer = EvaluatorServicer(evaluator, store)
    return ServiceBinding(
        full_name=evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name,
        register=lambda server: evaluator_pb2_grpc.add_EvaluatorServicer_to_server(
            servicer, server
        ),
        start=provider.probe,
        stop=provider.aclose,
    )
