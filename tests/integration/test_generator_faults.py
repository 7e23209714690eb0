"""DatasetGenerator against a deliberately faulty endpoint on loopback.

The endpoint answers with a fixed, seeded mix of HTTP 500s, slow answers past the client's
timeout, garbage text and valid examples. It stands in for failure modes only; the real model
is exercised in test_generator_service.py.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from p2m.common.artifacts import ArtifactStore
from p2m.common.errors import BudgetExhausted, Unavailable
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.types import Example, TaskSpec
from p2m.generator.engine import DatasetGenerator
from p2m.generator.options import GenerateOptions

pytestmark = pytest.mark.asyncio(loop_scope="module")

TASK = TaskSpec("Name a colour.", (Example("sky", "blue"), Example("grass", "green")))


class FaultyTeacher:
    """Scripted by ``mix``: shares of "error", "slow", "garbage" and "good" answers."""

    def __init__(self) -> None:
        self.mix = {"good": 1.0}
        self.requests = 0
        self.rng = random.Random(0)

    async def chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        kind = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if kind == "error":
            return web.json_response({"error": "boom"}, status=500)
        if kind == "slow":
            await asyncio.sleep(1.0)
        if kind == "garbage":
            content = "I am sorry, I cannot help with that."
        elif "output" in json.dumps(body["response_format"]["json_schema"]["schema"]["required"]):
            required = body["response_format"]["json_schema"]["schema"]["required"]
            n = self.requests
            content = json.dumps(
                {"output": f"colour {n % 3}"}
                if required == ["output"]
                else {"input": f"thing number {n} {self.rng.random()}", "output": f"colour {n % 3}"}
            )
        usage = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
        return web.json_response(
            {
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": usage,
            }
        )  # fmt: skip


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def teacher() -> AsyncIterator[tuple[FaultyTeacher, str]]:
    faulty = FaultyTeacher()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", faulty.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield faulty, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


def _generator(base_url: str, tmp_path: Path) -> tuple[DatasetGenerator, LLMClient]:
    config = LLMConfig(
        base_url=base_url, timeout_s=0.5, max_retries=2, backoff_initial_s=0.01,
        backoff_max_s=0.02, max_concurrency=8,
    )  # fmt: skip
    client = LLMClient(config)
    store = ArtifactStore(tmp_path / "artifacts")
    return DatasetGenerator(client, store, tmp_path / "work", "faulty"), client


async def test_mixed_faults_finish_within_the_request_budget(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"error": 0.3, "slow": 0.1, "garbage": 0.2, "good": 0.4}
    faulty.requests = 0
    generator, client = _generator(base_url, tmp_path)
    options = GenerateOptions(num_examples=500, batch_size=8, max_requests=60, seed=1)
    async with client:
        result = await generator.generate(TASK, options)
    report = result.report
    assert faulty.requests <= 60  # the budget held at the endpoint, retries included
    assert report.stop_reason == "budget_exhausted"
    assert 0 < report.accepted < 500
    assert report.dropped["unparseable"] > 0
    assert report.usage.failed_requests > 0 and report.usage.retries > 0
    assert report.usage.requests <= 60
    assert result.rows["train"] + result.rows["validation"] == report.accepted


async def test_token_budget_is_never_exceeded(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"good": 1.0}
    generator, client = _generator(base_url, tmp_path)
    options = GenerateOptions(num_examples=500, max_tokens=3000, max_new_tokens=64, seed=2)
    async with client:
        result = await generator.generate(TASK, options)
    used = result.report.usage.prompt_tokens + result.report.usage.completion_tokens
    assert 0 < used <= 3000
    assert result.report.stop_reason == "budget_exhausted"


async def test_nothing_usable_is_a_clear_error(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"garbage": 1.0}
    generator, client = _generator(base_url, tmp_path)
    async with client:
        with pytest.raises(Unavailable, match="nothing usable"):
            await generator.generate(TASK, GenerateOptions(num_examples=5, batch_size=4))


async def test_endpoint_down_is_a_clear_error_and_keeps_nothing_half_done(tmp_path: Path):
    generator, client = _generator("http://127.0.0.1:9/v1", tmp_path)
    async with client:
        with pytest.raises(Unavailable, match="every request of the round failed"):
            await generator.generate(TASK, GenerateOptions(num_examples=5, batch_size=4))


async def test_budget_too_small_for_any_example(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"good": 1.0}
    generator, client = _generator(base_url, tmp_path)
    async with client:
        with pytest.raises(BudgetExhausted):
            await generator.generate(TASK, GenerateOptions(num_examples=5, max_tokens=10))
