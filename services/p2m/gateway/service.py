"""gRPC servicer of the gateway: the public API over RunManager."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from p2m.common.server import ServiceBinding
from p2m.common.settings import Settings
from p2m.gateway.auth import BearerTokenInterceptor
from p2m.gateway.clients import StageClients
from p2m.gateway.runner import RunManager, RunnerSettings
from p2m.gateway.store import RunStore
from prompt2model.v1 import gateway_pb2, gateway_pb2_grpc


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Serves ``prompt2model.v1.Gateway``."""

    def __init__(self, manager: RunManager) -> None:
        """Answer with ``manager``'s runs."""
        self._runs = manager

    async def CreateRun(  # noqa: N802 (gRPC method name)
        self, request: gateway_pb2.CreateRunRequest, context: aio.ServicerContext
    ) -> gateway_pb2.Run:
        """Check, store and queue a run."""
        return self._runs.create(request)

    async def GetRun(  # noqa: N802 (gRPC method name)
        self, request: gateway_pb2.GetRunRequest, context: aio.ServicerContext
    ) -> gateway_pb2.Run:
        """One run."""
        return self._runs.get(request.run_id)

    async def ListRuns(  # noqa: N802 (gRPC method name)
        self, request: gateway_pb2.ListRunsRequest, context: aio.ServicerContext
    ) -> gateway_pb2.ListRunsResponse:
        """A page of runs, newest first."""
        return self._runs.list(request)

    async def CancelRun(  # noqa: N802 (gRPC method name)
        self, request: gateway_pb2.CancelRunRequest, context: aio.ServicerContext
    ) -> gateway_pb2.Run:
        """Stop a run."""
        return await self._runs.cancel(request.run_id)

    async def WatchRun(  # noqa: N802 (gRPC method name)
        self, request: gateway_pb2.WatchRunRequest, context: aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.RunEvent]:
        """A run's events, stored then live, to RUN_FINISHED."""
        async for event in self._runs.watch(request.run_id, request.from_sequence):
            yield event

    async def AnswerChoice(  # noqa: N802 (gRPC method name)
        self, request: gateway_pb2.AnswerChoiceRequest, context: aio.ServicerContext
    ) -> gateway_pb2.Run:
        """Answer a pending choice."""
        return await self._runs.answer(request)


def build(settings: Settings) -> ServiceBinding:
    """The gateway's binding: runs in ``<data_dir>/runs/runs.sqlite``, stages at their addresses."""
    store = RunStore(settings.runs_db)
    clients = StageClients(settings, patience_s=settings.stage_patience_s)
    manager = RunManager(
        store,
        clients,
        RunnerSettings(
            max_running_runs=settings.max_running_runs,
            max_prompt_bytes=settings.max_prompt_bytes,
            choice_timeout_s=settings.choice_timeout_s,
            max_retrieved_rows=settings.max_retrieved_rows,
        ),
    )
    servicer = GatewayServicer(manager)

    async def stop() -> None:
        await manager.stop()
        await clients.close()
        store.close()

    return ServiceBinding(
        full_name=gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name,
        register=lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server),
        start=manager.start,
        stop=stop,
        interceptors=(BearerTokenInterceptor(settings.gateway_token),)
        if settings.gateway_token
        else (),
    )
