"""Runs: created, queued, driven through the stages, watched, cancelled and resumed.

Every change of a run is saved before its event is announced. A gateway that stops (SIGTERM or a
crash) leaves its runs as they were; on start, unfinished runs are picked up again from their
first stage that had not finished, and each stage service answers a repeated call from its cache,
journal or checkpoint.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2

from p2m.common.errors import (
    BudgetExhausted,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    P2MError,
)
from p2m.common.log import run_id_var
from p2m.common.names import MAX_RUN_ID_CHARS
from p2m.gateway.clients import StageClients
from p2m.gateway.requests import check_request_id, checked_options, prompt_text, request_sha
from p2m.gateway.stages import DEFAULT_STUDENT, PIPELINE, Skip, StageOutcome, add_usage
from p2m.gateway.store import RunStore
from prompt2model.v1 import common_pb2, gateway_pb2

log = logging.getLogger(__name__)

G = gateway_pb2
FINISHED = (G.RUN_STATE_SUCCEEDED, G.RUN_STATE_FAILED, G.RUN_STATE_CANCELLED)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class RunnerSettings:
    """How runs run.

    Attributes:
        max_running_runs: Runs worked on at once; the others wait QUEUED.
        max_prompt_bytes: Largest prompt accepted.
        choice_timeout_s: How long an interactive run waits before taking a choice's defaults.
        max_retrieved_rows: Rows kept of a retrieved dataset (PrepareDataset.max_rows).
        default_student: Base model when model retrieval is skipped.
    """

    max_running_runs: int = 2
    max_prompt_bytes: int = 64 * 1024
    choice_timeout_s: float = 900.0
    max_retrieved_rows: int = 2000
    default_student: str = DEFAULT_STUDENT


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class RunManager:
    """Owns the runs of one gateway."""

    def __init__(self, store: RunStore, clients: StageClients, settings: RunnerSettings) -> None:
        """Drive runs with the stage services behind ``clients``, persisting them in ``store``."""
        self._store = store
        self._clients = clients
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.max_running_runs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, G.Run] = {}
        self._listeners: dict[str, set[asyncio.Queue[G.RunEvent]]] = defaultdict(set)
        self._sequence: dict[str, int] = {}
        self._answers: dict[tuple[str, str], asyncio.Future[list[str]]] = {}
        self._closing = False

    async def start(self) -> None:
        """Pick up every unfinished run where it stopped."""
        for run in self._store.unfinished():
            self._schedule(run.run_id, resumed=True)

    async def stop(self) -> None:
        """Stop working (runs stay unfinished, to resume on the next start)."""
        self._closing = True
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=30)

    # ------------------------------------------------------------------ the API's operations

    def create(self, request: G.CreateRunRequest) -> G.Run:
        """Check and store a new run, queue it, and return it (or the earlier one, by request id).

        Raises:
            InvalidInput: A bad prompt or option (named).
            AlreadyExists: The request id was used with another prompt or other options.
        """
        prompt = prompt_text(request, self._settings.max_prompt_bytes)
        options = checked_options(request.options)
        check_request_id(request.request_id)
        run = G.Run(
            run_id=f"run-{secrets.token_hex(8)}",
            state=G.RUN_STATE_QUEUED,
            create_time=_now(),
            update_time=_now(),
            options=options,
            request_id=request.request_id,
            stages=[
                G.StageResult(stage=stage, state=G.STAGE_STATE_PENDING) for stage, _ in PIPELINE
            ],
        )
        stored, new = self._store.create(run, request_sha(prompt, options), prompt)
        if new:
            self.emit(stored, G.RUN_EVENT_KIND_RUN_CREATED, message="run created")
            self._schedule(stored.run_id, resumed=False)
        return self.get(stored.run_id)

    def get(self, run_id: str) -> G.Run:
        """The run as it stands.

        Raises:
            InvalidInput: Empty id.
            NotFound: No such run.
        """
        if not run_id:
            raise InvalidInput("run_id", "is empty")
        run = self._live.get(run_id) or self._store.get(run_id[: MAX_RUN_ID_CHARS + 1])
        if run is None:
            raise NotFound(f"no run {run_id[:80]!r}")
        copy = G.Run()
        copy.CopyFrom(run)
        copy.last_event_sequence = self._last_sequence(run_id)
        return copy

    def list(self, request: G.ListRunsRequest) -> G.ListRunsResponse:
        """A page of runs, newest first."""
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidInput("page_size", f"must be within 0..{MAX_PAGE_SIZE}")
        states = list(request.states)
        if len(set(states)) != len(states):
            raise InvalidInput("states", "no repeats")
        for state in states:
            if state not in G.RunState.values() or state == G.RUN_STATE_UNSPECIFIED:
                raise InvalidInput("states", f"unknown state {state}")
        runs, token = self._store.list_runs(
            states, request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        return G.ListRunsResponse(runs=[self.get(r.run_id) for r in runs], next_page_token=token)

    async def cancel(self, run_id: str) -> G.Run:
        """Stop the run's stage and end it CANCELLED (a finished run is returned unchanged)."""
        run = self.get(run_id)
        task = self._tasks.get(run_id)
        if run.state in FINISHED or task is None:
            return run
        task.cancel()
        await asyncio.wait([task], timeout=60)
        return self.get(run_id)

    async def answer(self, request: G.AnswerChoiceRequest) -> G.Run:
        """Answer the run's pending choice.

        Raises:
            NotFound: No such run.
            FailedPrecondition: The run does not wait on that choice.
            InvalidInput: The values are not among the options, repeat, or are too few or many.
        """
        run = self.get(request.run_id)
        pending = run.pending_choice
        waiting = self._answers.get((run.run_id, request.choice_id))
        if (
            run.state != G.RUN_STATE_WAITING_FOR_INPUT
            or pending.choice_id != request.choice_id
            or waiting is None
            or waiting.done()
        ):
            raise FailedPrecondition(f"run {run.run_id} is not waiting on {request.choice_id!r}")
        values = list(pending.default_values if request.accept_default else request.values)
        allowed = {option.value for option in pending.options}
        if len(set(values)) != len(values):
            raise InvalidInput("values", "no repeats")
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise InvalidInput("values", f"not among the options: {unknown[0][:80]!r}")
        if not pending.min_values <= len(values) <= pending.max_values:
            raise InvalidInput(
                "values", f"give {pending.min_values} to {pending.max_values} values"
            )
        waiting.set_result(values)
        await asyncio.sleep(0)
        return self.get(run.run_id)

    async def watch(self, run_id: str, after: int) -> AsyncIterator[G.RunEvent]:
        """The run's events after ``after``: stored ones, then live ones, up to RUN_FINISHED."""
        if after < 0:
            raise InvalidInput("from_sequence", "must be >= 0")
        self.get(run_id)
        queue: asyncio.Queue[G.RunEvent] = asyncio.Queue()
        self._listeners[run_id].add(queue)
        try:
            last = after
            for event in self._store.events(run_id, after):
                yield event
                last = event.sequence
                if event.kind == G.RUN_EVENT_KIND_RUN_FINISHED:
                    return
            while True:
                event = await queue.get()
                if event.sequence <= last:
                    continue
                yield event
                last = event.sequence
                if event.kind == G.RUN_EVENT_KIND_RUN_FINISHED:
                    return
        finally:
            self._listeners[run_id].discard(queue)

    # ------------------------------------------------------------------ driving a run

    def _schedule(self, run_id: str, resumed: bool) -> None:
        task = asyncio.create_task(self._drive(run_id, resumed), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))

    async def _drive(self, run_id: str, resumed: bool) -> None:
        try:
            async with self._slots:
                run = self._store.get(run_id)
                if run is None or run.state in FINISHED:
                    return
                token = run_id_var.set(run_id)
                self._live[run_id] = run
                try:
                    await self._run_stages(run, resumed)
                finally:
                    self._live.pop(run_id, None)
                    run_id_var.reset(token)
        except asyncio.CancelledError:
            if self._closing:
                raise
            queued = self._store.get(run_id)  # cancelled while it waited for a slot
            if queued is not None and queued.state == G.RUN_STATE_QUEUED:
                queued.state = G.RUN_STATE_CANCELLED
                self._finish(queued, "run cancelled")

    async def _run_stages(self, run: G.Run, resumed: bool) -> None:
        run.state = G.RUN_STATE_RUNNING
        self._save(run)
        self.emit(
            run, G.RUN_EVENT_KIND_RUN_STARTED, message="run resumed" if resumed else "run started"
        )
        context = _StageContext(
            self, run, self._store.prompt(run.run_id), self._clients, self._settings
        )
        result: G.StageResult | None = None
        try:
            for stage, work in PIPELINE:
                result = next(r for r in run.stages if r.stage == stage)
                if result.state in (G.STAGE_STATE_SUCCEEDED, G.STAGE_STATE_SKIPPED):
                    continue
                if not await self._run_stage(run, result, work, context):
                    return
            run.state = G.RUN_STATE_SUCCEEDED
            self._finish(run, "run succeeded")
        except asyncio.CancelledError:
            if self._closing:  # the gateway stops: the run resumes on the next start
                self._save(run)
                raise
            if result is not None and result.state == G.STAGE_STATE_RUNNING:
                result.state = G.STAGE_STATE_CANCELLED
                result.finish_time.CopyFrom(_now())
            run.state = G.RUN_STATE_CANCELLED
            run.ClearField("pending_choice")
            self._finish(run, "run cancelled")
        except Exception as error:  # a bug: the run fails, the gateway goes on
            log.exception("run failed unexpectedly")
            run.state = G.RUN_STATE_FAILED
            run.error = f"internal error: {type(error).__name__}"
            self._finish(run, run.error)

    async def _run_stage(
        self, run: G.Run, result: G.StageResult, work: object, context: _StageContext
    ) -> bool:
        """Run one stage; False when the run failed there."""
        name = common_pb2.Stage.Name(result.stage)
        run.current_stage = result.stage
        result.state = G.STAGE_STATE_RUNNING
        result.start_time.CopyFrom(_now())
        result.error = ""
        self._save(run)
        self.emit(
            run, G.RUN_EVENT_KIND_STAGE_STARTED, stage=result.stage, message=f"{name} started"
        )
        try:
            outcome: StageOutcome = await work(context)  # type: ignore[operator]
        except Skip as skip:
            result.state = G.STAGE_STATE_SKIPPED
            result.note = str(skip)
            result.finish_time.CopyFrom(_now())
            self._save(run)
            self.emit(
                run,
                G.RUN_EVENT_KIND_STAGE_SKIPPED,
                stage=result.stage,
                message=f"{name} skipped: {skip}",
                stage_result=result,
            )
            return True
        except P2MError as error:
            result.state = G.STAGE_STATE_FAILED
            result.error = str(error)
            result.finish_time.CopyFrom(_now())
            run.state = G.RUN_STATE_FAILED
            run.error = f"{name}: {error}"
            self._save(run)
            self.emit(
                run,
                G.RUN_EVENT_KIND_STAGE_FAILED,
                stage=result.stage,
                message=run.error,
                stage_result=result,
            )
            self._finish(run, f"run failed at {name}")
            return False
        result.state = G.STAGE_STATE_SUCCEEDED
        result.cached = outcome.cached
        del result.artifacts[:]
        result.artifacts.extend(a for a in outcome.artifacts if a.uri)
        result.figures.clear()
        result.figures.update(outcome.figures)
        result.note = outcome.note
        if outcome.usage is not None:
            result.llm_usage.CopyFrom(outcome.usage)
            add_usage(run.report.llm_usage, outcome.usage)
        result.finish_time.CopyFrom(_now())
        self._save(run)
        self.emit(
            run,
            G.RUN_EVENT_KIND_STAGE_FINISHED,
            stage=result.stage,
            message=f"{name} finished{' (cached)' if outcome.cached else ''}",
            stage_result=result,
        )
        return True

    def _finish(self, run: G.Run, message: str) -> None:
        seconds = time.time() - run.create_time.ToNanoseconds() / 1e9
        run.report.duration.CopyFrom(duration_pb2.Duration(seconds=int(seconds)))
        self._save(run)
        self.emit(run, G.RUN_EVENT_KIND_RUN_FINISHED, message=message)

    async def ask_choice(self, run: G.Run, choice: G.PendingChoice) -> builtins.list[str]:
        """The answer to ``choice``.

        Stored from before, the defaults (unattended runs), or the person's, waited for until
        the choice expires (then the defaults).
        """
        stored = self._store.answer(run.run_id, choice.choice_id)
        if stored is not None:
            return stored
        if run.options.mode != G.INTERACTION_MODE_INTERACTIVE:
            return list(choice.default_values)
        timeout = self._settings.choice_timeout_s
        choice.expire_time.FromNanoseconds(int((time.time() + timeout) * 1e9))
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._answers[(run.run_id, choice.choice_id)] = future
        run.pending_choice.CopyFrom(choice)
        run.state = G.RUN_STATE_WAITING_FOR_INPUT
        self._save(run)
        self.emit(
            run,
            G.RUN_EVENT_KIND_INPUT_REQUIRED,
            stage=choice.stage,
            message=choice.question,
            choice=choice,
        )
        try:
            values = await asyncio.wait_for(future, timeout)
            how = "answered"
        except TimeoutError:
            values, how = list(choice.default_values), "expired: defaults taken"
        finally:
            self._answers.pop((run.run_id, choice.choice_id), None)
        self._store.save_answer(run.run_id, choice.choice_id, values)
        run.ClearField("pending_choice")
        run.state = G.RUN_STATE_RUNNING
        self._save(run)
        answer = ", ".join(values) or "none"
        self.emit(
            run,
            G.RUN_EVENT_KIND_INPUT_RECEIVED,
            stage=choice.stage,
            message=f"{choice.choice_id} {how}: {answer}",
        )
        return values

    # ------------------------------------------------------------------ persistence and events

    def _save(self, run: G.Run) -> None:
        run.update_time.CopyFrom(_now())
        self._store.save(run)

    def _last_sequence(self, run_id: str) -> int:
        if run_id not in self._sequence:
            self._sequence[run_id] = self._store.last_sequence(run_id)
        return self._sequence[run_id]

    def emit(
        self,
        run: G.Run,
        kind: G.RunEventKind,
        *,
        stage: common_pb2.Stage = common_pb2.STAGE_UNSPECIFIED,
        message: str = "",
        progress: common_pb2.Progress | None = None,
        stage_result: G.StageResult | None = None,
        choice: G.PendingChoice | None = None,
    ) -> None:
        """Number, store and announce one event."""
        event = G.RunEvent(
            sequence=self._last_sequence(run.run_id) + 1,
            run_id=run.run_id,
            time=_now(),
            stage=stage,
            kind=kind,
            message=message,
            run_state=run.state,
        )
        if progress is not None:
            event.progress.CopyFrom(progress)
        if stage_result is not None:
            event.stage_result.CopyFrom(stage_result)
        if choice is not None:
            event.choice.CopyFrom(choice)
        self._store.add_event(event)
        self._sequence[run.run_id] = event.sequence
        for queue in list(self._listeners.get(run.run_id, ())):
            queue.put_nowait(event)


