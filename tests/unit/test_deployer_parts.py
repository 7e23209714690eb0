"""The deployer's pieces without processes: the micro-batcher, payload parsing, option checks."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from unittest import mock

import pytest
from google.protobuf import duration_pb2

from p2m.common.errors import InvalidInput
from p2m.common.names import check_deployment_name
from p2m.deployer.core import DeployOptions
from p2m.deployer.local import first_error_line
from p2m.deployer.service import options_from_pb
from prompt2model.v1 import deployer_pb2

with mock.patch.object(sys, "argv", sys.argv[:1]):  # kserve parses the flags when imported
    from kserve.errors import InvalidInput as KServeInvalidInput
    from kserve.protocol.infer_type import InferInput, InferRequest

    from p2m.deployer.model import Batching, MicroBatcher, v1_inputs, v2_inputs, v2_response


class FakeModel:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()

    def predict(self, inputs: list[str]) -> list[str]:
        self.calls.append(list(inputs))
        self.threads.add(threading.current_thread().name)
        return [text.upper() for text in inputs]


async def test_concurrent_requests_share_a_batch_and_get_their_own_answers():
    model = FakeModel()
    seen: list[tuple[int, int]] = []
    batcher = MicroBatcher(model.predict, Batching(4, 0.2), lambda r, i: seen.append((r, i)))
    requests = [["a"], ["b", "c"], ["d"], ["e"], ["f"]]
    answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
    assert answers == [["A"], ["B", "C"], ["D"], ["E"], ["F"]]
    assert model.calls == [["a", "b", "c", "d", "e"], ["f"]]  # at most 4 requests per batch
    assert seen == [(4, 5), (1, 1)]
    assert (batcher.stats.batches, batcher.stats.requests, batcher.stats.inputs) == (2, 5, 6)
    assert threading.main_thread().name not in model.threads  # the event loop stays free
    await batcher.close()


async def test_without_batching_every_request_is_its_own_batch():
    model = FakeModel()
    batcher = MicroBatcher(model.predict, Batching(1, 5.0))
    answers = await asyncio.gather(*(batcher.submit([t]) for t in "xyz"))
    assert answers == [["X"], ["Y"], ["Z"]] and len(model.calls) == 3
    assert await batcher.submit([]) == []
    await batcher.close()


async def test_batches_run_side_by_side_up_to_in_flight():
    running, most = 0, 0
    lock = threading.Lock()

    def slow(inputs: list[str]) -> list[str]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        return [text.upper() for text in inputs]

    batcher = MicroBatcher(slow, Batching(0, 0.0), in_flight=3)
    answers = await asyncio.gather(*(batcher.submit([t]) for t in "abcdef"))
    assert answers == [[t.upper()] for t in "abcdef"]  # each request its own answer
    assert most == 3 and batcher.stats.batches == 6
    await batcher.close()


async def test_a_failing_batch_fails_every_request_in_it():
    def broken(inputs: list[str]) -> list[str]:
        raise RuntimeError("out of memory")

    batcher = MicroBatcher(broken, Batching(8, 0.05))
    results = await asyncio.gather(
        batcher.submit(["a"]), batcher.submit(["b"]), return_exceptions=True
    )
    assert [str(r) for r in results] == ["out of memory"] * 2
    await batcher.close()


def test_v1_inputs_take_strings_and_input_objects():
    assert v1_inputs({"instances": ["a", {"input": "b"}]}) == ["a", "b"]
    assert v1_inputs(b'{"instances": ["raw"]}') == ["raw"]
    assert v1_inputs({"instances": []}) == []
    for bad, needle in [
        ([], "JSON object"),
        ({"inputs": []}, "instances"),
        ({"instances": "a"}, "list"),
        ({"instances": [1]}, "instances[0]"),
        ({"instances": ["ok", {"text": "x"}]}, "instances[1]"),
        (b"not json", "JSON object"),
        ({"instances": ["x"] * 1025}, "at most 1024"),
    ]:
        with pytest.raises(KServeInvalidInput, match=None) as info:
            v1_inputs(bad)
        assert needle in str(info.value), (bad, str(info.value))


def _request(name: str, datatype: str, shape: list[int], data: list) -> InferRequest:
    return InferRequest("m", [InferInput(name, shape, datatype, data)], request_id="r1")


def test_v2_inputs_and_response():
    request = _request("text", "BYTES", [2], ["a", b"b"])
    assert v2_inputs(request) == ["a", "b"]
    response = v2_response(request, "m", ["A", "B"])
    body, _ = response.to_rest()
    assert body["id"] == "r1"
    assert body["outputs"] == [
        {"name": "output", "shape": [2], "datatype": "BYTES", "data": ["A", "B"]}
    ]
    grpc_reply = v2_response(request, "m", ["A", "B"]).to_grpc()
    assert list(grpc_reply.outputs[0].contents.bytes_contents) == [b"A", b"B"]
    for bad, needle in [
        (_request("x", "BYTES", [1], ["a"]), '"input" or "text"'),
        (_request("input", "INT32", [1], [1]), "BYTES"),
        (_request("input", "BYTES", [1, 1], ["a"]), "shape"),
        (_request("input", "BYTES", [3], ["a"]), "shape"),
        (_request("input", "BYTES", [1], [b"\xff"]), "UTF-8"),
    ]:
        with pytest.raises(KServeInvalidInput) as info:
            v2_inputs(bad)
        assert needle in str(info.value), str(info.value)


def test_options_defaults_and_ranges():
    options = options_from_pb(deployer_pb2.DeployOptions())
    assert options == DeployOptions()
    assert (options.min_replicas, options.max_replicas, options.batching) == (1, 1, False)
    assert options.max_latency_ms == 20.0 and options.ready_timeout_s == 120.0
    scaled = options_from_pb(deployer_pb2.DeployOptions(min_replicas=3))
    assert (scaled.min_replicas, scaled.max_replicas) == (3, 3)
    to_zero = options_from_pb(deployer_pb2.DeployOptions(min_replicas=0, max_replicas=4))
    assert (to_zero.min_replicas, to_zero.max_replicas) == (0, 4)
    batching = deployer_pb2.BatchingOptions(
        max_batch_size=16, max_latency=duration_pb2.Duration(nanos=5_000_000)
    )
    batched = options_from_pb(deployer_pb2.DeployOptions(batching=batching))
    assert batched.batching and batched.max_batch_size == 16 and batched.max_latency_ms == 5.0
    with pytest.raises(InvalidInput) as info:
        options_from_pb(
            deployer_pb2.DeployOptions(
                batching=deployer_pb2.BatchingOptions(
                    max_latency=duration_pb2.Duration(seconds=1, nanos=-5)
                )
            )
        )
    assert info.value.field == "options.batching.max_latency"


@pytest.mark.parametrize("name", ["", "A", "1abc", "abc-", "a_b", "a.b", "a" * 46, "ünï"])
def test_bad_names(name: str):
    with pytest.raises(InvalidInput) as info:
        check_deployment_name(name)
    assert info.value.field == "name"


@pytest.mark.parametrize("name", ["a", "tiny", "my-model-2", "a" * 45])
def test_good_names(name: str):
    assert check_deployment_name(name) == name


def test_a_dead_servers_first_error_line_is_found_before_its_fallout(tmp_path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "INFO kserve: starting\n"
        "Traceback (most recent call last):\n"
        '  File "modelserver.py", line 64, in start\n'
        "RuntimeError: cannot listen on 127.0.0.1:41234\n"
        "RuntimeError: Event loop is closed\n"
        "sys:1: RuntimeWarning: coroutine 'AioServer.shutdown' was never awaited\n"
    )
    assert first_error_line(log) == "RuntimeError: cannot listen on 127.0.0.1:41234"
    log.write_text("INFO kserve: starting\nINFO model loaded\n")
    assert first_error_line(log) == ""
    assert first_error_line(tmp_path / "missing.log") == ""
