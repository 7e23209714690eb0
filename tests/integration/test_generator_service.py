"""The real generator service on loopback, generating with the real SmolLM2 endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from prompt2model.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from tests.support import ServiceProcess

# SmolLM2 (135M) rarely writes a Temporal input that keeps the demonstrations' invariants (it
# writes "Tale of the World" without the "[Posted: ...]" date) and answers "N/A" to most inputs
# (measured: 21 of 30 uncapped; capped, 4x the requests): this test is about the service, so
# the invariants and the cap on repeated outputs are off here; both are tested on a scripted
# teacher (test_generator_faults).
WANTED = 16
OPTIONS = generator_pb2.GenerateOptions(
    disable_invariants=True,
    max_output_share=1.0,
    num_examples=WANTED,
    batch_size=16,
    self_consistency_samples=2,
    answer_temperature=0.8,
    few_shot_demonstrations=4,
    few_shot_generated=2,
    temperature_start=0.8,
    temperature_end=1.4,
    seed=3,
)


@pytest.fixture(scope="module")
def generator(
    local_llm: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, Path]]:
    data_dir = tmp_path_factory.mktemp("generator")
    service = ServiceProcess(
        "generator", data_dir, "--llm-base-url", local_llm.base_url, "--llm-model", "smollm2"
    )
    with service:
        yield service, data_dir


@pytest.fixture(scope="module")
def temporal_task(paper_prompts: dict[str, Any]) -> common_pb2.TaskSpec:
    spec = paper_prompts["temporal"]
    return common_pb2.TaskSpec(
        instruction=spec["instruction"],
        demonstrations=[common_pb2.Example(**e) for e in spec["examples"]],
        language="en",
    )


def _generate(address: str, request: generator_pb2.GenerateRequest):
    with grpc.insecure_channel(address) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)
        return list(stub.Generate(request, timeout=900))


def test_sixteen_temporal_examples_with_filter_counts(generator, temporal_task):
    service, data_dir = generator
    messages = _generate(
        service.address, generator_pb2.GenerateRequest(task=temporal_task, options=OPTIONS)
    )
    result = messages[-1].result
    report = result.report
    assert report.accepted == WANTED
    assert report.stop_reason == generator_pb2.GENERATION_STOP_REASON_TARGET_REACHED
    assert result.rows.train + result.rows.validation == WANTED
    assert result.rows.validation >= 1
    # Progress came as a stream, accepted counts never going down.
    done = [m.progress.done for m in messages]
    assert len(messages) >= 2 and done == sorted(done) and done[-1] == WANTED
    assert "dropped_exact_duplicate" in messages[0].progress.figures
    # The report accounts for every generation request: accepted + dropped (+ surplus) ones.
    dropped = report.dropped
    counted = [
        dropped.exact_duplicate,
        dropped.near_duplicate,
        dropped.empty,
        dropped.too_long,
        dropped.copies_input,
        dropped.unparseable,
    ]
    assert all(c >= 0 for c in counted)
    assert report.llm_usage.requests >= WANTED + sum(counted)
    assert 0.0 < report.self_consistency_agreement <= 1.0
    # The artifact holds JSONL splits and a Hugging Face dataset, inputs all distinct.
    folder = data_dir / "artifacts" / "objects" / result.dataset.sha256[:2] / result.dataset.sha256
    rows = [
        json.loads(line)
        for name in ("train", "validation")
        for line in (folder / f"{name}.jsonl").read_text().splitlines()
    ]
    assert len(rows) == WANTED
    assert len({r["input"] for r in rows}) == WANTED
    assert all(r["input"].strip() and r["output"].strip() for r in rows)
    demo_inputs = {d.input for d in temporal_task.demonstrations}
    assert not demo_inputs & {r["input"] for r in rows}
    from datasets import load_from_disk

    assert load_from_disk(str(folder / "hf"))["train"].num_rows == result.rows.train

    # The same task, options and seed: answered from the artifact store.
    again = _generate(
        service.address, generator_pb2.GenerateRequest(task=temporal_task, options=OPTIONS)
    )[-1].result
    assert again.report.cached
    assert again.dataset.sha256 == result.dataset.sha256
    assert again.report.llm_usage.requests == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (generator_pb2.GenerateOptions(num_examples=-1), "options.num_examples"),
        (generator_pb2.GenerateOptions(temperature_start=3.0), "options.temperature_start"),
        (generator_pb2.GenerateOptions(validation_fraction=0.7), "options.validation_fraction"),
        (generator_pb2.GenerateOptions(stall_timeout_s=-5), "options.stall_timeout_s"),
        (generator_pb2.GenerateOptions(max_output_share=1.5), "options.max_output_share"),
    ],
)
def test_bad_options_are_invalid_argument(generator, temporal_task, options, field):
    service, _ = generator
    with pytest.raises(grpc.RpcError) as info:
        _generate(
            service.address, generator_pb2.GenerateRequest(task=temporal_task, options=options)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field)


def test_empty_instruction_is_invalid_argument(generator):
    service, _ = generator
    with pytest.raises(grpc.RpcError) as info:
        _generate(service.address, generator_pb2.GenerateRequest(task=common_pb2.TaskSpec()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task.instruction" in info.value.details()
