"""One loop for every streaming RPC: run the work, pass on its progress, then its result.

The work reports progress through a callback; the stream yields each update as it comes and,
last, ``Finished(result)``. A caller that goes away cancels the work (or, for work in a thread,
whatever ``on_abandon`` does: a thread cannot be cancelled from outside).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")
Report = Callable[[P], None]


@dataclass(frozen=True)
class Finished(Generic[R]):
    """The work's result: the last item of a progress stream."""

    value: R


def progress_stream(work: Callable[[Report[P]], Awaitable[R]]) -> AsyncIterator[P | Finished[R]]:
    """Run ``work(report)`` as a task; its progress updates, then ``Finished(result)``."""
    updates: asyncio.Queue[P] = asyncio.Queue()
    task = asyncio.ensure_future(work(updates.put_nowait))
    return _drain(task, updates, _cancel)


def thread_progress_stream(
    work: Callable[[Report[P]], R], on_abandon: Callable[[asyncio.Future[R]], None]
) -> AsyncIterator[P | Finished[R]]:
    """Run ``work(report)`` in a thread (reports may come from any thread), as above.

    ``on_abandon(future)`` runs when the consumer stops before the work is done.
    """
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[P] = asyncio.Queue()

    def report(update: P) -> None:
        loop.call_soon_threadsafe(updates.put_nowait, update)

    task = asyncio.ensure_future(asyncio.to_thread(work, report))
    return _drain(task, updates, on_abandon)


def _cancel(task: asyncio.Future[R]) -> None:
    task.cancel()


async def _drain(
    task: asyncio.Future[R],
    updates: asyncio.Queue[P],
    on_abandon: Callable[[asyncio.Future[R]], None],
) -> AsyncIterator[P | Finished[R]]:
    try:
        while not task.done() or not updates.empty():
            getter = asyncio.ensure_future(updates.get())
            waiting: set[asyncio.Future[Any]] = {getter, task}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        result = task.result()
    finally:
        if not task.done():
            on_abandon(task)
    yield Finished(result)
