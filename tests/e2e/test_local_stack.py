"""`p2m run` on one machine, as a newcomer runs it: it starts its own stack (the embedded
llama.cpp endpoint and every service), trains and serves a student, and `p2m down` stops it all.

No ``P2M_*`` setting but the embedded model (SmolLM2, for speed): the data dir is the default,
relative ``.p2m`` of the working folder. A small budget: the person's own dataset file (named
relative to the working folder), no generation, two training steps, no teacher evaluation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import REPO

PROMPT = REPO / "examples" / "sentiment.txt"


def p2m(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The `p2m` command line run from ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "p2m", *args],
        cwd=cwd,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("P2M_")}, **env},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def predict(url: str, text: str) -> list[str]:
    body = json.dumps({"instances": [text]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return list(json.loads(reply.read())["predictions"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_p2m_run_starts_its_own_stack_serves_a_student_and_p2m_down_stops_everything(
    retriever_data_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / ".p2m"  # the default
    shutil.copytree(retriever_data_dir / "models", data_dir / "models")  # skips the import
    (tmp_path / "rows.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "input": f"review {i}: {'great' if i % 2 else 'awful'} film",
                    "output": "positive" if i % 2 else "negative",
                }
            )
            + "\n"
            for i in range(40)
        )
    )
    env = {"P2M_LOCAL_LLM": "smollm2"}
    budget = ["--skip", "generate", "--epochs", "1", "--max-steps", "2", "--no-teacher", "--json"]
    try:
        first = p2m(
            tmp_path, env, "run", "--prompt-file", str(PROMPT), "--dataset", "rows.jsonl", *budget
        )
        assert first.returncode == 0, first.stderr[-3000:]
        report = json.loads(first.stdout)
        assert report["state"] == "succeeded"
        assert report["datasets"] == [str(tmp_path / "rows.jsonl")]
        states = {s["stage"]: s["state"] for s in report["stages"]}
        assert states["generate"] == "skipped" and states["train"] == "succeeded"
        assert states["deploy"] == "succeeded"
        assert report["endpoint"].startswith("http://127.0.0.1:")
        assert len(predict(report["v1_predict_url"], "review: a great film")) == 1
        stack = json.loads((data_dir / "stack.json").read_text())
        pids = [p["pid"] for p in stack["processes"]]
        names = {p["name"] for p in stack["processes"]}
        assert names == {
            "llm",
            "parser",
            "retriever",
            "generator",
            "trainer",
            "evaluator",
            "deployer",
            "gateway",
        }
        assert all(running(pid) for pid in pids)

        # `p2m up` finds the stack up and names its gateway.
        again = p2m(tmp_path, env, "up")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == f"gateway {stack['gateway']}"
        assert "already up" in again.stderr

        # The same stack answers the next run; a path outside its folders is refused.
        refused = p2m(
            tmp_path, env, "run", "--prompt-file", str(PROMPT), "--dataset", "/etc/passwd", *budget
        )
        assert refused.returncode == 1
        failed = json.loads(refused.stdout)
        assert failed["state"] == "failed"
        assert "dataset.name" in failed["error"] and "outside the folders" in failed["error"]
        assert json.loads((data_dir / "stack.json").read_text())["gateway"] == stack["gateway"]
    finally:
        down = p2m(tmp_path, env, "down")
    assert down.returncode == 0, down.stderr
    assert not (data_dir / "stack.json").exists()
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(running(pid) for pid in pids)
    with pytest.raises(urllib.error.URLError):
        predict(report["v1_predict_url"], "review: a great film")
