"""LLMClient against a deliberately faulty OpenAI-compatible endpoint on 127.0.0.1.

The endpoint is a real HTTP server (aiohttp) on a loopback port, scripted per test with a queue of
behaviours. It is a stand-in for failure modes, not for a real LLM: every assertion is about what
the client did, measured at the server (requests seen, bodies, timestamps, requests in flight).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from p2m.common.budget import Budget
from p2m.common.errors import BudgetExhausted, LLMError, LLMOutputError
from p2m.common.llm import (
    ChatResult,
    LLMClient,
    LLMConfig,
    LLMRequestError,
    LLMUsage,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET_KEY = "sk-secret-xyz"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative"]},
        "score": {"type": "number"},
    },
    "required": ["label", "score"],
    "additionalProperties": False,
}
GOOD_JSON = '{"label": "positive", "score": 0.9}'
SCHEMA_MARKER = "Answer with one JSON object matching this JSON schema: "
USER = [{"role": "user", "content": "Classify: I love it."}]


# --------------------------------------------------------------------------- the faulty endpoint


@dataclass(frozen=True)
class Step:
    """One scripted answer: ok, HTTP status, slow, or malformed 200."""

    kind: str
    content: str = "ok"
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    body: str = ""
    prompt_tokens: int = 5
    completion_tokens: int = 2


def ok(content: str = "ok", prompt_tokens: int = 5, completion_tokens: int = 2) -> Step:
    return Step(
        "ok", content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


def status(code: int, retry_after: str | None = None, message: str = "") -> Step:
    return Step("status", status=code, retry_after=retry_after, body=message)


def slow(delay_s: float) -> Step:
    return Step("slow", delay_s=delay_s, content="too late")


def malformed(body: str = '{"choices": [') -> Step:
    return Step("malformed", body=body)


@dataclass
class Seen:
    """A request as the server received it."""

    t: float
    method: str
    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class FaultyEndpoint:
    """A deliberately faulty endpoint speaking the OpenAI chat API on a loopback port.

    Each request takes the next scripted :class:`Step` (``ok`` once the script is empty). It records
    every request and the highest number of requests in flight at once.
    """

    script: deque[Step] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    hold_s: float = 0.0
    reject_response_format: bool = False
    base_url: str = ""

    def reset(self) -> None:
        self.script.clear()
        self.seen.clear()
        self.max_in_flight = 0
        self.hold_s = 0.0
        self.reject_response_format = False

    def push(self, *steps: Step) -> None:
        self.script.extend(steps)

    def bodies(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen]

    async def drain(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        self.seen.append(
            Seen(
                t=time.monotonic(),
                method=request.method,
                path=request.path,
                body=body,
                authorization=request.headers.get("Authorization"),
            )
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.json()
            self._record(request, body)
            if self.hold_s:
                await asyncio.sleep(self.hold_s)
            if self.reject_response_format and "response_format" in body:
                return web.json_response(
                    {"error": {"message": "response_format is not supported"}}, status=400
                )
            step = self.script.popleft() if self.script else ok()
            return await self._answer(step, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, step: Step, body: dict[str, Any]) -> web.StreamResponse:
        if step.kind == "status":
            headers = {"Retry-After": step.retry_after} if step.retry_after else None
            return web.json_response(
                {"error": {"message": step.body or f"scripted {step.status}"}},
                status=step.status,
                headers=headers,
            )
        if step.kind == "malformed":
            return web.Response(text=step.body, content_type="application/json")
        if step.kind == "slow":
            await asyncio.sleep(step.delay_s)
        return web.json_response(
            {
                "id": "chatcmpl-faulty",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "?"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": step.content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": step.prompt_tokens,
                    "completion_tokens": step.completion_tokens,
                    "total_tokens": step.prompt_tokens + step.completion_tokens,
                },
            }
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self._record(request, {})
        step = self.script.popleft() if self.script else ok()
        if step.kind != "ok":
            return await self._answer(step, {})
        data = [{"id": "tiny-1", "object": "model"}, {"id": "tiny-2", "object": "model"}]
        return web.json_response({"object": "list", "data": data})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def faulty_server() -> AsyncIterator[FaultyEndpoint]:
    endpoint = FaultyEndpoint()
    runner = web.AppRunner(endpoint.app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    assert host == "127.0.0.1"
    endpoint.base_url = f"http://127.0.0.1:{port}/v1"
    yield endpoint
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def endpoint(faulty_server: FaultyEndpoint) -> FaultyEndpoint:
    await faulty_server.drain()  # slow handlers of an earlier test must not skew in-flight counts
    faulty_server.reset()
    return faulty_server


class RecordingSleep:
    """Stands in for asyncio.sleep: records each backoff delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def make_config(endpoint: FaultyEndpoint, **overrides: Any) -> LLMConfig:
    settings: dict[str, Any] = {
        "base_url": endpoint.base_url,
        "model": "tiny",
        "timeout_s": 5.0,
        "max_retries": 3,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "max_concurrency": 4,
    }
    settings.update(overrides)
    return LLMConfig(**settings)


