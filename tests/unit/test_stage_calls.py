"""The gateway tells a stage service that went away from one that refused the call."""

from __future__ import annotations

import grpc
from grpc import aio

from p2m.gateway.clients import service_went_away


def _error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=details)


def test_a_killed_service_is_called_again_and_a_refusal_is_not() -> None:
    assert service_went_away(_error(grpc.StatusCode.UNAVAILABLE, "failed to connect"))
    # A service SIGKILLed in the middle of a stream (seen in the kill-and-resume test).
    assert service_went_away(_error(grpc.StatusCode.UNKNOWN, "Stream removed (Socket closed)"))
    assert not service_went_away(_error(grpc.StatusCode.UNKNOWN, "Exception calling application"))
    assert not service_went_away(_error(grpc.StatusCode.INVALID_ARGUMENT, "Socket closed"))
    assert not service_went_away(_error(grpc.StatusCode.INTERNAL, "boom"))


def test_patience_runs_from_the_break_not_from_the_call(monkeypatch) -> None:
    from p2m.gateway import clients

    now = [1000.0]
    monkeypatch.setattr(clients.time, "monotonic", lambda: now[0])
    outage = clients.Outage(patience_s=60)
    now[0] += 3600  # a stage that streamed for an hour before its service died
    assert outage.patient()
    now[0] += 59
    assert outage.patient()
    now[0] += 2
    assert not outage.patient()  # away for longer than the patience
    outage.over()  # it came back and answered
    now[0] += 3600
    assert outage.patient() and outage.attempts == 0
