"""gRPC servicer of the trainer: runs ModelTrainer in a thread and streams its progress."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import duration_pb2
from grpc import aio

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.convert import artifact_ref_to_pb, progress_pb, task_spec_from_pb
from p2m.common.errors import InvalidInput
from p2m.common.server import ServiceBinding
from p2m.common.settings import Settings
from p2m.common.streaming import Finished, thread_progress_stream
from p2m.trainer.engine import ModelTrainer, TrainEvent, TrainJob, TrainOutcome, TrainReport
from p2m.trainer.options import TrainOptions
from prompt2model.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)


def options_from_pb(message: trainer_pb2.TrainOptions) -> TrainOptions:
    """Proto options -> dataclass (zero or unset fields: the defaults), checked by it."""
    defaults = TrainOptions()
    values = {
        name: getattr(message, name) or getattr(defaults, name)
        for name in (
            "epochs",
            "learning_rate",
            "batch_size",
            "max_steps",
            "num_workers",
            "max_input_tokens",
            "max_output_tokens",
            "max_instruction_tokens",
        )
    }
    if message.lora.enabled and message.lora.full_only:
        raise InvalidInput("options.lora.full_only", "contradicts options.lora.enabled")
    options = TrainOptions(
        **values,
        use_gpu=message.use_gpu,
        seed=message.seed if message.HasField("seed") else defaults.seed,
        lora=message.lora.enabled,
        lora_auto=not message.lora.full_only,
        lora_r=message.lora.r or defaults.lora_r,
        lora_alpha=message.lora.alpha or defaults.lora_alpha,
        omit_instruction=message.omit_instruction,
        precision=message.precision or defaults.precision,
        **{
            name: getattr(message, name) if message.HasField(name) else getattr(defaults, name)
            for name in (
                "group_by_length",
                "warmup_ratio",
                "early_stopping_patience",
                "eval_metric_examples",
                "keep_best",
                "keep_best_tolerance",
                "min_steps",
                "search_min_learning_rate",
                "search_max_learning_rate",
                "constrain_outputs",
                "validate_on_demonstrations",
                "max_tokens_per_pass",
            )
        },
        eval_steps=message.eval_steps,
        search_trials=message.search_trials,
        prompt_demonstrations=message.prompt_demonstrations,
        keep_best_by=message.keep_best_by or defaults.keep_best_by,
    )
    options.validate()
    return options


def job_from_pb(request: trainer_pb2.TrainRequest) -> TrainJob:
    """The request as a TrainJob (datasets are resolved and checked by the engine)."""
    return TrainJob(
        datasets=tuple(
            ArtifactRef(d.uri, d.sha256, d.size_bytes, d.kind) for d in request.datasets
        ),
        base_model=request.base_model.name,
        task=task_spec_from_pb(request.task),
        options=options_from_pb(request.options),
        base_model_architecture=request.base_model.architecture,
        base_model_artifact=request.base_model.artifact.uri,
        run_id=request.run_id,
    )


def event_to_pb(event: TrainEvent) -> trainer_pb2.TrainProgress:
    """A training event -> one TrainProgress message."""
    figures = {
        "epoch": event.epoch,
        "learning_rate": event.learning_rate,
        "samples_per_s": event.samples_per_second,
    }
    if event.loss is not None:
        figures["loss"] = event.loss
    if event.eval_loss is not None:
        figures["eval_loss"] = event.eval_loss
    if event.eval_exact_match is not None:
        figures["eval_exact_match"] = event.eval_exact_match
    if event.eval_chrf is not None:
        figures["eval_chrf"] = event.eval_chrf
    text = event.message or f"step {event.step}/{event.total_steps}"
    if event.trial:
        text = f"trial {event.trial}/{event.trials}: {text}"
    message = trainer_pb2.TrainProgress(
        progress=progress_pb(
            common_pb2.STAGE_TRAIN,
            text,
            event.step,
            event.total_steps,
            figures,
        ),
        step=event.step,
        total_steps=event.total_steps,
        epoch=event.epoch,
        learning_rate=event.learning_rate,
        samples_per_second=event.samples_per_second,
        trial=event.trial,
        trials=event.trials,
    )
    if event.loss is not None:
        message.loss = event.loss
    if event.eval_loss is not None:
        message.eval_loss = event.eval_loss
    if event.eta_s is not None:
        message.eta.CopyFrom(duration_pb2.Duration(seconds=int(event.eta_s)))
    if event.checkpoint is not None:
        message.checkpoint.CopyFrom(artifact_ref_to_pb(event.checkpoint))
    return message


def report_to_pb(report: TrainReport) -> trainer_pb2.TrainReport:
    """Engine report -> proto."""
    message = trainer_pb2.TrainReport(
        steps=report.steps,
        epochs=report.epochs,
        final_loss=report.final_loss,
        train_seconds=report.train_seconds,
        samples_per_second=report.samples_per_second,
        resumed_from_checkpoint=report.resumed_from_checkpoint,
        resumed_from_step=report.resumed_from_step,
        backend=report.backend,
        train_examples=report.train_examples,
        validation_examples=report.validation_examples,
        num_workers=report.num_workers,
        device=report.device,
        ray_job_name=report.ray_job_name,
        cached=report.cached,
        precision=report.precision,
        memory_tight=report.memory_tight,
        lora_reason=report.lora_reason,
        best_step=report.best_step,
        stopped_early=report.stopped_early,
        evaluations=[_evaluation_pb(e) for e in report.evaluations],
        search_trials=[_search_trial_pb(t) for t in report.search_trials],
        planned_epochs=report.planned_epochs,
        validation_demonstrations=report.validation_demonstrations,
        prompt_demonstrations=report.prompt_demonstrations,
    )
    if report.final_eval_loss is not None:
        message.final_eval_loss = report.final_eval_loss
    if report.best_eval_loss is not None:
        message.best_eval_loss = report.best_eval_loss
    return message


def _evaluation_pb(evaluation: dict[str, Any]) -> trainer_pb2.TrainEvaluation:
    """One validation (as stored in the report) -> proto; None values stay unset."""
    return trainer_pb2.TrainEvaluation(
        **{k: v for k, v in evaluation.items() if v is not None and k in _EVALUATION_FIELDS}
    )


def _search_trial_pb(trial: dict[str, Any]) -> trainer_pb2.SearchTrial:
    """One trial of a search (as stored in the report) -> proto."""
    return trainer_pb2.SearchTrial(**{k: v for k, v in trial.items() if v is not None})


_EVALUATION_FIELDS = frozenset(trainer_pb2.TrainEvaluation.DESCRIPTOR.fields_by_name)


def outcome_to_pb(outcome: TrainOutcome) -> trainer_pb2.TrainProgress:
    """The last message of the stream: progress at the end, and the result."""
    report = outcome.report
    done = TrainEvent(
        step=report.steps,
        total_steps=report.steps,
        epoch=report.epochs,
        loss=report.final_loss,
        eval_loss=report.final_eval_loss,
        samples_per_second=report.samples_per_second,
        eta_s=0.0,
        message="cached" if report.cached else "done",
    )
    message = event_to_pb(done)
    message.result.CopyFrom(
        trainer_pb2.TrainResult(
            model=artifact_ref_to_pb(outcome.model), report=report_to_pb(report)
        )
    )
    return message


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    """Serves ``prompt2model.v1.Trainer``."""

    def __init__(self, trainer: ModelTrainer) -> None:
        """Train with ``trainer``."""
        self._trainer = trainer

    async def Train(  # noqa: N802 (gRPC method name)
        self, request: trainer_pb2.TrainRequest, context: aio.ServicerContext
    ) -> AsyncIterator[trainer_pb2.TrainProgress]:
        """Train, streaming progress; the last message carries the result."""
        job = job_from_pb(request)
        cancel = threading.Event()

        def abandon(work: asyncio.Future[TrainOutcome]) -> None:
            cancel.set()  # the caller went away: the workers stop at their next step
            work.add_done_callback(_log_end_of_cancelled)

        stream: AsyncIterator[TrainEvent | Finished[TrainOutcome]] = thread_progress_stream(
            lambda report: self._trainer.train(job, report, cancel), abandon
        )
        async for update in stream:
            if isinstance(update, Finished):
                yield outcome_to_pb(update.value)
            else:
                yield event_to_pb(update)


def _log_end_of_cancelled(work: asyncio.Future[TrainOutcome]) -> None:
    error = work.exception()
    log.info("cancelled training stopped", extra={"outcome": str(error) if error else "finished"})


def build(settings: Settings) -> ServiceBinding:
    """The trainer's binding: Ray Train in this process, or a KubeRay RayJob per training.

    Raises:
        InvalidInput: With ``trainer_backend="rayjob"``, the RayJob template is unusable.
        FailedPrecondition: With ``trainer_backend="rayjob"``, no Kubernetes configuration.
    """
    store = ArtifactStore(settings.artifacts_dir)
    runner = None
    if settings.trainer_backend == "rayjob":
        from p2m.trainer.rayjob import RayJobRunner

        runner = RayJobRunner.from_settings(settings, store)
    trainer = ModelTrainer.from_settings(
        settings, runner=runner, path_roots=settings.readable_roots()
    )
    servicer = TrainerServicer(trainer)

    async def start() -> None:
        from p2m.trainer.ray_runtime import ensure_ray

        await asyncio.to_thread(ensure_ray)

    async def stop() -> None:
        if runner is not None:
            runner.close()

    return ServiceBinding(
        full_name=trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name,
        register=lambda server: trainer_pb2_grpc.add_TrainerServicer_to_server(servicer, server),
        start=start if runner is None else None,
        stop=_stop_ray if runner is None else stop,
    )


async def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        await asyncio.to_thread(ray.shutdown)
