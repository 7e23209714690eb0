"""`p2m catalog build` against a local fake of the Hugging Face hub's listing API.

The real hub is unreachable here, so a fake (named as such) answers `/api/datasets` and
`/api/models` on loopback with records of the hub's shape; `HF_ENDPOINT` points the real
`huggingface_hub` client at it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from p2m.retriever.catalog import load_datasets, load_models
from p2m.retriever.model_search import architecture_of
from tests.integration.test_cli import p2m

DATASETS = [
    {
        "id": "squad",
        "downloads": 1000,
        "likes": 5,
        "description": "Reading comprehension.",
        "tags": ["task_categories:question-answering", "language:en", "license:cc-by-4.0"],
    },
    {
        "id": "org/intents",
        "downloads": 10,
        "likes": 0,
        "description": "Bank intents.",
        "tags": ["task_categories:text-classification"],
    },
]


def model(pipeline: str) -> dict:
    return {
        "id": f"org/{pipeline}-small",
        "downloads": 7,
        "pipeline_tag": pipeline,
        "tags": ["license:apache-2.0", "en"],
        "config": {"model_type": "t5"},
        "safetensors": {"parameters": {"F32": 60_000_000}, "total": 60_000_000},
    }


class FakeHub(BaseHTTPRequestHandler):
    """A fake of the hub's two listing endpoints (the real hub cannot be reached here)."""

    seen: list[str] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        FakeHub.seen.append(self.path)
        if url.path == "/api/datasets":
            body = DATASETS
        elif url.path == "/api/models":
            body = [model(parse_qs(url.query)["pipeline_tag"][0])]
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_builds_catalogs_the_retriever_reads(fake_hub: str, tmp_path: Path):
    env = {"HF_ENDPOINT": fake_hub, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    for kind in ("datasets", "models"):
        result = p2m("catalog", "build", kind, "--out", str(tmp_path), "--limit", "50", env=env)
        assert result.returncode == 0, result.stderr
    datasets = load_datasets(tmp_path / "hf_datasets.jsonl.gz").records
    assert [d.name for d in datasets] == ["squad", "org/intents"]
    assert datasets[0].task_categories == ("question-answering",)
    assert datasets[0].downloads == 1000
    models = load_models(tmp_path / "hf_models.jsonl.gz").records
    assert {m.pipeline_tag for m in models} == {
        "text2text-generation",
        "text-generation",
        "summarization",
        "translation",
    }
    assert all(m.size_bytes == 120_000_000 for m in models)
    assert architecture_of(models[0]) == "encoder-decoder"
    assert any(p.startswith("/api/datasets") and "limit=50" in p for p in FakeHub.seen)


def test_offline_build_fails_clearly(tmp_path: Path):
    result = p2m(
        "catalog", "build", "datasets", "--out", str(tmp_path), env={"HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 1
    assert "offline" in result.stderr
    assert not list(tmp_path.iterdir())
