"""Kill `p2m generate` mid-run, run it again: it resumes and asks the endpoint nothing twice.

The CLI talks to the real SmolLM2 endpoint through a recording proxy on loopback (a test tool
that forwards every request unchanged and keeps its body), so what reached the endpoint across
both runs can be compared.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support import REPO, ServiceProcess, free_port

NUM = 8


class RecordingProxy:
    """Forwards /v1/* to the real endpoint and records each chat request body."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.bodies: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession()
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.path.endswith("/chat/completions"):
            self.bodies.append(body.decode())
        url = self.upstream + request.path[len("/v1") :]
        async with self._session.request(
            request.method, url, data=body, headers={"Content-Type": "application/json"}
        ) as reply:
            return web.Response(  # a streamed answer whole, as text/event-stream
                body=await reply.read(), status=reply.status, content_type=reply.content_type
            )

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def proxy(local_llm: ServiceProcess) -> Iterator[RecordingProxy]:
    with RecordingProxy(local_llm.base_url) as running:
        yield running


def _command(prompt: Path, data_dir: Path, base_url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "p2m",
        "generate",
        "--prompt-file",
        str(prompt),
        "--num-examples",
        str(NUM),
        "--data-dir",
        str(data_dir),
        "--llm-base-url",
        base_url,
        "--llm-model",
        "smollm2",
        "--self-consistency",
        "2",
        "--concurrency",
        "2",
        "--batch-size",
        "4",
        "--seed",
        "11",
        "--json",
        "--no-check-invariants",  # SmolLM2 rarely keeps the Temporal demonstrations' form
        "--max-output-share",  # and answers "N/A" to most inputs: the cap would stall it
        "0",
    ]


@pytest.mark.timeout(900)  # two real generations; slow when the 2 cores are shared
def test_killed_generation_resumes_without_repeating_requests(
    proxy: RecordingProxy, paper_prompts, tmp_path: Path
):
    prompt = tmp_path / "temporal.txt"
    prompt.write_text(paper_prompts["temporal"]["full_prompt"])
    data_dir = tmp_path / "data"
    command = _command(prompt, data_dir, proxy.base_url)
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    examples: list[Path] = []
    while time.monotonic() < deadline and first.poll() is None:
        examples = list((data_dir / "cache" / "generate").glob("*/examples.jsonl"))
        if examples and len(examples[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the first run ended before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    sent_before = list(proxy.bodies)
    kept = len(examples[0].read_text().splitlines())
    assert 3 <= kept < NUM

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["accepted"] == NUM
    assert report["resumed_from"] >= kept
    rows = [json.loads(line) for line in examples[0].read_text().splitlines()]
    assert len(rows) == NUM
    assert len({r["id"] for r in rows}) == NUM
    assert len({r["input"] for r in rows}) == NUM
    # Nothing the first run sent was sent again: every request went to the endpoint once.
    sent_after = proxy.bodies[len(sent_before) :]
    assert sent_after
    assert not set(sent_before) & set(sent_after)
    assert len(set(proxy.bodies)) == len(proxy.bodies)