# --------------------------------------------------------------------------------------- retries


async def test_5xx_twice_then_ok_is_retried_and_counted(endpoint: FaultyEndpoint) -> None:
    endpoint.push(status(500), status(502), ok("hello", prompt_tokens=7, completion_tokens=3))
    sleep = RecordingSleep()
    async with LLMClient(make_config(endpoint), sleep=sleep) as llm:
        result = await llm.chat(USER)
        usage = llm.usage

    assert isinstance(result, ChatResult)
    assert result.text == "hello"
    assert result.finish_reason == "stop"
    assert result.attempts == 3
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)
    assert len(endpoint.seen) == 3
    assert usage == LLMUsage(
        requests=3, failed_requests=2, retries=2, prompt_tokens=7, completion_tokens=3
    )
    assert len(sleep.delays) == 2
    assert all(0 < d <= 0.05 for d in sleep.delays)


async def test_a_500_for_output_the_server_could_not_parse_is_not_retried(
    endpoint: FaultyEndpoint,
) -> None:
    unreadable = "The model produced output that does not match the expected peg-native format"
    endpoint.push(status(500, message=unreadable), ok("never reached"))
    async with LLMClient(make_config(endpoint)) as llm:
        with pytest.raises(LLMOutputError, match="could not read the model's answer"):
            await llm.chat_json(USER, {"type": "object"})
        usage = llm.usage
    assert len(endpoint.seen) == 1  # the same request would cost as much and fail alike
    assert usage.requests == 1 and usage.retries == 0


async def test_backoff_grows_with_jitter_and_is_capped(endpoint: FaultyEndpoint) -> None:
    endpoint.push(*[status(500)] * 7)
    sleep = RecordingSleep()
    cfg = make_config(endpoint, max_retries=6, backoff_initial_s=1.0, backoff_max_s=4.0)
    async with LLMClient(cfg, sleep=sleep) as llm:
        with pytest.raises(LLMError):
            await llm.chat(USER)

    assert len(endpoint.seen) == 7
    assert len(sleep.delays) == 6
    assert all(0 < d <= 4.0 for d in sleep.delays)
    assert sleep.delays[0] <= 1.0  # first retry: about the initial backoff
    assert max(sleep.delays[3:]) > 1.0  # later retries: grown, but capped above
    assert len(set(sleep.delays)) > 1


async def test_429_retry_after_is_honoured_at_the_server(endpoint: FaultyEndpoint) -> None:
    endpoint.push(status(429, retry_after="1"), ok("after the wait"))
    async with LLMClient(make_config(endpoint, backoff_max_s=5.0)) as llm:  # real asyncio.sleep
        result = await llm.chat(USER)

    assert result.text == "after the wait"
    assert len(endpoint.seen) == 2
    gap = endpoint.seen[1].t - endpoint.seen[0].t
    assert 0.95 <= gap < 3.0


