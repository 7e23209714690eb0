"""The whole pipeline through the gateway, every service real, on a tiny budget.

The teacher is the SmolLM2 endpoint (llama.cpp on loopback); the catalogs are the real ones from
../shared/data; the student is SmolLM2 from the local model store, trained for a few steps with
Ray Train, scored by the evaluator, served by a KServe model server with a Gradio demo.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from p2m.stack import undeploy_all
from prompt2model.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.support import REPO, ServiceProcess, start_together

# The whole pipeline, twice: far longer than the suite's default per-test timeout.
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
    logs: list[ServiceProcess] = field(default_factory=list)  # every process, killed ones too

    def api(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(self.gateway.address))

    def restart(self, name: str) -> None:
        """SIGKILL a service (and its children), then start it again on the same port."""
        old = self.services[name]
        old.kill()
        args = (
            ("--llm-base-url", old._cmd[old._cmd.index("--llm-base-url") + 1])
            if ("--llm-base-url" in old._cmd)
            else ()
        )
        self.services[name] = ServiceProcess(
            name, self.data_dir, *args, port=old.port, env=old.extra_env
        ).start()
        self.logs.append(self.services[name])


@pytest.fixture(scope="module")
def stack(retriever_data_dir: Path, local_llm: ServiceProcess) -> Iterator[Stack]:
    """The stack on the retriever tests' data dir (its catalog embeddings are computed once)."""
    data_dir = retriever_data_dir
    services: dict[str, ServiceProcess] = {}
    env = {"P2M_MAX_RETRIEVED_ROWS": "60", "P2M_STAGE_PATIENCE_S": "240", "P2M_LLM_API_KEY": SECRET}
    try:
        for name in STAGE_SERVICES:
            args = ("--llm-base-url", local_llm.base_url) if name in LLM_USERS else ()
            services[name] = ServiceProcess(name, data_dir, *args, env=env)
        start_together(list(services.values()))
        addresses = {f"P2M_{n.upper()}_ADDR": s.address for n, s in services.items()}
        gateway = ServiceProcess("gateway", data_dir, env={**env, **addresses}).start()
        stack = Stack(data_dir, services, gateway, logs=list(services.values()))
        yield stack
    finally:
        if "deployer" in services:  # deployments outlive their deployer by design
            undeploy_all(services["deployer"].address)
        for service in [*services.values(), *([gateway] if "gateway" in locals() else [])]:
            service.stop()


def options(max_steps: int, epochs: int = 1) -> G.RunOptions:
    run_options = G.RunOptions(budget=G.Budget(num_examples=4, epochs=epochs))
    run_options.train.max_steps = max_steps
    run_options.train.min_steps = 0  # exactly `epochs`: the resume test counts them
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
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


# The service each stage calls, and whether it streams progress (then it is killed at its first
# progress message that marks work worth keeping; otherwise as soon as the stage starts, with its
# call in flight).
STAGE_SERVICE = {
    S.STAGE_PARSE: ("parser", False),
    S.STAGE_RETRIEVE_DATASETS: ("retriever", False),
    S.STAGE_PREPARE_DATASET: ("retriever", False),
    S.STAGE_GENERATE: ("generator", True),
    S.STAGE_RETRIEVE_MODEL: ("retriever", False),
    S.STAGE_TRAIN: ("trainer", True),
    S.STAGE_EVALUATE: ("evaluator", True),
    S.STAGE_DEPLOY: ("deployer", False),
}


