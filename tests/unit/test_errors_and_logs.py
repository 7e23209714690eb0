from __future__ import annotations

import json
import logging

import grpc
import pytest

from p2m.common import errors
from p2m.common.grpc_errors import status_for
from p2m.common.log import JsonFormatter, run_id_var


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