class _StageContext:
    """What the stages of one run see (see ``StageContext`` in stages.py)."""

    def __init__(
        self,
        manager: RunManager,
        run: G.Run,
        prompt: str,
        clients: StageClients,
        settings: RunnerSettings,
    ) -> None:
        self._manager = manager
        self.run = run
        self.prompt = prompt
        self.clients = clients
        self.max_retrieved_rows = settings.max_retrieved_rows
        self.default_student = settings.default_student

    def progress(self, progress: common_pb2.Progress) -> None:
        self._manager.emit(
            self.run,
            G.RUN_EVENT_KIND_STAGE_PROGRESS,
            stage=progress.stage,
            message=progress.message,
            progress=progress,
        )

    def warn(self, message: str) -> None:
        self._manager.emit(
            self.run, G.RUN_EVENT_KIND_WARNING, stage=self.run.current_stage, message=message
        )

    def remaining_requests(self) -> int:
        return self._remaining("llm_max_requests", self.run.report.llm_usage.requests)

    def remaining_tokens(self) -> int:
        usage = self.run.report.llm_usage
        return self._remaining("llm_max_tokens", usage.prompt_tokens + usage.completion_tokens)

    def _remaining(self, name: str, used: int) -> int:
        limit = int(getattr(self.run.options.budget, name))
        if not limit:
            return 0
        if used >= limit:
            raise BudgetExhausted(f"the run's {name} budget ({limit}) is spent")
        return limit - used

    async def ask(self, choice: G.PendingChoice) -> list[str]:
        return await self._manager.ask_choice(self.run, choice)
