"""Gives the LLM client a process should use: the configured endpoint or the embedded one."""

from __future__ import annotations

import asyncio
import logging

from p2m.common.errors import P2MError
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.settings import Settings
from p2m.local_llm.server import LocalLLMServer, local_server_from_settings, penalty_window

log = logging.getLogger(__name__)


class LLMProvider:
    """Creates the client on first use; starts the embedded llama.cpp endpoint if no URL is set."""

    def __init__(self, settings: Settings) -> None:
        """Read endpoint settings from ``settings``; start nothing yet."""
        self._settings = settings
        self._client: LLMClient | None = None
        self._local: LocalLLMServer | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> LLMClient:
        """The shared client, created (and the local endpoint started) on the first call."""
        async with self._lock:
            if self._client is None:
                self._client = LLMClient(await self._config())
            return self._client

    async def probe(self) -> None:
        """Check a configured endpoint answers; log a clear warning if it does not yet.

        The embedded endpoint is not started here: it starts when first needed.
        """
        if not self._settings.llm_base_url:
            return
        try:
            models = await (await self.client()).list_models()
            log.info("LLM endpoint reachable", extra={"models": models[:5]})
        except P2MError as exc:
            log.warning("LLM endpoint not reachable yet: %s", exc)

    async def _config(self) -> LLMConfig:
        s = self._settings
        base_url, model = s.llm_base_url, s.llm_model
        if not base_url:
            # In-process endpoint: only this process calls it, so loopback whatever s.host is.
            self._local = local_server_from_settings(s, host="127.0.0.1")
            model = self._local.config.alias
            base_url = await asyncio.to_thread(self._local.start)
            log.info("started the embedded LLM endpoint", extra={"base_url": base_url})
        return LLMConfig(
            base_url=base_url,
            model=model,
            api_key=s.llm_api_key or "none",
            timeout_s=s.llm_timeout_s,
            max_retries=s.llm_max_retries,
            max_concurrency=s.llm_max_concurrency,
            penalty_window=penalty_window(s),
        )

    async def aclose(self) -> None:
        """Close the client and stop the embedded endpoint if one was started."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._local is not None:
            self._local.stop()
            self._local = None
