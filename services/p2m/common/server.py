"""grpc.aio server bootstrap: health checking, reflection, error mapping, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from p2m.common.errors import Unavailable
from p2m.common.grpc_errors import ErrorInterceptor

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host.

    Attributes:
        full_name: The proto service name, e.g. "prompt2model.v1.Parser".
        register: Adds the servicer to a server (the generated ``add_*_to_server``).
        start: Loads what the service needs; health says SERVING only after it returns.
        stop: Releases what ``start`` took.
        interceptors: Run before the error interceptor on every call (e.g. authentication).
    """

    full_name: str
    register: Callable[[aio.Server], None]
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
    interceptors: tuple[aio.ServerInterceptor, ...] = ()


class GrpcServer:
    """Hosts services on one port with health, reflection and the error interceptor."""

    def __init__(self, bindings: Sequence[ServiceBinding], host: str, port: int) -> None:
        """Prepare (not start) a server for ``bindings`` on ``host:port`` (0: a free port)."""
        self._bindings = list(bindings)
        self._host = host
        self._requested_port = port
        self.port = 0
        self._health = health_aio.HealthServicer()
        self._server = aio.server(
            interceptors=[*(i for b in self._bindings for i in b.interceptors), ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # A port another process listens on is an error, not a port shared with it.
                ("grpc.so_reuseport", 0),
            ],
        )

    async def start(self) -> int:
        """Bind, start serving (NOT_SERVING until every service has loaded), return the port.

        Raises:
            Unavailable: The port cannot be bound.
        """
        for binding in self._bindings:
            binding.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [b.full_name for b in self._bindings]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        address = f"{self._host}:{self._requested_port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise Unavailable(f"cannot listen on {address}: {exc}") from exc
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        for binding in self._bindings:
            if binding.start is not None:
                await binding.start()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"services": names, "address": f"{self._host}:{self.port}"})
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Say NOT_SERVING, let in-flight RPCs finish for ``grace_s``, then release resources."""
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(grace_s)
        for binding in reversed(self._bindings):
            if binding.stop is not None:
                await binding.stop()
        log.info("stopped")

    async def wait(self) -> None:
        """Block until the server terminates."""
        await self._server.wait_for_termination()

    async def _set_all(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        await self._health.set("", status)
        for binding in self._bindings:
            await self._health.set(binding.full_name, status)


async def serve_until_signalled(server: GrpcServer, grace_s: float) -> None:
    """Start ``server`` and run it until SIGTERM or SIGINT, then stop it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log.info("signal received, stopping", extra={"grace_s": grace_s})
    await server.stop(grace_s)
