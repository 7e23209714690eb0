"""What every `p2m` command shares: consoles, common options, settings, errors, prompt files."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from p2m.common.errors import InvalidInput, P2MError
from p2m.common.log import setup_logging
from p2m.common.settings import Settings
from p2m.common.types import TaskSpec

if TYPE_CHECKING:
    from p2m.local_llm.provider import LLMProvider

out = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option(help="Data dir (env P2M_DATA_DIR).")]
LogLevel = Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")]
LlmUrl = Annotated[
    str | None,
    typer.Option(help="OpenAI-compatible base URL (env P2M_LLM_BASE_URL); empty: embedded."),
]
LlmModel = Annotated[str | None, typer.Option(help="Model name at that endpoint.")]
LocalLlm = Annotated[
    str | None, typer.Option(help="Embedded endpoint's model: qwen, smollm2 or a .gguf path.")
]
_PROMPT_HELP = "The prompt, a text file ('-': stdin)."
PromptFile = Annotated[Path, typer.Option(help=_PROMPT_HELP, show_default=False)]
OptionalPromptFile = Annotated[Path | None, typer.Option(help=_PROMPT_HELP)]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code`` (2: bad input)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def load_settings(**flags: Any) -> Settings:
    """Settings from the environment and the given flags (None: not given)."""
    try:
        return Settings.load(flags)
    except InvalidInput as exc:
        fail(f"invalid setting {exc.field}: {exc.problem}")


def client_settings(
    data_dir: Path | None,
    log_level: str | None,
    llm_base_url: str | None,
    llm_model: str | None,
    local_llm: str | None,
) -> Settings:
    """Settings of a command that works in-process; logs go to stderr as text."""
    settings = load_settings(
        data_dir=data_dir,
        log_level=log_level or "WARNING",
        log_format="text",
        llm_base_url=llm_base_url,
        llm_model=llm_model,
        local_llm=local_llm,
    )
    setup_logging(settings.log_level, settings.log_format)
    return settings


def run_async(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine; turn p2m's errors into a message and an exit code."""
    try:
        return asyncio.run(coro_fn())
    except InvalidInput as exc:
        fail(str(exc), 2)
    except P2MError as exc:
        fail(str(exc), 1)


def read_prompt(path: Path) -> bytes:
    """The prompt file's bytes ('-': stdin); a clear message and exit 2 when unreadable."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        fail(f"prompt file not found: {path}")
    except IsADirectoryError:
        fail(f"prompt file is a folder: {path}")
    except OSError as exc:
        fail(f"cannot read prompt file {path}: {exc.strerror}")


async def parse_prompt(
    provider: LLMProvider, settings: Settings, prompt: bytes, translate: bool = True
) -> TaskSpec:
    """Parse a prompt file's bytes in-process (the LLM from ``provider`` only if needed)."""
    from p2m.parser.core import PromptParser

    parser = PromptParser(provider.client, max_prompt_bytes=settings.max_prompt_bytes)
    return (await parser.parse(prompt, translate=translate, field="prompt_file")).task


def epochs_text(done: float, planned: int) -> str:
    """Epochs a training did, and of how many it planned where the report says."""
    return f"{done:.2f}" + (f" of {planned}" if planned else "") + " epochs"
