"""The real parser service on a loopback port, backed by the real local LLM endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from prompt2model.v1 import common_pb2, parser_pb2, parser_pb2_grpc
from tests.support import ServiceProcess, grpc_health_status

FREE_FORM = (
    "I need a model that turns a country into its capital city. "
    "For example France should give Paris, and Japan should give Tokyo."
)


@pytest.fixture(scope="module")
def stub(parser_service: ServiceProcess) -> Iterator[parser_pb2_grpc.ParserStub]:
    with grpc.insecure_channel(parser_service.address) as channel:
        yield parser_pb2_grpc.ParserStub(channel)


def _assert_read_deterministically(got: common_pb2.TaskSpec, spec: dict[str, Any]) -> None:
    assert got.parse_method == common_pb2.PARSE_METHOD_DETERMINISTIC
    assert [(d.input, d.output) for d in got.demonstrations] == [
        (e["input"], e["output"]) for e in spec["examples"]
    ]


@pytest.fixture(scope="module")
def default_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[parser_pb2_grpc.ParserStub]:
    """A parser with no endpoint configured: it starts the embedded default LLM itself."""
    data_dir = tmp_path_factory.mktemp("parser-default")
    with (
        ServiceProcess("parser", data_dir) as service,
        grpc.insecure_channel(service.address) as channel,
    ):
        yield parser_pb2_grpc.ParserStub(channel)


@pytest.mark.parametrize("task", ["squad", "temporal"])
def test_english_paper_prompts_parse_exactly_without_the_llm(
    stub, paper_prompts: dict[str, Any], task: str
):
    spec = paper_prompts[task]
    reply = stub.Parse(parser_pb2.ParseRequest(prompt=spec["full_prompt"]), timeout=300)
    got = reply.task
    _assert_read_deterministically(got, spec)
    assert got.language == "en"
    assert got.instruction == spec["instruction"]
    assert got.original_instruction == ""
    assert reply.llm_usage.requests == 0


def test_the_japanese_paper_prompt_is_translated_whole_by_the_default_llm(
    default_stub, paper_prompts: dict[str, Any]
):
    spec = paper_prompts["mconala_ja"]
    reply = default_stub.Parse(parser_pb2.ParseRequest(prompt=spec["full_prompt"]), timeout=600)
    got = reply.task
    _assert_read_deterministically(got, spec)
    assert got.language == "ja"
    assert got.original_instruction == spec["instruction"]
    assert not got.warnings
    # Both paragraphs, in English, with what they say: one line of Python, no imports.
    paragraphs = got.instruction.split("\n\n")
    assert len(paragraphs) == len(spec["instruction"].split("\n\n")) == 2
    assert all(ord(ch) < 0x3000 for ch in got.instruction)
    english = got.instruction.casefold()
    assert "python" in english and "import" in english
    assert "line" in english or "one-liner" in english
    assert reply.llm_usage.requests >= 2  # a request per paragraph


def test_free_form_prompt_goes_through_the_llm(stub):
    reply = stub.Parse(parser_pb2.ParseRequest(prompt=FREE_FORM), timeout=300)
    assert reply.task.parse_method == common_pb2.PARSE_METHOD_LLM
    assert reply.task.instruction.strip()
    assert reply.llm_usage.requests >= 1
    assert reply.llm_usage.completion_tokens > 0
    for demo in reply.task.demonstrations:
        assert demo.input in FREE_FORM and demo.output in FREE_FORM


def test_skip_translation_keeps_the_original(stub):
    prompt = '英語に翻訳してください。\ninput="猫"\noutput="cat"'
    reply = stub.Parse(parser_pb2.ParseRequest(prompt=prompt, skip_translation=True), timeout=60)
    assert reply.task.language == "ja"
    assert reply.task.instruction == "英語に翻訳してください。"
    assert reply.llm_usage.requests == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (parser_pb2.ParseRequest(), "prompt"),
        (parser_pb2.ParseRequest(prompt="   "), "prompt"),
        (parser_pb2.ParseRequest(prompt="x" * (64 * 1024 + 1)), "prompt"),
        (parser_pb2.ParseRequest(prompt_bytes=b"\xff\xfe\xfa not utf-8"), "prompt_bytes"),
        (parser_pb2.ParseRequest(prompt_bytes=b"\x00\x01\x02\x03" * 10), "prompt_bytes"),
    ],
)
def test_bad_prompts_are_invalid_argument_naming_the_field(stub, request_, field: str):
    with pytest.raises(grpc.RpcError) as info:
        stub.Parse(request_, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field + ":")


def test_health_and_reflection(parser_service: ServiceProcess):
    assert grpc_health_status(parser_service.address, "prompt2model.v1.Parser") == 1  # SERVING
    with grpc.insecure_channel(parser_service.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
        names = {s.name for s in reply.list_services_response.service}
    assert {"prompt2model.v1.Parser", "grpc.health.v1.Health"} <= names


def test_sigterm_stops_gracefully(local_llm: ServiceProcess, tmp_path: Path):
    service = ServiceProcess("parser", tmp_path, "--llm-base-url", local_llm.base_url).start()
    assert service.stop() == 0
    assert '"msg": "stopped"' in service.log()