@pytest.mark.parametrize(
    ("code", "retry_after", "expected"),
    [(503, "0.3", 0.3), (429, "100", 0.5), (429, "not-a-number", None)],
)
async def test_retry_after_parsed_and_capped(
    endpoint: FaultyEndpoint, code: int, retry_after: str, expected: float | None
) -> None:
    endpoint.push(status(code, retry_after=retry_after), ok())
    sleep = RecordingSleep()
    async with LLMClient(make_config(endpoint, backoff_max_s=0.5), sleep=sleep) as llm:
        await llm.chat(USER)

    assert len(endpoint.seen) == 2
    assert len(sleep.delays) == 1
    if expected is None:  # unparseable header: ordinary backoff
        assert 0 < sleep.delays[0] <= 0.01
    else:
        assert sleep.delays[0] == pytest.approx(expected)


async def test_slow_response_times_out_and_is_retried(endpoint: FaultyEndpoint) -> None:
    endpoint.push(slow(1.5), ok("fast enough"))
    async with LLMClient(make_config(endpoint, timeout_s=0.3)) as llm:
        started = time.monotonic()
        result = await llm.chat(USER)
        elapsed = time.monotonic() - started

    assert result.text == "fast enough"
    assert result.attempts == 2
    assert len(endpoint.seen) == 2
    assert elapsed < 1.2  # gave up on the slow one after ~0.3 s, did not wait 1.5 s


async def test_every_attempt_slow_raises_llm_error(endpoint: FaultyEndpoint) -> None:
    endpoint.push(*[slow(1.5)] * 3)
    async with LLMClient(make_config(endpoint, timeout_s=0.3, max_retries=2)) as llm:
        started = time.monotonic()
        with pytest.raises(LLMError) as info:
            await llm.chat(USER)
        elapsed = time.monotonic() - started
        usage = llm.usage

    assert info.value.attempts == 3
    assert info.value.last_status is None
    assert "timeout" in str(info.value)
    assert len(endpoint.seen) == 3
    assert usage.requests == 3 and usage.failed_requests == 3 and usage.retries == 2
    assert elapsed < 2.5


async def test_malformed_200_is_retried(endpoint: FaultyEndpoint) -> None:
    endpoint.push(malformed('{"choices": ['), malformed('{"unexpected": true}'), ok("whole"))
    async with LLMClient(make_config(endpoint)) as llm:
        result = await llm.chat(USER)
        usage = llm.usage

    assert result.text == "whole"
    assert result.attempts == 3
    assert len(endpoint.seen) == 3
    assert usage.failed_requests == 2 and usage.retries == 2


async def test_persistent_500_exhausts_retries_without_leaking_the_key(
    endpoint: FaultyEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="p2m.common.llm")
    endpoint.push(*[status(500)] * 4)
    cfg = make_config(endpoint, api_key=SECRET_KEY, max_retries=3)
    secret_prompt = [{"role": "user", "content": "TOP-SECRET-PROMPT"}]
    async with LLMClient(cfg) as llm:
        with pytest.raises(LLMError) as info:
            await llm.chat(secret_prompt)
        client_repr = repr(llm)

    err = info.value
    assert err.attempts == 4
    assert err.last_status == 500
    assert len(endpoint.seen) == 4
    assert endpoint.base_url in str(err)
    assert "4 attempt" in str(err) and "500" in str(err)
    # The key really was sent, so its absence below is not vacuous.
    assert endpoint.seen[0].authorization == f"Bearer {SECRET_KEY}"
    assert SECRET_KEY not in str(err)
    assert SECRET_KEY not in repr(cfg) and SECRET_KEY not in client_repr
    retry_warnings = [r for r in caplog.records if r.name == "p2m.common.llm"]
    assert len(retry_warnings) == 3
    assert all(r.levelno == logging.WARNING for r in retry_warnings)
    assert "HTTP 500: scripted 500" in caplog.text  # the endpoint's own words, for a reader
    assert SECRET_KEY not in caplog.text
    assert "TOP-SECRET-PROMPT" not in caplog.text


