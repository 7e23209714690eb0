"""The one progress loop every streaming RPC uses."""

from __future__ import annotations

import asyncio
import threading
import time

from p2m.common.streaming import Finished, progress_stream, thread_progress_stream


async def test_updates_come_in_order_then_the_result():
    async def work(report):
        for step in range(3):
            report(step)
            await asyncio.sleep(0)
        return "done"

    items = [item async for item in progress_stream(work)]
    assert items == [0, 1, 2, Finished("done")]


async def test_a_consumer_that_stops_cancels_the_work():
    cancelled = asyncio.Event()

    async def work(report):
        report("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = progress_stream(work)
    assert await anext(stream) == "started"
    await stream.aclose()
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_work_in_a_thread_reports_across_threads_and_can_be_abandoned():
    stop = threading.Event()

    def work(report):
        report(threading.get_ident())
        while not stop.is_set():
            time.sleep(0.01)
        return "stopped"

    abandoned: list[asyncio.Future] = []

    def abandon(future):
        abandoned.append(future)
        stop.set()

    stream = thread_progress_stream(work, abandon)
    assert await anext(stream) != threading.get_ident()  # reported from the worker thread
    await stream.aclose()
    assert len(abandoned) == 1
    assert await asyncio.wait_for(abandoned[0], 5) == "stopped"


async def test_an_error_in_the_work_reaches_the_consumer():
    async def work(report):
        report(1)
        raise ValueError("broken")

    stream = progress_stream(work)
    assert await anext(stream) == 1
    try:
        await anext(stream)
    except ValueError as exc:
        assert str(exc) == "broken"
    else:
        raise AssertionError("the error was lost")
