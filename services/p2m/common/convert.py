"""Conversions between the shared dataclasses and their protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from google.protobuf import timestamp_pb2

from p2m.common.artifacts import ArtifactRef, parse_uri
from p2m.common.errors import InvalidInput
from p2m.common.types import Example, ParseMethod, TaskSpec
from prompt2model.v1 import common_pb2

_METHOD_TO_PB = {
    ParseMethod.DETERMINISTIC: common_pb2.PARSE_METHOD_DETERMINISTIC,
    ParseMethod.LLM: common_pb2.PARSE_METHOD_LLM,
}
_METHOD_FROM_PB = {v: k for k, v in _METHOD_TO_PB.items()}


def task_spec_to_pb(task: TaskSpec) -> common_pb2.TaskSpec:
    """TaskSpec -> protobuf."""
    return common_pb2.TaskSpec(
        instruction=task.instruction,
        demonstrations=[
            common_pb2.Example(input=d.input, output=d.output) for d in task.demonstrations
        ],
        language=task.language,
        original_instruction=task.original_instruction,
        parse_method=_METHOD_TO_PB[task.parse_method],
        warnings=list(task.warnings),
        prompt_sha256=task.prompt_sha256,
    )


def task_spec_from_pb(message: common_pb2.TaskSpec) -> TaskSpec:
    """Protobuf -> TaskSpec."""
    return TaskSpec(
        instruction=message.instruction,
        demonstrations=tuple(Example(d.input, d.output) for d in message.demonstrations),
        language=message.language,
        original_instruction=message.original_instruction,
        parse_method=_METHOD_FROM_PB.get(message.parse_method, ParseMethod.DETERMINISTIC),
        warnings=tuple(message.warnings),
        prompt_sha256=message.prompt_sha256,
    )


def artifact_ref_to_pb(ref: ArtifactRef) -> common_pb2.ArtifactRef:
    """ArtifactRef -> protobuf."""
    return common_pb2.ArtifactRef(
        uri=ref.uri, sha256=ref.sha256, size_bytes=ref.size_bytes, kind=ref.kind
    )


class _Usage(Protocol):
    @property
    def requests(self) -> int: ...
    @property
    def failed_requests(self) -> int: ...
    @property
    def retries(self) -> int: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def capped_answers(self) -> int: ...
    @property
    def stopped_answers(self) -> int: ...


def usage_to_pb(usage: _Usage) -> common_pb2.LLMUsage:
    """Any usage record (client snapshot, job counters) -> protobuf."""
    return common_pb2.LLMUsage(
        requests=usage.requests,
        failed_requests=usage.failed_requests,
        retries=usage.retries,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        capped_answers=usage.capped_answers,
        stopped_answers=usage.stopped_answers,
    )


def progress_pb(
    stage: common_pb2.Stage,
    message: str,
    done: int,
    total: int,
    figures: Mapping[str, float] | None = None,
) -> common_pb2.Progress:
    """A Progress message stamped with the current time."""
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return common_pb2.Progress(
        stage=stage, message=message, done=done, total=total, figures=figures or {}, time=stamp
    )


def artifact_ref_from_pb(ref: common_pb2.ArtifactRef, field: str) -> ArtifactRef:
    """A non-empty artifact URI whose sha256, when also given, agrees with it.

    Raises:
        InvalidInput: ``<field>.uri`` empty or not an artifact URI, or ``<field>.sha256`` differs.
    """
    if not ref.uri:
        raise InvalidInput(f"{field}.uri", "is empty")
    try:
        sha = parse_uri(ref.uri)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}.uri", exc.problem) from exc
    if ref.sha256 and ref.sha256 != sha:
        raise InvalidInput(f"{field}.sha256", "does not match the sha256 in the uri")
    return ArtifactRef(ref.uri, sha, ref.size_bytes, ref.kind)