async def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleep = RecordingSleep()
    cfg = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_initial_s=0.01)
    async with LLMClient(cfg, sleep=sleep) as llm:
        with pytest.raises(LLMError) as info:
            await llm.chat(USER)

    assert info.value.attempts == 3
    assert info.value.last_status is None
    assert "connection" in str(info.value)
    assert len(sleep.delays) == 2


@pytest.mark.parametrize("code", [400, 401, 404, 422])
async def test_4xx_is_not_retried(endpoint: FaultyEndpoint, code: int) -> None:
    endpoint.push(status(code), ok("must not be reached"))
    sleep = RecordingSleep()
    async with LLMClient(make_config(endpoint), sleep=sleep) as llm:
        with pytest.raises(LLMError) as info:
            await llm.chat(USER)
        usage = llm.usage

    assert isinstance(info.value, LLMRequestError)
    assert info.value.attempts == 1
    assert info.value.last_status == code
    assert len(endpoint.seen) == 1
    assert sleep.delays == []
    assert usage.requests == 1 and usage.failed_requests == 1 and usage.retries == 0


# ----------------------------------------------------------------------------------- concurrency


async def test_concurrency_is_limited_per_client(endpoint: FaultyEndpoint) -> None:
    endpoint.hold_s = 0.3
    async with LLMClient(make_config(endpoint, max_concurrency=2)) as llm:
        started = time.monotonic()
        results = await asyncio.gather(
            *(llm.chat([{"role": "user", "content": f"q{i}"}]) for i in range(6))
        )
        elapsed = time.monotonic() - started

    assert [r.text for r in results] == ["ok"] * 6
    assert len(endpoint.seen) == 6
    assert endpoint.max_in_flight == 2
    assert elapsed >= 0.85  # three waves of two


async def test_slot_is_not_held_while_backing_off(endpoint: FaultyEndpoint) -> None:
    endpoint.push(status(503, retry_after="0.6"), ok("b"), ok("a"))
    async with LLMClient(make_config(endpoint, max_concurrency=1, backoff_max_s=2.0)) as llm:
        first = asyncio.create_task(llm.chat([{"role": "user", "content": "A"}]))
        await asyncio.sleep(0.1)  # A is now backing off after its 503
        second = await llm.chat([{"role": "user", "content": "B"}])
        a = await first

    senders = [b["messages"][0]["content"] for b in endpoint.bodies()]
    assert senders == ["A", "B", "A"]
    assert second.text == "b" and a.text == "a"
    assert endpoint.seen[1].t - endpoint.seen[0].t < 0.45  # B did not wait for A's backoff


# ------------------------------------------------------------------------------------- chat_json


async def test_chat_json_sends_response_format_when_supported(endpoint: FaultyEndpoint) -> None:
    endpoint.push(ok(GOOD_JSON))
    async with LLMClient(make_config(endpoint)) as llm:
        value, result = await llm.chat_json(USER, SCHEMA, name="sentiment", seed=7)

    assert value == {"label": "positive", "score": 0.9}
    assert result.text == GOOD_JSON
    assert len(endpoint.seen) == 1
    body = endpoint.seen[0].body
    rf = body["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["schema"] == SCHEMA
    assert rf["json_schema"]["name"] == "sentiment"
    assert rf["json_schema"]["strict"] is True
    assert body["messages"] == USER  # no schema text needed when the endpoint enforces it
    assert body["seed"] == 7 and body["model"] == "tiny"


async def test_a_penalty_window_goes_to_llama_cpp_only_with_a_penalty(
    endpoint: FaultyEndpoint,
) -> None:
    for _ in range(3):
        endpoint.push(ok(GOOD_JSON))
    async with LLMClient(make_config(endpoint, penalty_window=256)) as llm:
        await llm.chat_json(USER, SCHEMA, frequency_penalty=0.5)
        await llm.chat_json(USER, SCHEMA)  # no penalty: nothing to window
    async with LLMClient(make_config(endpoint)) as llm:  # an OpenAI endpoint: no such field
        await llm.chat_json(USER, SCHEMA, frequency_penalty=0.5)

    with_window, without_penalty, openai_style = endpoint.bodies()
    assert with_window["frequency_penalty"] == 0.5 and with_window["repeat_last_n"] == 256
    assert "frequency_penalty" not in without_penalty and "repeat_last_n" not in without_penalty
    assert openai_style["frequency_penalty"] == 0.5 and "repeat_last_n" not in openai_style


async def test_chat_json_reads_the_answer_by_its_check_schema_where_one_is_given(
    endpoint: FaultyEndpoint,
) -> None:
    grammar = {**SCHEMA, "properties": {**SCHEMA["properties"], "label": {"type": "string"}}}
    grammar["properties"]["label"]["pattern"] = r'^([^"\\]|\\.)+$'  # on the raw JSON text
    endpoint.push(ok('{"label": "say \\"hi\\"", "score": 1}'))
    endpoint.push(ok('{"label": "neutral", "score": 1}'))
    async with LLMClient(make_config(endpoint)) as llm:
        value, _ = await llm.chat_json(USER, grammar, check={"type": "object"})
        with pytest.raises(LLMOutputError, match="label"):
            await llm.chat_json(USER, grammar, check=SCHEMA)  # not one of the labels

    assert value["label"] == 'say "hi"'  # decoded, it breaks the pattern sent, not the check
    sent = endpoint.bodies()[0]["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["label"]["pattern"] == r'^([^"\\]|\\.)+$'