class KillEachStage:
    """Watches a run's events and SIGKILLs (then restarts) the service of each stage once."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.killed: dict[int, str] = {}

    def __call__(self, event: G.RunEvent) -> None:
        if event.stage not in STAGE_SERVICE or event.stage in self.killed:
            return
        service, streams = STAGE_SERVICE[event.stage]
        due = (
            mid_work(event)
            if streams and event.kind == G.RUN_EVENT_KIND_STAGE_PROGRESS
            else not streams and event.kind == G.RUN_EVENT_KIND_STAGE_STARTED
        )
        if due:
            self.stack.restart(service)
            self.killed[event.stage] = service


def mid_work(event: G.RunEvent) -> bool:
    """A streamed stage has done something worth keeping (training: its first checkpoint)."""
    progress = event.progress
    if event.stage == S.STAGE_TRAIN:
        return progress.done >= 1 and "checkpoint" in progress.message
    return progress.done > 0


def test_every_stage_service_killed_mid_run_then_a_deployed_student_then_all_cached(
    stack: Stack,
) -> None:
    """One run from the prompt to a served student, each stage's service SIGKILLed while it works.

    Each killed service is restarted on its port; the gateway waits for it and the run completes
    with nothing finished done twice: generation keeps the examples it had accepted, training
    resumes from its first epoch's checkpoint. The same run again is answered from the caches.
    """
    kill = KillEachStage(stack)
    run_options = options(max_steps=4, epochs=2)
    run_options.generate.batch_size = 2  # several rounds: the kill lands between two of them
    run, events = run_to_end(stack, run_options, kill)
    assert run.state == G.RUN_STATE_SUCCEEDED, run.error
    succeeded = {r.stage for r in run.stages if r.state == G.STAGE_STATE_SUCCEEDED}
    must_kill = {S.STAGE_PARSE, S.STAGE_GENERATE, S.STAGE_TRAIN, S.STAGE_EVALUATE, S.STAGE_DEPLOY}
    assert must_kill <= succeeded, [(r.stage, r.state, r.note, r.error) for r in run.stages]
    assert succeeded & set(STAGE_SERVICE) <= set(kill.killed), f"killed only in {kill.killed}"
    started = [e.stage for e in events if e.kind == G.RUN_EVENT_KIND_STAGE_STARTED]
    assert len(started) == len(set(started)), "a finished stage was started again"
    kinds = [e.kind for e in events]
    assert kinds.count(G.RUN_EVENT_KIND_STAGE_PROGRESS) > 0  # generation and training stream
    assert run.task.instruction.startswith("Classify")
    assert run.base_model.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    report = run.report
    assert report.generation.accepted > 0
    assert report.generation.resumed_from > 0  # the examples accepted before the kill were kept
    training = report.training  # resumed from the first epoch's checkpoint, short of the end
    assert training.resumed_from_checkpoint and training.epochs == 2
    assert 1 <= training.resumed_from_step < training.steps and report.model.uri
    assert set(report.student_metrics.values) == {"exact_match", "chrf"}
    assert set(report.teacher_metrics.values) == {"exact_match", "chrf"}
    # Scored on the person's own demonstrations too, and said what the main scores rest on.
    assert set(report.student_demonstration_metrics.values) == {"exact_match", "chrf"}
    assert report.student_demonstration_metrics.num_examples == len(run.task.demonstrations)
    assert report.metrics_source
    if report.metrics_source == "held-out generated examples":
        assert any("generated data alone" in note for note in report.estimate_notes)
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

    # The API key never shows in a log (the killed services' included), an event or the run.
    logs = "".join(p.log() for p in [*set(stack.logs), stack.gateway])
    assert SECRET not in logs and SECRET not in str(events) and SECRET not in str(run)

    again, again_events = run_to_end(stack, run_options)
    assert again.state == G.RUN_STATE_SUCCEEDED, again.error
    for which in (S.STAGE_GENERATE, S.STAGE_TRAIN, S.STAGE_EVALUATE):
        assert stage(again, which).cached, S.Stage.Name(which)
    assert again.report.model.uri == report.model.uri
    assert again.report.endpoint.base_url == report.endpoint.base_url  # the same deployment
    assert not any(
        e.kind == G.RUN_EVENT_KIND_STAGE_PROGRESS
        and e.stage == S.STAGE_TRAIN
        and "step" in e.progress.message
        for e in again_events
    )
