"""``p2m serve llm``: the embedded OpenAI-compatible endpoint as a standalone process."""

from __future__ import annotations

import asyncio
import logging
import signal

from p2m.common.settings import Settings
from p2m.local_llm.server import local_server_from_settings

log = logging.getLogger(__name__)


async def serve_llm(settings: Settings) -> None:
    """Serve the configured shipped model on ``settings.host:port`` until SIGTERM/SIGINT."""
    server = local_server_from_settings(settings, port=settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(server.start)
    await stop.wait()
    log.info("signal received, stopping the LLM endpoint")
    server.stop()