async def test_chat_json_falls_back_when_response_format_rejected(
    endpoint: FaultyEndpoint,
) -> None:
    endpoint.reject_response_format = True
    endpoint.push(ok(GOOD_JSON), ok('{"label": "negative", "score": 0.2}'))
    messages = [{"role": "system", "content": "You classify sentiment."}, *USER]
    async with LLMClient(make_config(endpoint)) as llm:
        first, _ = await llm.chat_json(messages, SCHEMA)
        second, _ = await llm.chat_json(USER, SCHEMA)  # no system message of its own

    assert first == {"label": "positive", "score": 0.9}
    assert second == {"label": "negative", "score": 0.2}
    bodies = endpoint.bodies()
    assert len(bodies) == 3
    assert "response_format" in bodies[0]
    assert "response_format" not in bodies[1]
    system = bodies[1]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You classify sentiment.")
    assert json.loads(system["content"].split(SCHEMA_MARKER, 1)[1]) == SCHEMA
    assert bodies[1]["messages"][1:] == USER
    # Remembered per client: the later call does not try response_format again.
    assert "response_format" not in bodies[2]
    assert bodies[2]["messages"][0]["role"] == "system"
    assert json.loads(bodies[2]["messages"][0]["content"].split(SCHEMA_MARKER, 1)[1]) == SCHEMA
    assert bodies[2]["messages"][1:] == USER

    # A fresh client starts by trying response_format again.
    endpoint.push(ok(GOOD_JSON))
    async with LLMClient(make_config(endpoint)) as llm:
        await llm.chat_json(USER, SCHEMA)
    assert "response_format" in endpoint.bodies()[3]
    assert "response_format" not in endpoint.bodies()[4]


@pytest.mark.parametrize(
    "content",
    [
        "I cannot do that",
        "{not json at all}",
        '{"label": "positive"}',  # "score" missing
        '{"label": "positive", "score": "high"}',  # wrong type
        '{"label": "meh", "score": 0.5}',  # not in enum
    ],
)
async def test_chat_json_rejects_bad_output(endpoint: FaultyEndpoint, content: str) -> None:
    endpoint.push(ok(content))
    async with LLMClient(make_config(endpoint)) as llm:
        with pytest.raises(LLMOutputError) as info:
            await llm.chat_json(USER, SCHEMA)

    assert len(endpoint.seen) == 1  # an answer that is not JSON is not an endpoint fault
    if content == "I cannot do that":
        assert "I cannot do that" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        'Sure! ```json\n{"label": "positive", "score": 0.9}\n``` Hope that helps.',
        'Here you go: {"label": "positive", "score": 0.9} -- anything else {?}',
        '\n  {"label": "positive", "score": 0.9}  \n',
    ],
)
async def test_chat_json_tolerates_fences_and_prose(endpoint: FaultyEndpoint, content: str) -> None:
    endpoint.push(ok(content))
    async with LLMClient(make_config(endpoint)) as llm:
        value, _ = await llm.chat_json(USER, SCHEMA)

    assert value == {"label": "positive", "score": 0.9}


