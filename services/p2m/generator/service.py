"""gRPC servicer of the generator: converts messages, runs DatasetGenerator, streams progress."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import fields
from typing import Any

from google.protobuf import duration_pb2
from grpc import aio

from p2m.common.convert import artifact_ref_to_pb, progress_pb, task_spec_from_pb, usage_to_pb
from p2m.common.encoder import shipped_encoder
from p2m.common.errors import InvalidInput
from p2m.common.server import ServiceBinding
from p2m.common.settings import Settings
from p2m.common.streaming import Finished, progress_stream
from p2m.generator.engine import (
    DatasetGenerator,
    GenerationProgress,
    GenerationReport,
    GenerationResult,
)
from p2m.generator.invariants import Invariants
from p2m.generator.options import GenerateOptions
from p2m.local_llm.provider import LLMProvider
from prompt2model.v1 import common_pb2, generator_pb2, generator_pb2_grpc

_STOP_REASONS = {
    "target_reached": generator_pb2.GENERATION_STOP_REASON_TARGET_REACHED,
    "budget_exhausted": generator_pb2.GENERATION_STOP_REASON_BUDGET_EXHAUSTED,
    "no_progress": generator_pb2.GENERATION_STOP_REASON_NO_PROGRESS,
    "stalled": generator_pb2.GENERATION_STOP_REASON_STALLED,
}


def options_from_pb(message: generator_pb2.GenerateOptions) -> GenerateOptions:
    """Proto options -> dataclass; zero or unset fields take the dataclass defaults."""
    defaults = GenerateOptions()
    values: dict[str, object] = {}
    for name in (
        "num_examples",
        "batch_size",
        "max_concurrency",
        "self_consistency_samples",
        "max_requests",
        "max_tokens",
        "max_field_chars",
    ):
        if getattr(message, name):
            values[name] = getattr(message, name)
    for name in (
        "temperature_start",
        "temperature_end",
        "few_shot_demonstrations",
        "input_demonstrations",
        "input_frequency_penalty",
        "few_shot_generated",
        "answer_generated_examples",
        "answer_temperature",
        "seed",
        "dedup_similarity_threshold",
        "validation_fraction",
        "meaning_dedup_threshold",
        "judge_threshold",
        "max_output_share",
        "dedup_word_similarity_threshold",
        "stall_timeout_s",
    ):
        if message.HasField(name):
            values[name] = getattr(message, name)
    if message.HasField("temperature_start") and not message.HasField("temperature_end"):
        values["temperature_end"] = max(defaults.temperature_end, message.temperature_start)
    values["diverse_prompts"] = not message.disable_diverse_prompts
    values["annealing"] = not message.disable_annealing
    values["self_consistency"] = not message.disable_self_consistency
    values["dedup"] = not message.disable_dedup
    values["check_invariants"] = not message.disable_invariants
    values["judge"] = message.judge
    values["span_first"] = message.span_first
    values["passage_first"] = message.passage_first
    values["key_kinds"] = message.key_kinds
    if message.HasField("invariants"):
        values["invariants"] = invariants_from_pb(message.invariants)
    options = GenerateOptions(**values)  # type: ignore[arg-type]
    options.validate()
    return options


def invariants_from_pb(message: generator_pb2.Invariants) -> Invariants:
    """Proto rules -> dataclass (validated by the options): every rule by its own name."""
    values: dict[str, Any] = {}
    for rule in fields(Invariants):
        value = getattr(message, rule.name)
        values[rule.name] = value if isinstance(value, str | bool | float) else tuple(value)
    return Invariants(**values)


def invariants_to_pb(invariants: Invariants) -> generator_pb2.Invariants:
    """Dataclass rules -> proto."""
    return generator_pb2.Invariants(**invariants.to_json())


def progress_to_pb(progress: GenerationProgress) -> common_pb2.Progress:
    """Engine progress -> the common Progress message."""
    return progress_pb(
        common_pb2.STAGE_GENERATE,
        f"accepted {progress.accepted}/{progress.requested} examples",
        progress.accepted,
        progress.requested,
        {
            "accepted": progress.accepted,
            "dropped": sum(progress.dropped.values()),
            "temperature": progress.temperature,
            "requests": progress.requests,
            "tokens": progress.tokens,
            **{f"dropped_{k}": v for k, v in progress.dropped.items()},
        },
    )


def report_to_pb(report: GenerationReport) -> generator_pb2.GenerationReport:
    """Engine report -> proto."""
    return generator_pb2.GenerationReport(
        requested=report.requested,
        accepted=report.accepted,
        dropped=generator_pb2.DropCounts(**report.dropped),
        self_consistency_agreement=report.self_consistency_agreement,
        llm_usage=usage_to_pb(report.usage),
        resumed_from=report.resumed_from,
        cached=report.cached,
        stop_reason=_STOP_REASONS[report.stop_reason],
        rounds=report.rounds,
        elapsed=duration_pb2.Duration(seconds=int(report.elapsed_s)),
        invariants=invariants_to_pb(report.invariants),
        invariant_drops=report.invariant_drops,
        label_counts=report.label_counts,
        duplicate_share=report.duplicate_share,
        near_duplicate_share=report.near_duplicate_share,
        judge_mean_score=report.judge_mean_score,
        commonest_output_share=report.commonest_output_share,
    )


def result_to_pb(result: GenerationResult) -> generator_pb2.GenerateResult:
    """Engine result -> proto."""
    return generator_pb2.GenerateResult(
        dataset=artifact_ref_to_pb(result.dataset),
        rows=common_pb2.SplitCounts(
            train=result.rows.get("train", 0), validation=result.rows.get("validation", 0)
        ),
        report=report_to_pb(result.report),
    )


class GeneratorServicer(generator_pb2_grpc.GeneratorServicer):
    """Serves ``prompt2model.v1.Generator``."""

    def __init__(self, provider: LLMProvider, settings: Settings) -> None:
        """Generate with the provider's LLM, as ``settings`` say."""
        self._provider = provider
        self._settings = settings
        self._encoder = shipped_encoder()

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: generator_pb2.GenerateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[generator_pb2.GenerateProgress]:
        """Generate a dataset, streaming progress; the last message carries the result."""
        task = task_spec_from_pb(request.task)
        if not task.instruction.strip():
            raise InvalidInput("task.instruction", "is empty")
        options = options_from_pb(request.options)
        generator = DatasetGenerator.from_settings(
            self._settings, await self._provider.client(), self._encoder
        )
        stream: AsyncIterator[GenerationProgress | Finished[GenerationResult]] = progress_stream(
            lambda report: generator.generate(task, options, report)
        )
        async for update in stream:
            if isinstance(update, Finished):
                result = update.value
            else:
                yield generator_pb2.GenerateProgress(progress=progress_to_pb(update))
        final = GenerationProgress(
            accepted=result.report.accepted,
            requested=result.report.requested,
            dropped=result.report.dropped,
            requests=result.report.usage.requests,
            tokens=result.report.usage.prompt_tokens + result.report.usage.completion_tokens,
            temperature=options.temperature_end,
            rounds=result.report.rounds,
        )
        yield generator_pb2.GenerateProgress(
            progress=progress_to_pb(final), result=result_to_pb(result)
        )


def build(settings: Settings) -> ServiceBinding:
    """The generator's binding."""
    provider = LLMProvider(settings)
    servicer = GeneratorServicer(provider, settings)
    return ServiceBinding(
        full_name=generator_pb2.DESCRIPTOR.services_by_name["Generator"].full_name,
        register=lambda server: generator_pb2_grpc.add_GeneratorServicer_to_server(
            servicer, server
        ),
        start=provider.probe,
        stop=provider.aclose,
    )
