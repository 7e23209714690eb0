"""Every stage's command run the way a newcomer runs it: from a fresh working folder (its path
has a space), no ``P2M_*`` setting at all, so the data dir is the default, relative ``.p2m``.

Each command gets a tiny budget and is checked against what its ``--help`` promises. Training
is the command Ray's storage once broke on (issue 17: a relative data dir whose path has a
space); the default data dir here is both. ``p2m up``/``run``/``down`` are tried the same way in
``test_local_stack.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, free_port, seed_catalog_index

PROMPT = REPO / "examples" / "sentiment.txt"
# One step of training on the person's rows (rows.jsonl in the working folder).
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TRAIN = (
    "train",
    "--data",
    "rows.jsonl",
    "--base-model",
    SMOLLM2,
    "--epochs",
    "1",
    "--max-steps",
    "1",
)
ROWS = [
    {"input": f"review {i}: {'a great' if i % 2 else 'an awful'} film", "output": label}
    for i, label in enumerate(["negative", "positive"] * 6)
]


def newcomer_env() -> dict[str, str]:
    """The environment with no p2m setting (offline and telemetry switches kept)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("P2M_")}


def p2m(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """`p2m ARGS` run from ``cwd`` as a newcomer would."""
    return subprocess.run(
        [sys.executable, "-m", "p2m", *args],
        cwd=cwd,
        env={**newcomer_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def p2m_json(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """`p2m ARGS --json` from ``cwd``: it exits 0 and prints one JSON value."""
    return json.loads(ok(p2m(cwd, *args, "--json", env=env)))


def get(url: str, body: dict[str, object] | None = None, timeout: float = 60) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return bytes(reply.read())


def wait_for(url: str, process: subprocess.Popen[str], timeout_s: float = 180) -> None:
    """Poll ``url`` until it answers 200 (fail early if ``process`` exits)."""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s} s")


def background(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "p2m", *args],
        cwd=cwd,
        env=newcomer_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh working folder whose path has a space, holding the person's rows."""
    folder = tmp_path_factory.mktemp("newcomer") / "my work"
    folder.mkdir()
    (folder / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    yield folder


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_each_stage_command_works_with_the_default_data_dir(
    workdir: Path, catalog_index: Path | None, shared_data: Path
) -> None:
    data_dir = workdir / ".p2m"

    # models import: fills the local store under the default data dir.
    imported = ok(p2m(workdir, "models", "import", "smollm2"))
    assert str(data_dir / "models") in imported.replace("\n", "")
    assert (data_dir / "models" / "hf" / "HuggingFaceTB--SmolLM2-135M-Instruct").is_dir()

    # parse: the example prompt's demonstrations.
    task = p2m_json(workdir, "parse", "--prompt-file", str(PROMPT))
    assert task["instruction"] and len(task["demonstrations"]) >= 2

    # datasets search: without a catalog it says how to get one; with one it ranks it.
    search = ("datasets", "search", "--prompt-file", str(PROMPT), "--top-k", "3")
    missing = p2m(workdir, *search)
    assert missing.returncode != 0 and "catalog" in missing.stderr
    seed_catalog_index(catalog_index, data_dir)
    found = p2m_json(workdir, *search, env={"P2M_CATALOG_DIR": str(shared_data / "catalogs")})
    hits = found["datasets"]
    assert len(hits) == 3 and all(hit["name"] and "split_rows" in hit["preview"] for hit in hits)

    # generate: the embedded endpoint in-process (SmolLM2 for speed), a dataset in --out.
    generate = (
        "generate",
        "--prompt-file",
        str(PROMPT),
        "--num-examples",
        "3",
        "--out",
        "gen",
        "--no-check-invariants",
    )  # the path under test, not SmolLM2's label balance
    generated = p2m_json(workdir, *generate, env={"P2M_LOCAL_LLM": "smollm2"})
    assert generated["accepted"] == 3
    assert Path(generated["path"]).is_relative_to(data_dir)
    assert sum(1 for _ in (workdir / "gen" / "train.jsonl").open()) >= 1

    # train: Ray Train's storage under the relative default data dir (this crashed).
    trained = p2m_json(workdir, *TRAIN, "--out", "model")
    assert trained["report"]["steps"] == 1
    assert (workdir / "model" / "p2m_student.json").is_file()
    assert (data_dir / "cache" / "train").is_dir()  # Ray Train's storage

    # evaluate: the student scored on the person's rows.
    evaluate = ("evaluate", "--model", "model", "--test", "rows.jsonl", "--max-examples", "4")
    scored = p2m_json(workdir, *evaluate, "--max-new-tokens", "16")
    assert scored["num_examples"] == 4
    assert 0 <= scored["metrics"]["chrf"] <= 100

    # serve-model with its defaults but the ports, then the demo in front of it.
    http_port, demo_port = free_port(), free_port()
    serve = ("serve-model", "--model", "model", "--http-port", str(http_port), "--grpc-port", "0")
    server = background(workdir, *serve)
    demo = None
    try:
        url = f"http://127.0.0.1:{http_port}"
        wait_for(f"{url}/v1/models/model", server)
        reply = json.loads(get(f"{url}/v1/models/model:predict", {"instances": ["a great film"]}))
        assert len(reply["predictions"]) == 1
        demo = background(workdir, "demo", "--endpoint", url, "--port", str(demo_port))
        wait_for(f"http://127.0.0.1:{demo_port}/", demo)
        assert b"<html" in get(f"http://127.0.0.1:{demo_port}/")
    finally:
        if demo is not None:
            stop(demo)
        stop(server)
    said = server.communicate()[0]
    assert "/v1/models/model:predict" in said
    assert "(llama.cpp q8_0)" in said  # a SmolLM2 student: llama.cpp in int8 by default
