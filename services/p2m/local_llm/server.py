"""Run llama.cpp's own OpenAI-compatible HTTP server in-process (xllamacpp)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2m.common.errors import Unavailable
from p2m.common.procs import free_port, usable_cpus
from p2m.common.settings import Settings
from p2m.common.shipped_models import resolve_gguf

log = logging.getLogger(__name__)

# Tokens back the embedded llama.cpp's repetition penalties look, for its clients to send with
# requests that carry a penalty (new inputs). Its own default is 64, and the window takes in the
# prompt's last tokens: at 256 it reaches the examples a request shows, which a small teacher
# otherwise copies. Temporal prompt, 80 examples, seed 1: 41% of the candidate inputs were
# duplicates at 64 (52 of 54 copied an example the request showed) and 21% at 256, in 196
# requests and 475 s against 241 and 655 s, and the SmolLM2 student trained on them scored
# ChrF++ 35.0 on 100 dev examples against 14.6. At 1024 SQuAD contexts shrank to a third.
EMBEDDED_PENALTY_WINDOW = 256


def penalty_window(settings: Settings) -> int:
    """The penalty window for the LLM ``settings`` point at: as set, else the embedded one's."""
    if settings.llm_base_url:
        return settings.llm_penalty_window  # a configured endpoint may not be llama.cpp
    return settings.llm_penalty_window or EMBEDDED_PENALTY_WINDOW


@dataclass(frozen=True)
class LocalLLMConfig:
    """How to serve a GGUF model.

    Attributes:
        model_path: The GGUF file.
        alias: Model name the endpoint answers to and reports in ``/v1/models``.
        host: Address to listen on (loopback by default).
        port: Port (0 picks a free one).
        n_parallel: Concurrent decoding slots.
        n_ctx: Context in tokens, shared among the slots.
        n_threads: CPU threads (0: every core this process may use, ``usable_cpus``).
    """

    model_path: Path
    alias: str
    host: str = "127.0.0.1"
    port: int = 0
    n_parallel: int = 4
    n_ctx: int = 8192
    n_threads: int = 0


class LocalLLMServer:
    """llama.cpp's server: ``/v1/models``, ``/v1/chat/completions``, ``/health``."""

    def __init__(self, config: LocalLLMConfig) -> None:
        """Prepare (not start) a server for ``config``."""
        self.config = config
        self.port = 0
        self._server: Any = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8089/v1``."""
        return f"http://{self.config.host}:{self.port}/v1"

    def start(self) -> str:
        """Load the model and listen; return the base URL.

        Raises:
            Unavailable: llama.cpp could not load the model or bind the port.
        """
        import xllamacpp  # native library: import only when a server is wanted

        cfg = self.config
        port = cfg.port or free_port(cfg.host)
        params = xllamacpp.CommonParams()
        params.model.path = str(cfg.model_path)
        params.model_alias = {cfg.alias}
        params.hostnames = [cfg.host]
        params.port = port
        params.n_parallel = cfg.n_parallel
        params.n_ctx = cfg.n_ctx
        params.cpuparams.n_threads = cfg.n_threads or usable_cpus()
        params.cpuparams_batch.n_threads = params.cpuparams.n_threads
        params.verbosity = -1
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise Unavailable(f"llama.cpp could not serve {cfg.model_path}: {exc}") from exc
        self.port = port
        log.info("local LLM listening", extra={"base_url": self.base_url, "model": cfg.alias})
        return self.base_url

    def stop(self) -> None:
        """Stop serving and free the model."""
        self._server = None


def local_server_from_settings(
    settings: Settings, *, host: str | None = None, port: int = 0
) -> LocalLLMServer:
    """A (not yet started) server for ``settings.local_llm``, its file verified.

    It listens on ``host`` (default ``settings.host``) and ``port`` (0: a free one).
    """
    path, alias = resolve_gguf(settings.local_llm, settings.models_dir)
    return LocalLLMServer(
        LocalLLMConfig(
            model_path=path,
            alias=alias,
            host=host or settings.host,
            port=port,
            n_parallel=settings.local_llm_parallel,
            n_ctx=settings.local_llm_ctx,
            n_threads=settings.local_llm_threads,
        )
    )
