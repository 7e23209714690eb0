"""p2m.common.file_lock: one holder at a time, across tasks and processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2m.common.file_lock import exclusive


async def test_a_second_task_waits_until_the_first_lets_go(tmp_path: Path):
    order: list[str] = []

    async def hold(name: str, seconds: float) -> None:
        async with exclusive(tmp_path / "key" / "lock", name):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    await asyncio.gather(hold("first", 0.3), hold("second", 0.0))
    assert order == ["first in", "first out", "second in", "second out"]


async def test_a_lock_another_process_holds_is_waited_for(tmp_path: Path):
    path = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"handle = open({str(path)!r}, 'a')\n"
            "fcntl.flock(handle, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(1.0)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        held_since = time.monotonic()
        async with exclusive(path, "after the other process"):
            assert time.monotonic() - held_since >= 0.8  # the other held it for a second
    finally:
        holder.kill()
        holder.wait()


async def test_a_waiter_cancelled_gives_up_and_leaves_the_lock_free(tmp_path: Path):
    path = tmp_path / "lock"

    async def wait_for_it() -> None:
        async with exclusive(path, "waiter"):
            raise AssertionError("the waiter got the lock while it was held")

    async with exclusive(path, "holder"):
        waiter = asyncio.create_task(wait_for_it())
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(1):
        async with exclusive(path, "next"):
            pass
