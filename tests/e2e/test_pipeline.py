"""The whole pipeline through the gateway, every service real, on a tiny budget.

The teacher is the SmolLM2 endpoint (llama.cpp on loopback); the catalogs are the real ones from
../shared/data; the student is SmolLM2 from the local model store, trained for a few steps with
Ray Train, scored by the evaluator, served by a KServe model server with a Gradio demo.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from p2m.stack import undeploy_all
from prompt2model.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.support import REPO, ServiceProcess

# The whole pipeline, twice per test: far longer than the suite's default per-test timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

G = gateway_pb2
S = common_pb2
PROMPT = (REPO / "examples" / "sentiment.txt").read_text(encoding="utf-8")
STAGE_SERVICES = ("parser", "retriever", "generator", "trainer", "evaluator", "deployer")
LLM_USERS = ("parser", "retriever", "generator", "evaluator")
SECRET = "sk-canary-0123456789abcdef"  # the LLM API key every service is given


@dataclass
class Stack:
    """Every service of the pipeline, on loopback ports."""

    data_dir: Path
    services: dict[str, ServiceProcess]
    gateway: ServiceProcess

    def api(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(self.gateway.address))

    def restart(self, name: str) -> None:
        """SIGKILL a service (and its children), then start it again on the same port."""
        old = self.services[name]
        old.kill()
        args = ("--llm-base-url", old._cmd[old._cmd.index("--llm-base-url") + 1]) if (
            "--llm-base-url" in old._cmd) else ()  # fmt: skip
        self.services[name] = ServiceProcess(name, self.data_dir, *args, port=old.port).start()


@pytest.fixture(scope="module")
def stack(retriever_data_dir: Path, local_llm: ServiceProcess) -> Iterator[Stack]:
    """The stack on the retriever tests' data dir (its catalog embeddings are computed once)."""
    data_dir = retriever_data_dir
    services: dict[str, ServiceProcess] = {}
    env = {"P2M_MAX_RETRIEVED_ROWS": "60", "P2M_STAGE_PATIENCE_S": "240",
           "P2M_LLM_API_KEY": SECRET}  # fmt: skip
    try:
        for name in STAGE_SERVICES:
            args = ("--llm-base-url", local_llm.base_url) if name in LLM_USERS else ()
            services[name] = ServiceProcess(name, data_dir, *args, env=env).start(timeout_s=300)
        addresses = {f"P2M_{n.upper()}_ADDR": s.address for n, s in services.items()}
        gateway = ServiceProcess("gateway", data_dir, env={**env, **addresses}).start()
        stack = Stack(data_dir, services, gateway)
        yield stack
    finally:
        if "deployer" in services:  # deployments outlive their deployer by design
            undeploy_all(services["deployer"].address)
        for service in [*services.values(), *([gateway] if "gateway" in locals() else [])]:
            service.stop()


def options(max_steps: int, epochs: int = 1) -> G.RunOptions:
    run_options = G.RunOptions(budget=G.Budget(num_examples=8, epochs=epochs))
    run_options.train.max_steps = max_steps
    run_options.train.batch_size = 4
    run_options.evaluate.metrics.extend(["exact_match", "chrf"])
    run_options.generate.batch_size = 8
    return run_options


def run_to_end(stack: Stack, run_options: G.RunOptions, on_event: Any = None) -> tuple[G.Run, list]:
    api = stack.api()
    run = api.CreateRun(G.CreateRunRequest(prompt=PROMPT, options=run_options), timeout=30)
    events = []
    for event in api.WatchRun(G.WatchRunRequest(run_id=run.run_id), timeout=1500):
        events.append(event)
        if on_event is not None:
            on_event(event)
    return api.GetRun(G.GetRunRequest(run_id=run.run_id), timeout=30), events


def stage(run: G.Run, which: int) -> G.StageResult:
    return next(r for r in run.stages if r.stage == which)


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def test_prompt_to_deployed_student_then_every_stage_cached(stack: Stack) -> None:
    run, events = run_to_end(stack, options(max_steps=2))
    assert run.state == G.RUN_STATE_SUCCEEDED, run.error
    kinds = [e.kind for e in events]
    assert kinds.count(G.RUN_EVENT_KIND_STAGE_PROGRESS) > 0  # generation and training stream
    assert run.task.instruction.startswith("Classify")
    assert run.base_model.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    report = run.report
    assert report.generation.accepted > 0
    assert report.training.steps == 2 and report.model.uri
    assert set(report.student_metrics.values) == {"exact_match", "chrf"}
    assert set(report.teacher_metrics.values) == {"exact_match", "chrf"}
    assert report.student_size_bytes > 100_000_000
    assert report.endpoint.ready and report.demo_url

    # The deployed student answers v1 and v2 over HTTP, and its demo is up.
    name = report.endpoint.name
    v1 = post_json(report.endpoint.v1_predict_url, {"instances": ["I loved this film!"]})
    assert len(v1["predictions"]) == 1 and isinstance(v1["predictions"][0], str)
    v2 = post_json(
        report.endpoint.v2_infer_url,
        {
            "inputs": [
                {"name": "input", "shape": [1], "datatype": "BYTES", "data": ["I loved this film!"]}
            ]
        },
    )
    assert v2["model_name"] == name and v2["outputs"][0]["data"] == v1["predictions"]
    with urllib.request.urlopen(report.demo_url, timeout=30) as page:
        assert page.status == 200 and b"gradio" in page.read().lower()
    from gradio_client import Client

    demo = Client(report.demo_url, verbose=False)
    assert demo.predict("I loved this film!", api_name="/predict") == v1["predictions"][0]

    # The API key never shows in a log, an event or the run.
    logs = "".join(p.log() for p in [*stack.services.values(), stack.gateway])
    assert SECRET not in logs and SECRET not in str(events) and SECRET not in str(run)

    again, _ = run_to_end(stack, options(max_steps=2))
    assert again.state == G.RUN_STATE_SUCCEEDED, again.error
    for which in (S.STAGE_GENERATE, S.STAGE_TRAIN, S.STAGE_EVALUATE):
        assert stage(again, which).cached, S.Stage.Name(which)
    assert again.report.model.uri == report.model.uri
    assert again.report.endpoint.base_url == report.endpoint.base_url  # the same deployment


def test_a_stage_service_killed_mid_run_is_waited_for_and_nothing_is_redone(stack: Stack) -> None:
    """SIGKILL the trainer when training starts; restarted, the run completes."""
    killed = []

    def kill_trainer(event: G.RunEvent) -> None:
        if (event.kind == G.RUN_EVENT_KIND_STAGE_STARTED and event.stage == S.STAGE_TRAIN
                and not killed):  # fmt: skip
            stack.restart("trainer")
            killed.append(event.sequence)

    run, events = run_to_end(stack, options(max_steps=3, epochs=2), kill_trainer)
    assert killed, "the trainer was never killed"
    assert run.state == G.RUN_STATE_SUCCEEDED, run.error
    started = [e.stage for e in events if e.kind == G.RUN_EVENT_KIND_STAGE_STARTED]
    assert len(started) == len(set(started)), "a finished stage was started again"
    assert run.report.training.steps == 3
    assert stage(run, S.STAGE_GENERATE).cached  # the first test's data, reused
