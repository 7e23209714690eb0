"""A small typed client of the gateway, for other Python services.

async with GatewayClient("127.0.0.1:50050", token=...) as gateway:
    run = await gateway.create_run(prompt_text, RunOptions(budget=Budget(num_examples=50)))
    async for event in gateway.watch(run.run_id):
        print(event.message)
    report = await gateway.report(run.run_id)
    print(report.endpoint.base_url, report.student_metrics.values)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType

from grpc import aio

from prompt2model.v1 import gateway_pb2, gateway_pb2_grpc

Run = gateway_pb2.Run
RunEvent = gateway_pb2.RunEvent
RunOptions = gateway_pb2.RunOptions
RunReport = gateway_pb2.RunReport
Budget = gateway_pb2.Budget
FINISHED_STATES = (
    gateway_pb2.RUN_STATE_SUCCEEDED,
    gateway_pb2.RUN_STATE_FAILED,
    gateway_pb2.RUN_STATE_CANCELLED,
)


class GatewayClient:
    """Create runs, follow their events, fetch their reports (grpc.aio underneath)."""

    def __init__(self, address: str, token: str = "", timeout_s: float = 60.0) -> None:
        """Talk to the gateway at ``address`` (HOST:PORT), with a bearer ``token`` if set."""
        self._channel = aio.insecure_channel(address)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout_s

    async def __aenter__(self) -> GatewayClient:
        """Use as ``async with``."""
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Close the channel."""
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def create_run(
        self, prompt: str, options: gateway_pb2.RunOptions | None = None, request_id: str = ""
    ) -> gateway_pb2.Run:
        """Start a run (QUEUED); the same ``request_id`` again returns the same run."""
        request = gateway_pb2.CreateRunRequest(
            prompt=prompt, options=options or gateway_pb2.RunOptions(), request_id=request_id
        )
        return await self._stub.CreateRun(request, timeout=self._timeout, metadata=self._metadata)

    async def get_run(self, run_id: str) -> gateway_pb2.Run:
        """The run as it stands."""
        request = gateway_pb2.GetRunRequest(run_id=run_id)
        return await self._stub.GetRun(request, timeout=self._timeout, metadata=self._metadata)

    async def list_runs(
        self, page_size: int = 0, page_token: str = "", states: tuple[int, ...] = ()
    ) -> gateway_pb2.ListRunsResponse:
        """A page of runs, newest first."""
        request = gateway_pb2.ListRunsRequest(
            page_size=page_size,
            page_token=page_token,
            states=states,  # type: ignore[arg-type]
        )
        return await self._stub.ListRuns(request, timeout=self._timeout, metadata=self._metadata)

    async def cancel_run(self, run_id: str) -> gateway_pb2.Run:
        """Stop the run."""
        request = gateway_pb2.CancelRunRequest(run_id=run_id)
        return await self._stub.CancelRun(request, timeout=self._timeout, metadata=self._metadata)

    async def watch(
        self, run_id: str, from_sequence: int = 0
    ) -> AsyncIterator[gateway_pb2.RunEvent]:
        """The run's events after ``from_sequence``, ending with RUN_FINISHED."""
        request = gateway_pb2.WatchRunRequest(run_id=run_id, from_sequence=from_sequence)
        async for event in self._stub.WatchRun(request, metadata=self._metadata):
            yield event

    async def answer_choice(
        self,
        run_id: str,
        choice_id: str,
        values: list[str] | None = None,
        accept_default: bool = False,
    ) -> gateway_pb2.Run:
        """Answer the run's pending choice."""
        request = gateway_pb2.AnswerChoiceRequest(
            run_id=run_id, choice_id=choice_id, values=values or [], accept_default=accept_default
        )
        return await self._stub.AnswerChoice(
            request, timeout=self._timeout, metadata=self._metadata
        )

    async def wait(self, run_id: str) -> gateway_pb2.Run:
        """Follow the run to its end and return it."""
        async for _ in self.watch(run_id):
            pass
        return await self.get_run(run_id)

    async def report(self, run_id: str) -> gateway_pb2.RunReport:
        """The run's report (complete once it has succeeded)."""
        return (await self.get_run(run_id)).report
