"""50 runs created at once through the gateway: all accepted, queued, and finished, with never
more than `P2M_MAX_RUNNING_RUNS` at work.

Each run brings its dataset (a JSONL file) and base model (a tiny T5), and skips generation,
evaluation and deployment, so the real parser, retriever and trainer do the work: the first run
trains, the others are answered from the artifact store, as a busy gateway's repeats would be.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from prompt2model.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.support import REPO, ServiceProcess, start_together
from tests.tiny_models import build_tiny_t5

G = gateway_pb2
RUNS = 50
MAX_RUNNING = 3
PROMPT = (REPO / "examples" / "sentiment.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def gateway(
    retriever_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, Path, Path]]:
    data_dir = tmp_path_factory.mktemp("load")
    base = build_tiny_t5(
        retriever_data_dir / "models" / "hf" / "HuggingFaceTB--SmolLM2-135M-Instruct",
        data_dir / "tiny-t5",
    )
    rows = data_dir / "reviews.jsonl"
    rows.write_text(
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
    no_catalog = {"P2M_CATALOG_DIR": ""}  # the runs bring their dataset and base model
    services = {
        name: ServiceProcess(name, data_dir, env=no_catalog)
        for name in ("parser", "retriever", "trainer")
    }
    start_together(list(services.values()))
    env = {f"P2M_{n.upper()}_ADDR": s.address for n, s in services.items()}
    env["P2M_MAX_RUNNING_RUNS"] = str(MAX_RUNNING)
    gateway = ServiceProcess("gateway", data_dir, env=env).start()
    try:
        yield gateway, base, rows
    finally:
        for service in (gateway, *services.values()):
            service.stop()


@pytest.mark.timeout(900)
def test_fifty_runs_at_once_are_queued_and_all_finish(
    gateway: tuple[ServiceProcess, Path, Path],
) -> None:
    service, base, rows = gateway
    options = G.RunOptions(
        dataset_path=str(rows),
        base_model_name=str(base),
        skip_stages=[
            common_pb2.STAGE_GENERATE,
            common_pb2.STAGE_EVALUATE,
            common_pb2.STAGE_DEPLOY,
        ],
    )
    options.train.max_steps = 3
    channel = grpc.insecure_channel(service.address)
    api = gateway_pb2_grpc.GatewayStub(channel)
    start = threading.Barrier(RUNS)

    def create(number: int) -> G.Run:
        start.wait()
        request = G.CreateRunRequest(prompt=PROMPT, options=options, request_id=f"load-{number}")
        return api.CreateRun(request, timeout=60)

    with ThreadPoolExecutor(RUNS) as pool:
        created = list(pool.map(create, range(RUNS)))
    assert len({r.run_id for r in created}) == RUNS
    assert all(r.state in (G.RUN_STATE_QUEUED, G.RUN_STATE_RUNNING) for r in created)

    def events(run: G.Run) -> list[G.RunEvent]:
        return list(api.WatchRun(G.WatchRunRequest(run_id=run.run_id), timeout=900))

    with ThreadPoolExecutor(16) as pool:
        streams = list(pool.map(events, created))
    finals = [api.GetRun(G.GetRunRequest(run_id=r.run_id), timeout=30) for r in created]
    assert [f.state for f in finals] == [G.RUN_STATE_SUCCEEDED] * RUNS, [f.error for f in finals]
    assert len({f.report.model.uri for f in finals}) == 1  # one training, 49 answers from store

    # Never more than MAX_RUNNING runs between their RUN_STARTED and RUN_FINISHED events.
    edges = []
    for stream in streams:
        for event in stream:
            if event.kind == G.RUN_EVENT_KIND_RUN_STARTED:
                edges.append((event.time.ToNanoseconds(), 1))
            elif event.kind == G.RUN_EVENT_KIND_RUN_FINISHED:
                edges.append((event.time.ToNanoseconds(), -1))
    running, peak = 0, 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        running += step
        peak = max(peak, running)
    assert 1 <= peak <= MAX_RUNNING