# ------------------------------------------------------------------------------------ list_models


async def test_list_models_is_retried(endpoint: FaultyEndpoint) -> None:
    endpoint.push(status(503), ok())
    async with LLMClient(make_config(endpoint)) as llm:
        models = await llm.list_models()
        usage = llm.usage

    assert models == ["tiny-1", "tiny-2"]
    assert [(s.method, s.path) for s in endpoint.seen] == [("GET", "/v1/models")] * 2
    assert usage.requests == 2 and usage.retries == 1


# ------------------------------------------------------------------------------ budget, throttling


async def test_budget_counts_retries_and_is_never_exceeded(endpoint: FaultyEndpoint) -> None:
    endpoint.push(status(500), ok(), status(500), ok())
    budget = Budget(max_requests=3)
    async with LLMClient(make_config(endpoint)) as llm:
        await llm.chat(USER, budget=budget)  # 500 then ok: two requests
        with pytest.raises(BudgetExhausted):
            await llm.chat(USER, budget=budget)  # 500 uses the third; the retry is refused
    assert len(endpoint.seen) == 3
    assert budget.requests == 3


async def test_token_budget_reserves_the_worst_case(endpoint: FaultyEndpoint) -> None:
    endpoint.push(ok(prompt_tokens=20, completion_tokens=10), ok())
    messages = [{"role": "user", "content": "x" * 40}]  # bound: 40 bytes + 8 overhead
    budget = Budget(max_tokens=48 + 16 + 30)
    async with LLMClient(make_config(endpoint)) as llm:
        await llm.chat(messages, max_tokens=16, budget=budget)
        assert budget.tokens == 30
        with pytest.raises(BudgetExhausted):  # 30 used + 64 worst case > 94
            await llm.chat(messages, max_tokens=17, budget=budget)
    assert len(endpoint.seen) == 1


async def test_throttling_lowers_the_requests_in_flight_then_recovers(
    endpoint: FaultyEndpoint,
) -> None:
    endpoint.hold_s = 0.1
    endpoint.push(*[status(429, retry_after="0")] * 4)

    async def wave(tag: str, n: int) -> int:
        endpoint.max_in_flight = 0
        await asyncio.gather(
            *(llm.chat([{"role": "user", "content": f"{tag}{i}"}]) for i in range(n))
        )
        return endpoint.max_in_flight

    async with LLMClient(make_config(endpoint, max_concurrency=4, max_retries=6)) as llm:
        first = await wave("a", 4)  # all four answered 429, then retried under a lower limit
        throttled = await wave("b", 6)
        for _ in range(4):
            recovered = await wave("c", 8)
    assert first == 4
    assert len(endpoint.seen) >= 8
    assert throttled < 4
    assert recovered == 4


async def test_slow_answers_and_timeouts_lower_the_requests_in_flight(
    endpoint: FaultyEndpoint,
) -> None:
    # A CPU endpoint answers each request more slowly the more it serves at once: an answer
    # past half the timeout takes a place away, a timeout halves them.
    async def wave(llm: LLMClient, tag: str, n: int) -> int:
        endpoint.max_in_flight = 0
        await asyncio.gather(
            *(llm.chat([{"role": "user", "content": f"{tag}{i}"}]) for i in range(n)),
            return_exceptions=True,
        )
        return endpoint.max_in_flight

    config = make_config(endpoint, max_concurrency=4, max_retries=0, timeout_s=0.6)
    for hold_s in (0.35, 1.0):  # slow answers, then timeouts
        endpoint.hold_s = hold_s
        async with LLMClient(config) as llm:
            first = await wave(llm, "a", 4)
            endpoint.hold_s = 0.05
            after = await wave(llm, "b", 4)
        assert first == 4
        assert after <= 2, hold_s  # down to one, then one more after a quick answer
