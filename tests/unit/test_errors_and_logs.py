from __future__ import annotations

import asyncio
import json
import logging

import grpc
import pytest

from p2m.common import errors
from p2m.common.grpc_errors import status_for
from p2m.common.log import JsonFormatter, run_id_var
from p2m.common.server import GrpcServer


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidInput("prompt", "is empty"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("run x"), grpc.StatusCode.NOT_FOUND),
        (errors.LLMError("down", attempts=3), grpc.StatusCode.UNAVAILABLE),
        (errors.BudgetExhausted("tokens"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.FailedPrecondition("not built"), grpc.StatusCode.FAILED_PRECONDITION),
        (ValueError("secret detail"), grpc.StatusCode.INTERNAL),
    ],
)
def test_errors_map_to_status_codes(exc: Exception, code: grpc.StatusCode):
    got, message = status_for(exc)
    assert got == code
    if code == grpc.StatusCode.INTERNAL:
        assert "secret detail" not in message


def test_invalid_input_message_names_the_field():
    _, message = status_for(errors.InvalidInput("prompt_bytes", "is not UTF-8 text"))
    assert message == "prompt_bytes: is not UTF-8 text"


def test_json_log_lines_carry_run_id_and_extras():
    record = logging.LogRecord("p2m.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.stage = "parse"
    token = run_id_var.set("run-42")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        run_id_var.reset(token)
    assert line["msg"] == "hello you"
    assert line["level"] == "INFO"
    assert line["logger"] == "p2m.x"
    assert line["run_id"] == "run-42"
    assert line["stage"] == "parse"
    assert line["ts"].endswith("+00:00")


async def test_a_port_another_server_listens_on_is_refused_not_shared():
    """gRPC's SO_REUSEPORT would let a second server listen beside the first, unnoticed."""
    first = GrpcServer([], "127.0.0.1", 0)
    port = await first.start()
    second = GrpcServer([], "127.0.0.1", port)
    try:
        with pytest.raises(errors.Unavailable, match=f"cannot listen on 127.0.0.1:{port}"):
            await second.start()
    finally:
        await asyncio.wait_for(second.stop(0), 5)  # a no-op where it never started
        await first.stop(0)
