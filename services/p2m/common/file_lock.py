"""An exclusive lock on a file, awaited without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator
from pathlib import Path

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a waiting holder tries again


@contextlib.asynccontextmanager
async def exclusive(path: Path, what: str) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Another process holding it, or another task of this one (each opens the file anew, and
    ``flock`` locks an open file, not a process), makes this wait, logging once that ``what``
    waits. Cancelled while waiting, it gives up without the lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("waiting for the lock", extra={"what": what, "path": str(path)})
                    waited = True
                await asyncio.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
