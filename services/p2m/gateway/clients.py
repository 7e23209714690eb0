"""Channels to the stage services, and calls that wait out a service being restarted.

Every stage call is idempotent on the service side (the generator resumes from its journal, the
trainer from its checkpoint, the others answer from the artifact store), so a call that finds
its service down (UNAVAILABLE) is simply made again after a pause, until a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio

from p2m.common import errors
from p2m.common.settings import Settings
from prompt2model.v1 import (
    deployer_pb2_grpc,
    evaluator_pb2_grpc,
    generator_pb2_grpc,
    parser_pb2_grpc,
    retriever_pb2_grpc,
    trainer_pb2_grpc,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# What gRPC's C core says of a stream whose peer vanished (status UNKNOWN).
_TRANSPORT_WORDS = ("Stream removed", "Socket closed")
UNAVAILABLE_PATIENCE_S = 300.0  # how long a stage waits for its service to come back
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
_STUBS = {
    "parser": parser_pb2_grpc.ParserStub,
    "retriever": retriever_pb2_grpc.RetrieverStub,
    "generator": generator_pb2_grpc.GeneratorStub,
    "trainer": trainer_pb2_grpc.TrainerStub,
    "evaluator": evaluator_pb2_grpc.EvaluatorStub,
    "deployer": deployer_pb2_grpc.DeployerStub,
}
# Codes a stage answers with that mean "the request (or the data) is at fault": no retry.
_CODE_ERRORS: dict[grpc.StatusCode, type[errors.P2MError]] = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.BudgetExhausted,
    grpc.StatusCode.CANCELLED: errors.Cancelled,
    grpc.StatusCode.ABORTED: errors.Aborted,
}


class StageClients:
    """One channel per stage service, addresses from settings (``P2M_<SERVICE>_ADDR``)."""

    def __init__(self, settings: Settings, patience_s: float = UNAVAILABLE_PATIENCE_S) -> None:
        """Connect lazily to the addresses in ``settings``."""
        self._settings = settings
        self._channels: dict[str, aio.Channel] = {}
        self.patience_s = patience_s

    def stub(self, service: str) -> Any:
        """The stub of ``service``.

        Raises:
            FailedPrecondition: No address is configured for it.
        """
        if service not in self._channels:
            address = getattr(self._settings, f"{service}_addr")
            if not address:
                raise errors.FailedPrecondition(
                    f"no address for the {service} (set P2M_{service.upper()}_ADDR)"
                )
            self._channels[service] = aio.insecure_channel(
                address, options=[("grpc.max_receive_message_length", 64 << 20)]
            )
        return _STUBS[service](self._channels[service])

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def unary(self, service: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call(stub)``, made again while the service is unavailable."""
        outage = Outage(self.patience_s)
        while True:
            try:
                return await call(self.stub(service))
            except aio.AioRpcError as error:
                await self._retry_or_raise(service, error, outage)

    async def stream(
        self,
        service: str,
        call: Callable[[Any], AsyncIterator[T]],
        on_message: Callable[[T], None],
    ) -> T:
        """Read ``call(stub)`` to its end, passing each message on; return the last one.

        A stream broken by the service going away is opened again (the service resumes). The
        patience runs from the break, and a message from the service ends the outage: a stage
        that works for longer than the patience is still waited for when its service dies.
        """
        outage = Outage(self.patience_s)
        while True:
            last: T | None = None
            try:
                async for message in call(self.stub(service)):
                    outage.over()
                    last = message
                    on_message(message)
            except aio.AioRpcError as error:
                await self._retry_or_raise(service, error, outage)
                continue
            if last is None:
                raise errors.Aborted(f"the {service} ended its stream without a result")
            return last

    async def _retry_or_raise(self, service: str, error: aio.AioRpcError, outage: Outage) -> None:
        if service_went_away(error) and outage.patient():
            pause = _BACKOFF_S[min(outage.attempts, len(_BACKOFF_S) - 1)]
            outage.attempts += 1
            log.warning(
                "stage service unavailable; calling again",
                extra={"service": service, "attempt": outage.attempts, "pause_s": pause},
            )
            await asyncio.sleep(pause)
            return
        raise as_p2m_error(service, error) from None


class Outage:
    """How long a service has been away: patience runs from the first failed call."""

    def __init__(self, patience_s: float) -> None:
        """Wait at most ``patience_s`` for the service once it goes away."""
        self.patience_s = patience_s
        self.attempts = 0
        self._deadline: float | None = None

    def patient(self) -> bool:
        """True while the outage (started now if none was) is within the patience."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.patience_s
        return now < self._deadline

    def over(self) -> None:
        """The service answered: the next failure starts a new outage."""
        self._deadline = None
        self.attempts = 0


def service_went_away(error: aio.AioRpcError) -> bool:
    """True when the call broke because the service went away (not because it refused).

    UNAVAILABLE says so; a service killed in the middle of a stream can also leave the call
    UNKNOWN with gRPC's transport words ("Stream removed", "Socket closed") as its details.
    """
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    details = error.details() or ""
    return code == grpc.StatusCode.UNKNOWN and any(w in details for w in _TRANSPORT_WORDS)


def as_p2m_error(service: str, error: aio.AioRpcError) -> errors.P2MError:
    """A stage service's error as a domain error, its message naming the service."""
    message = f"{service}: {error.details() or error.code().name}"
    code = error.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.InvalidInput(service, error.details() or "invalid argument")
    if code in _CODE_ERRORS:
        return _CODE_ERRORS[code](message)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.Unavailable(message)
    return errors.Aborted(message)
