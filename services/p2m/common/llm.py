"""The project's one seam to an OpenAI-compatible chat endpoint.

Every LLM call in p2m goes through :class:`LLMClient`. It wraps ``openai.AsyncOpenAI`` with the
library's own retries switched off and adds, on top:

* retries with exponential backoff and jitter on HTTP 429, 5xx, timeouts, connection errors
  and malformed 200 answers, honouring ``Retry-After`` on 429/503;
* a per-client concurrency limit, held only while a request is on the wire, that halves when
  the endpoint throttles (429) and grows back as requests succeed;
* an optional shared :class:`~p2m.common.budget.Budget` that no attempt can overrun;
* usage accounting (requests, failures, retries, tokens);
* :meth:`LLMClient.chat_json`, JSON-schema constrained output with a fallback for endpoints
  that reject ``response_format``;
* an optional watch on the answer as it is written (``stop_when``): the answer is streamed and
  the request dropped the moment the watch says so (a small model caught in a loop), which
  stops the endpoint's work on it (llama.cpp cancels a request whose client has gone).

Nothing here reads the environment: the endpoint, key and limits come from :class:`LLMConfig`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import jsonschema
import openai

from p2m.common.budget import Budget, prompt_token_bound
from p2m.common.errors import InvalidInput, LLMError, LLMOutputError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Statuses after which the same request may succeed later.
# An answer slower than this share of the timeout lowers the concurrency by one.
SLOW_SHARE = 0.5
_RETRYABLE_STATUSES = frozenset({408, 429})
#: Statuses whose ``Retry-After`` header is honoured.
_RETRY_AFTER_STATUSES = frozenset({429, 503})
#: Statuses by which an endpoint says it does not understand ``response_format``.
_NO_RESPONSE_FORMAT_STATUSES = frozenset({400, 422})
#: llama.cpp answers 500 when the model's own output fails its chat-format parser (a JSON answer
#: cut at the token limit, say): the model answered badly, and the same request again costs as
#: much and fails alike, so it is not retried.
_OUTPUT_REJECTED = re.compile(r"produced output that does not match", re.IGNORECASE)
_EXCERPT_CHARS = 200
#: What the openai client puts before an endpoint's own error message.
_STATUS_PREFIX = re.compile(r"^Error code: \d+ - ")
_SCHEMA_INSTRUCTION = "Answer with one JSON object matching this JSON schema: "
_FENCED_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
#: The finish reason of an answer whose caller's ``stop_when`` cut it short.
STOPPED_EARLY = "stopped_early"


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to reach an OpenAI-compatible endpoint.

    Attributes:
        base_url: The API root, e.g. ``"http://127.0.0.1:8089/v1"``.
        model: The model name sent with every request.
        api_key: Bearer token; never printed, logged or put into error messages.
        timeout_s: Limit for one HTTP attempt, in seconds.
        max_retries: Retries after the first attempt (0 = try once).
        backoff_initial_s: Backoff before the first retry; it doubles with every retry.
        backoff_max_s: Upper bound for any single backoff, ``Retry-After`` included.
        max_concurrency: Requests in flight at once, per client.
        penalty_window: For a llama.cpp endpoint: how many tokens back its repetition
            penalties look (``repeat_last_n``, sent with every request that carries a
            penalty). llama.cpp looks 64 tokens back by default, so a small model's
            paragraph-long rambles escape the penalty; 0 sends none (OpenAI's endpoints
            penalise the whole answer and reject unknown fields).
    """

    base_url: str
    model: str = "default"
    api_key: str = field(default="none", repr=False)
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 20.0
    max_concurrency: int = 4
    penalty_window: int = 0

    def __post_init__(self) -> None:
        """Reject settings that cannot work.

        Raises:
            InvalidInput: If a field is out of range.
        """
        if not self.base_url:
            raise InvalidInput("base_url", "must not be empty")
        if not self.model:
            raise InvalidInput("model", "must not be empty")
        if self.timeout_s <= 0:
            raise InvalidInput("timeout_s", "must be > 0")
        if self.max_retries < 0:
            raise InvalidInput("max_retries", "must be >= 0")
        if self.backoff_initial_s < 0:
            raise InvalidInput("backoff_initial_s", "must be >= 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise InvalidInput("backoff_max_s", "must be >= backoff_initial_s")
        if self.max_concurrency < 1:
            raise InvalidInput("max_concurrency", "must be >= 1")
        if self.penalty_window < 0:
            raise InvalidInput("penalty_window", "must be >= 0")


@dataclass(frozen=True)
class ChatResult:
    """One successful chat completion.

    Attributes:
        text: The assistant message's content (``""`` when the endpoint sent none).
        finish_reason: Why generation stopped (``"stop"``, ``"length"``, ...).
        prompt_tokens: Prompt tokens as reported by the endpoint (0 if not reported).
        completion_tokens: Completion tokens as reported by the endpoint (0 if not reported).
        latency_s: Wall time of the whole call, waiting for a slot and retries included.
        attempts: HTTP attempts this call needed (1 = no retry).
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempts: int

    @property
    def capped(self) -> bool:
        """The answer ran to its token limit: cut off, not finished."""
        return self.finish_reason == "length"

    @property
    def stopped(self) -> bool:
        """The answer was stopped early by the caller's watch (a loop)."""
        return self.finish_reason == STOPPED_EARLY


@dataclass(frozen=True)
class LLMUsage:
    """A snapshot of one client's counters.

    Attributes:
        requests: HTTP requests sent, retries included.
        failed_requests: Requests that did not yield a usable answer.
        retries: Requests that were retries of an earlier failed one.
        prompt_tokens: Prompt tokens reported by successful responses.
        completion_tokens: Completion tokens reported by successful responses.
        capped_answers: Answers that ran to their token limit (finish reason ``"length"``).
        stopped_answers: Answers stopped early by the caller's watch (``STOPPED_EARLY``).
    """

    requests: int
    failed_requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    capped_answers: int = 0
    stopped_answers: int = 0


class LLMRequestError(LLMError):
    """The endpoint rejected the request with a 4xx status that retrying cannot fix.

    Raised after exactly one attempt; ``last_status`` holds the status (400, 401, 404, ...).
    """


class _MalformedResponseError(Exception):
    """A 200 answer whose body is not the expected JSON document."""


class AdaptiveLimit:
    """A concurrency limit that shrinks when the endpoint is overloaded and grows back.

    It starts at ``ceiling``. A 429 or a timeout halves it (never below 1); an answer that took
    more than half the timeout lowers it by one (a CPU endpoint serving more requests at once
    only answers each more slowly, until they time out together); after as many quick answers
    in a row as the current limit it grows by one, up to ``ceiling`` again.
    """

    def __init__(self, ceiling: int) -> None:
        """Allow up to ``ceiling`` holders at once."""
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_use = 0
        self._streak = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        """Wait for a free place."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.limit)
            self.in_use += 1

    async def __aexit__(self, *exc: object) -> None:
        """Give the place back and wake waiters (the limit may have moved)."""
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()

    def throttled(self) -> None:
        """The endpoint said 429, or timed out: halve the limit."""
        self.limit = max(1, self.limit // 2)
        self._streak = 0

    def slowed(self) -> None:
        """An answer came, but slowly: lower the limit by one."""
        self.limit = max(1, self.limit - 1)
        self._streak = 0

    def succeeded(self) -> None:
        """One request went through: maybe grow the limit by one."""
        self._streak += 1
        if self.limit < self.ceiling and self._streak >= self.limit:
            self.limit += 1
            self._streak = 0


@dataclass
class UsageCounters:
    """Running totals of LLM requests and tokens (a client's, or one job's)."""

    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    capped_answers: int = 0
    stopped_answers: int = 0

    def add(self, result: ChatResult | None, attempts: int, ok: bool) -> None:
        """Count one call of ``attempts`` attempts (its tokens when a result came back)."""
        self.requests += attempts
        self.retries += max(0, attempts - 1)
        self.failed_requests += attempts - (1 if ok else 0)
        if result is not None:
            self.add_answer(result)

    def add_answer(self, result: ChatResult) -> None:
        """Count one answer's tokens, and whether it was capped or stopped early."""
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.capped_answers += result.capped
        self.stopped_answers += result.stopped

    def snapshot(self) -> LLMUsage:
        """The counts as they are now, frozen."""
        return LLMUsage(**asdict(self))


def _safe_url(url: str) -> str:
    """Return ``url`` without user info, query or fragment, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _parse_retry_after(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header (delta seconds or HTTP date) into seconds, if possible."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """Shorten ``text`` to one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _parse_chat_completion(body: str) -> tuple[str, str, int, int]:
    """Extract ``(text, finish_reason, prompt_tokens, completion_tokens)`` from a response body.

    Raises:
        _MalformedResponseError: If the body is not a chat completion.
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise _MalformedResponseError(f"body is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise _MalformedResponseError("body is not a JSON object")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _MalformedResponseError("no choices in body")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise _MalformedResponseError("no message in first choice")
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise _MalformedResponseError("message content is not a string")
    finish_reason = choices[0].get("finish_reason")
    usage = doc.get("usage")
    prompt_tokens = completion_tokens = 0
    if isinstance(usage, dict):
        prompt_tokens = _as_count(usage.get("prompt_tokens"))
        completion_tokens = _as_count(usage.get("completion_tokens"))
    return content, str(finish_reason or "unknown"), prompt_tokens, completion_tokens


def _as_count(value: object) -> int:
    """Return ``value`` as a non-negative int, 0 when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def _parse_model_list(body: str) -> list[str]:
    """Extract model ids from a ``GET /models`` body.

    Raises:
        _MalformedResponseError: If the body is not a model list.
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise _MalformedResponseError(f"body is not JSON ({exc.__class__.__name__})") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise _MalformedResponseError("no data list in body")
    ids = [item.get("id") for item in data if isinstance(item, dict)]
    return [i for i in ids if isinstance(i, str)]


def _first_json_object(text: str) -> str | None:
    """Return the first balanced ``{...}`` in ``text`` (string-aware), or None."""
    start = text.find("{")
    while start != -1:
        depth = 0
        in_string = False
        escaped = False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None


def extract_json(text: str) -> Any:
    """Parse the JSON value an LLM answered with, tolerating fences and surrounding prose.

    Tries, in order: the whole text, the first fenced code block, the first balanced
    ``{...}`` object.

    Args:
        text: The model's answer.

    Returns:
        The parsed JSON value.

    Raises:
        LLMOutputError: If no JSON value can be found; the message carries a short excerpt.
    """
    candidates = [text.strip()]
    fenced = _FENCED_RE.search(text)
    if fenced:
        candidates.append(fenced.group(1).strip())
    obj = _first_json_object(text)
    if obj is not None:
        candidates.append(obj)
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise LLMOutputError(f"LLM answer is not JSON: {_excerpt(text)!r}")


def _validator(schema: Mapping[str, Any], field: str) -> Any:
    """A validator for ``schema``; InvalidInput naming ``field`` if it is no schema."""
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(field, _excerpt(exc.message)) from None
    return validator_cls(schema)


def _with_schema_instruction(
    messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Return a copy of ``messages`` whose system message asks for JSON matching ``schema``."""
    instruction = _SCHEMA_INSTRUCTION + json.dumps(schema, sort_keys=True)
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        content = out[0].get("content") or ""
        out[0]["content"] = f"{content}\n\n{instruction}" if content else instruction
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out


def _check_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Validate chat messages and return them as plain dicts.

    Raises:
        InvalidInput: If the list is empty or a message lacks ``role`` or ``content``.
    """
    if not messages:
        raise InvalidInput("messages", "must not be empty")
    out: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise InvalidInput(f"messages[{i}]", "needs string 'role' and 'content'")
        out.append(dict(message))
    return out


async def _read_stream(
    lines: AsyncIterator[str], stop_when: Callable[[str], bool], prompt_estimate: int
) -> str:
    """Read server-sent chat completion chunks into one completion body (see ``_streamed``).

    Leaving early (``stop_when``) closes the stream. A cut answer's usage (the endpoint tells it
    only at the end) is estimated: its chunks as completion tokens (about one token each),
    ``prompt_estimate`` as prompt tokens.

    Raises:
        LLMOutputError: The endpoint could not read its own answer (as ``_OUTPUT_REJECTED``).
        _MalformedResponseError: A chunk is not JSON, the stream reports another error, or
            it broke off (each retried like a bad response).
    """
    text, pieces = "", 0
    finish: str | None = None
    usage: Any = None
    unread = aiter(lines)
    while True:
        try:
            line = await anext(unread)
        except StopAsyncIteration:
            break
        except Exception as exc:  # the SDK leaves a broken stream's transport error raw
            raise _MalformedResponseError(f"the stream broke off ({type(exc).__name__})") from None
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _MalformedResponseError("a streamed chunk is not JSON") from None
        if not isinstance(chunk, dict):
            raise _MalformedResponseError("a streamed chunk is not a JSON object")
        if "error" in chunk:
            detail = _excerpt(str(chunk["error"]))
            if _OUTPUT_REJECTED.search(detail):
                raise LLMOutputError(f"the endpoint could not read the model's answer: {detail}")
            raise _MalformedResponseError(f"the stream ended with an error: {detail}")
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                piece = str((choice.get("delta") or {}).get("content") or "")
                text, pieces = text + piece, pieces + bool(piece)
                finish = choice.get("finish_reason") or finish
        if finish is None and stop_when(text):
            finish = STOPPED_EARLY
            usage = {"prompt_tokens": prompt_estimate, "completion_tokens": pieces}
            break
    message = {"content": text}
    return json.dumps({"choices": [{"message": message, "finish_reason": finish}], "usage": usage})


class LLMClient:
    """Async client for one OpenAI-compatible endpoint, with retries, limits and accounting.

    Example:
        >>> async with LLMClient(LLMConfig(base_url="http://127.0.0.1:8089/v1")) as llm:
        ...     result = await llm.chat([{"role": "user", "content": "Hi"}])
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Create a client; no connection is made until the first request.

        Args:
            config: Endpoint and limits.
            sleep: Awaitable used for backoff delays (injectable for tests).
        """
        self._config = config
        self._sleep = sleep
        self._endpoint = _safe_url(config.base_url)
        self._semaphore = AdaptiveLimit(config.max_concurrency)
        self._counters = UsageCounters()
        self._supports_response_format: bool | None = None
        # Prompt tokens the endpoint counted per token of ``prompt_token_bound`` (a generous
        # bound), from the last whole answer: a cut answer's prompt is estimated by it.
        self._prompt_share = 1.0
        self._closed = False
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=config.timeout_s,
            max_retries=0,
            # trust_env=False: no proxy settings are picked up from the environment.
            http_client=openai.DefaultAsyncHttpxClient(trust_env=False, timeout=config.timeout_s),
        )

    def __repr__(self) -> str:
        """Describe the client without its key."""
        return f"LLMClient(endpoint={self._endpoint!r}, model={self._config.model!r})"

    @property
    def config(self) -> LLMConfig:
        """The configuration this client was built with."""
        return self._config

    @property
    def usage(self) -> LLMUsage:
        """A snapshot of this client's request and token counters."""
        return self._counters.snapshot()

    async def __aenter__(self) -> Self:
        """Return the client itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying HTTP connections; calling it twice is harmless."""
        if not self._closed:
            self._closed = True
            await self._client.close()

    async def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        budget: Budget | None = None,
    ) -> ChatResult:
        """Send one chat completion request, retrying transient failures.

        Args:
            messages: Chat messages, each with ``role`` and ``content``.
            temperature: Sampling temperature.
            max_tokens: Upper bound for generated tokens.
            seed: Sampling seed, sent only when given.
            stop: Stop sequences, sent only when given.
            budget: Shared request/token budget; every attempt reserves from it first.

        Returns:
            The answer with its token counts, latency and attempt count.

        Raises:
            InvalidInput: If the arguments are malformed.
            BudgetExhausted: If the budget cannot cover another attempt.
            LLMRequestError: If the endpoint answers a non-retryable 4xx.
            LLMError: If every attempt failed.
        """
        return await self._chat(
            _check_messages(messages),
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
            response_format=None,
            budget=budget,
        )

    async def chat_json(
        self,
        messages: Sequence[Mapping[str, str]],
        schema: Mapping[str, Any],
        *,
        name: str = "output",
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int | None = None,
        budget: Budget | None = None,
        frequency_penalty: float = 0.0,
        check: Mapping[str, Any] | None = None,
        stop_when: Callable[[str], bool] | None = None,
    ) -> tuple[Any, ChatResult]:
        """Ask for a JSON answer matching ``schema`` and return it parsed and validated.

        Uses ``response_format`` (``json_schema``, strict) while the endpoint accepts it. The
        first time the endpoint answers 400/422 to such a request, the client remembers that it
        does not support it and from then on puts the schema into the system message instead.

        Args:
            messages: Chat messages, each with ``role`` and ``content``.
            schema: A JSON schema the answer must satisfy.
            name: Schema name sent in ``response_format``.
            temperature: Sampling temperature.
            max_tokens: Upper bound for generated tokens.
            seed: Sampling seed, sent only when given.
            budget: Shared request/token budget; every attempt reserves from it first.
            frequency_penalty: OpenAI's penalty on tokens already written (a small model's
                loops and rambles), sent only when not zero (with the config's
                ``penalty_window`` where set).
            check: The schema the answer is validated against where it differs from the one
                sent (a pattern written as llama.cpp's grammar reads it); default ``schema``.
            stop_when: Called with the answer so far as it streams in; once it returns True
                the request is dropped and the answer ends there, with finish reason
                ``STOPPED_EARLY`` (so it fails the schema). An endpoint that answers whole
                instead of streaming is read as usual.

        Returns:
            ``(value, result)``: the parsed JSON value and the raw chat result.

        Raises:
            InvalidInput: If the messages or the schema are malformed.
            LLMOutputError: If the answer is not JSON or does not match the schema.
            LLMRequestError: If the endpoint answers a non-retryable 4xx.
            LLMError: If every attempt failed.
        """
        checked = _check_messages(messages)
        sent = _validator(schema, "schema")  # valid even where `check` reads the answer
        validator = sent if check is None else _validator(check, "check")

        result: ChatResult | None = None
        rejected = False
        if self._supports_response_format is not False:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": dict(schema), "strict": True},
            }
            try:
                result = await self._chat(
                    checked,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=seed,
                    stop=None,
                    response_format=response_format,
                    budget=budget,
                    frequency_penalty=frequency_penalty,
                    stop_when=stop_when,
                )
                self._supports_response_format = True
            except LLMRequestError as exc:
                if exc.last_status not in _NO_RESPONSE_FORMAT_STATUSES:
                    raise
                rejected = True
                logger.warning(
                    "LLM endpoint %s rejected response_format (HTTP %s); "
                    "falling back to a schema in the system message",
                    self._endpoint,
                    exc.last_status,
                )
        if result is None:
            result = await self._chat(
                # In words the model reads as the answer is read, not as a grammar would.
                _with_schema_instruction(checked, schema if check is None else check),
                temperature=temperature,
                max_tokens=max_tokens,
                seed=seed,
                stop=None,
                response_format=None,
                budget=budget,
                frequency_penalty=frequency_penalty,
                stop_when=stop_when,
            )
            if rejected:
                # Only now is it clear the 400 was about response_format, not the request.
                self._supports_response_format = False

        try:
            value = extract_json(result.text)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "<root>"
                raise LLMOutputError(
                    f"LLM answer does not match the schema at {where}: {_excerpt(error.message)}"
                )
        except LLMOutputError as exc:
            exc.result = result  # what the call cost, for the caller's accounting
            raise
        return value, result

    async def list_models(self) -> list[str]:
        """List the model ids the endpoint serves (``GET /models``).

        Returns:
            Model ids in the endpoint's order.

        Raises:
            LLMRequestError: If the endpoint answers a non-retryable 4xx.
            LLMError: If every attempt failed.
        """

        async def send() -> str:
            raw = await self._client.models.with_raw_response.list()
            return raw.http_response.text

        models, _ = await self._with_retries(send, _parse_model_list)
        return models

    async def _chat(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        seed: int | None,
        stop: Sequence[str] | None,
        response_format: dict[str, Any] | None,
        budget: Budget | None = None,
        frequency_penalty: float = 0.0,
        stop_when: Callable[[str], bool] | None = None,
    ) -> ChatResult:
        """Send a chat completion with retries and turn it into a :class:`ChatResult`."""
        if max_tokens < 1:
            raise InvalidInput("max_tokens", "must be >= 1")
        kwargs: dict[str, Any] = {
            "model": self._config.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if seed is not None:
            kwargs["seed"] = seed
        if stop:
            kwargs["stop"] = list(stop)
        if response_format is not None:
            kwargs["response_format"] = response_format
        if frequency_penalty:
            kwargs["frequency_penalty"] = frequency_penalty
            if self._config.penalty_window:
                kwargs["extra_body"] = {"repeat_last_n": self._config.penalty_window}

        worst_prompt = prompt_token_bound(messages)

        async def send() -> str:
            if stop_when is not None:
                estimate = round(worst_prompt * self._prompt_share)
                return await self._streamed(kwargs, stop_when, estimate)
            raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
            return raw.http_response.text

        started = time.monotonic()
        parsed, attempts = await self._with_retries(
            send,
            _parse_chat_completion,
            budget=budget,
            worst_tokens=(worst_prompt, max_tokens),
            used_tokens=lambda p: p[2] + p[3],
        )
        text, finish_reason, prompt_tokens, completion_tokens = parsed
        if finish_reason != STOPPED_EARLY and prompt_tokens and worst_prompt:
            self._prompt_share = min(1.0, prompt_tokens / worst_prompt)
        result = ChatResult(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.monotonic() - started,
            attempts=attempts,
        )
        self._counters.add_answer(result)
        return result

    async def _streamed(
        self, kwargs: dict[str, Any], stop_when: Callable[[str], bool], prompt_estimate: int
    ) -> str:
        """The answer streamed, as a whole chat completion's body; cut once ``stop_when``."""
        async with self._client.chat.completions.with_streaming_response.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        ) as response:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                return await response.text()  # an endpoint that answers whole
            return await _read_stream(response.iter_lines(), stop_when, prompt_estimate)

    def _backoff(self, retry: int) -> float:
        """Return the jittered delay before retry number ``retry`` (1-based)."""
        cfg = self._config
        base = min(cfg.backoff_max_s, cfg.backoff_initial_s * (2 ** (retry - 1)))
        return base * random.uniform(0.5, 1.0)  # jitter, not security

    def _scrub(self, text: str) -> str:
        """Remove the api key from ``text`` should an endpoint ever echo it."""
        key = self._config.api_key
        return text.replace(key, "***") if len(key) >= 8 else text

    async def _with_retries(
        self,
        send: Callable[[], Awaitable[str]],
        parse: Callable[[str], _T],
        *,
        budget: Budget | None = None,
        worst_tokens: tuple[int, int] = (0, 0),
        used_tokens: Callable[[_T], int] = lambda _: 0,
    ) -> tuple[_T, int]:
        """Run ``send`` and ``parse`` its body, retrying transient failures.

        With a ``budget``, each attempt first reserves ``worst_tokens`` (prompt bound, completion
        limit) and settles to ``used_tokens(parsed)`` (0 for a failed attempt).

        Returns:
            The parsed value and the number of attempts made.
        """
        cfg = self._config
        max_attempts = cfg.max_retries + 1
        last_status: int | None = None
        reason = "no attempt made"
        for attempt in range(1, max_attempts + 1):
            reservation = budget.reserve(*worst_tokens) if budget is not None else None
            if attempt > 1:
                self._counters.retries += 1
            self._counters.requests += 1
            retry_after: float | None = None
            used = 0
            async with self._semaphore:
                try:
                    sent = time.monotonic()
                    async with asyncio.timeout(cfg.timeout_s):
                        body = await send()
                    value = parse(body)
                    used = used_tokens(value)
                    if time.monotonic() - sent > SLOW_SHARE * cfg.timeout_s:
                        self._semaphore.slowed()
                    else:
                        self._semaphore.succeeded()
                    return value, attempt
                except openai.APIStatusError as exc:
                    self._counters.failed_requests += 1
                    last_status = exc.status_code
                    detail = self._scrub(_excerpt(_STATUS_PREFIX.sub("", str(exc.message))))
                    reason = f"HTTP {last_status}: {detail}"
                    if last_status >= 500 and _OUTPUT_REJECTED.search(detail):
                        raise LLMOutputError(
                            f"LLM endpoint {self._endpoint} could not read the model's answer: "
                            f"{reason}"
                        ) from None
                    if last_status not in _RETRYABLE_STATUSES and last_status < 500:
                        raise LLMRequestError(
                            f"LLM endpoint {self._endpoint} rejected the request after "
                            f"{attempt} attempt(s): {reason}",
                            attempts=attempt,
                            last_status=last_status,
                        ) from None
                    if last_status in _RETRY_AFTER_STATUSES:
                        retry_after = _parse_retry_after(exc.response.headers.get("retry-after"))
                except (openai.APITimeoutError, TimeoutError):
                    self._counters.failed_requests += 1
                    last_status = None
                    reason = f"timeout after {cfg.timeout_s:g}s"
                except openai.APIConnectionError as exc:
                    self._counters.failed_requests += 1
                    last_status = None
                    cause = exc.__cause__
                    reason = "connection error" + (
                        f" ({cause.__class__.__name__})" if cause is not None else ""
                    )
                except _MalformedResponseError as exc:
                    self._counters.failed_requests += 1
                    last_status = 200
                    reason = f"malformed response: {exc}"
                finally:
                    if reservation is not None and budget is not None:
                        budget.settle(reservation, used)
            if last_status == 429 or reason.startswith("timeout"):
                self._semaphore.throttled()
            if attempt == max_attempts:
                break
            delay = self._backoff(attempt)
            if retry_after is not None:
                delay = min(retry_after, cfg.backoff_max_s)
            logger.warning(
                "LLM request to %s failed (%s); attempt %d/%d, retrying in %.2fs",
                self._endpoint,
                reason,
                attempt,
                max_attempts,
                delay,
            )
            await self._sleep(delay)
        raise LLMError(
            f"LLM endpoint {self._endpoint} failed after {max_attempts} attempt(s); last: {reason}",
            attempts=max_attempts,
            last_status=last_status,
        )
