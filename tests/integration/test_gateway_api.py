"""The gateway's API on loopback: validation, idempotency, events, paging, auth, cancel, resume.

The gateway is real; the stage services are left out or unreachable on purpose, so runs stop at
their first stage and every behaviour of the API shows quickly. The whole pipeline through the
gateway is tested in tests/e2e.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from p2m.client import FINISHED_STATES
from prompt2model.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from tests.support import REPO, ServiceProcess, free_port

G = gateway_pb2
PROMPT = (REPO / "examples" / "sentiment.txt").read_text(encoding="utf-8")
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A gateway whose stage services are all unreachable (closed loopback ports)."""
    closed = f"127.0.0.1:{free_port()}"
    names = ("PARSER", "RETRIEVER", "GENERATOR", "TRAINER", "EVALUATOR", "DEPLOYER")
    env = {f"P2M_{name}_ADDR": closed for name in names}
    with ServiceProcess("gateway", tmp_path_factory.mktemp("gateway"), env=env) as service:
        yield service


def stub(address: str) -> gateway_pb2_grpc.GatewayStub:
    return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(address))


def error_of(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (G.CreateRunRequest(), "prompt"),
        (G.CreateRunRequest(prompt="   "), "prompt"),
        (G.CreateRunRequest(prompt_bytes=b"\xff\xfe bad"), "prompt_bytes"),
        (G.CreateRunRequest(prompt="x" * 70_000), "prompt"),
        (
            G.CreateRunRequest(prompt=PROMPT, options=G.RunOptions(budget=G.Budget(epochs=101))),
            "options.budget.epochs",
        ),
        (
            G.CreateRunRequest(
                prompt=PROMPT, options=G.RunOptions(skip_stages=[common_pb2.STAGE_TRAIN])
            ),
            "options.skip_stages",
        ),
        (
            G.CreateRunRequest(prompt=PROMPT, options=G.RunOptions(deployment_name="Bad_Name")),
            "options.deployment_name",
        ),
        (
            G.CreateRunRequest(prompt=PROMPT, options=G.RunOptions(base_model_name=" ")),
            "options.base_model_name",
        ),
        (
            G.CreateRunRequest(prompt=PROMPT, options=G.RunOptions(dataset_path="rows.jsonl")),
            "options.dataset_path",
        ),
        (G.CreateRunRequest(prompt=PROMPT, request_id="é" * 3), "request_id"),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(
    gateway: ServiceProcess, request_: G.CreateRunRequest, field: str
) -> None:
    error = error_of(stub(gateway.address).CreateRun, request_, timeout=10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()


def test_a_run_streams_its_events_and_fails_at_the_unreachable_parser(
    gateway: ServiceProcess,
) -> None:
    api = stub(gateway.address)
    run = api.CreateRun(G.CreateRunRequest(prompt=PROMPT), timeout=10)
    assert run.state in (G.RUN_STATE_QUEUED, G.RUN_STATE_RUNNING)
    assert run.options.seed == 42 and run.options.mode == G.INTERACTION_MODE_UNATTENDED
    assert [s.stage for s in run.stages][:2] == [
        common_pb2.STAGE_PARSE,
        common_pb2.STAGE_RETRIEVE_DATASETS,
    ]
    api.CancelRun(G.CancelRunRequest(run_id=run.run_id), timeout=90)
    events = list(api.WatchRun(G.WatchRunRequest(run_id=run.run_id), timeout=30))
    kinds = [e.kind for e in events]
    assert kinds[0] == G.RUN_EVENT_KIND_RUN_CREATED
    assert kinds[-1] == G.RUN_EVENT_KIND_RUN_FINISHED
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].run_state == G.RUN_STATE_CANCELLED
    final = api.GetRun(G.GetRunRequest(run_id=run.run_id), timeout=10)
    assert final.state == G.RUN_STATE_CANCELLED
    assert final.stages[0].state == G.STAGE_STATE_CANCELLED
    assert final.last_event_sequence == events[-1].sequence
    # Watching from the middle replays only what came after.
    tail = list(api.WatchRun(G.WatchRunRequest(run_id=run.run_id, from_sequence=2), timeout=30))
    assert [e.sequence for e in tail] == [e.sequence for e in events if e.sequence > 2]


def test_request_ids_make_create_idempotent(gateway: ServiceProcess) -> None:
    api = stub(gateway.address)
    first = api.CreateRun(G.CreateRunRequest(prompt=PROMPT, request_id="job-1"), timeout=10)
    again = api.CreateRun(G.CreateRunRequest(prompt=PROMPT, request_id="job-1"), timeout=10)
    assert again.run_id == first.run_id
    other = G.CreateRunRequest(prompt=PROMPT + "\n", request_id="job-1")
    assert error_of(api.CreateRun, other, timeout=10).code() == grpc.StatusCode.ALREADY_EXISTS
    api.CancelRun(G.CancelRunRequest(run_id=first.run_id), timeout=90)


def test_runs_list_newest_first_in_pages(gateway: ServiceProcess) -> None:
    api = stub(gateway.address)
    created = [
        api.CreateRun(G.CreateRunRequest(prompt=PROMPT), timeout=10).run_id for _ in range(3)
    ]
    for run_id in created:
        api.CancelRun(G.CancelRunRequest(run_id=run_id), timeout=90)
    seen: list[str] = []
    token = ""
    while True:
        page = api.ListRuns(G.ListRunsRequest(page_size=2, page_token=token), timeout=10)
        assert len(page.runs) <= 2
        seen.extend(r.run_id for r in page.runs)
        token = page.next_page_token
        if not token:
            break
    assert seen[:3] == created[::-1]
    cancelled = api.ListRuns(G.ListRunsRequest(states=[G.RUN_STATE_CANCELLED]), timeout=10)
    assert all(r.state == G.RUN_STATE_CANCELLED for r in cancelled.runs)
    bad = G.ListRunsRequest(page_token="not-a-token")
    assert error_of(api.ListRuns, bad, timeout=10).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_runs_and_choices_get_clear_codes(gateway: ServiceProcess) -> None:
    api = stub(gateway.address)
    missing = G.GetRunRequest(run_id="run-nope")
    assert error_of(api.GetRun, missing, timeout=10).code() == grpc.StatusCode.NOT_FOUND
    watch = G.WatchRunRequest(run_id="run-nope")
    assert error_of(lambda: list(api.WatchRun(watch, timeout=10))).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    run = api.CreateRun(G.CreateRunRequest(prompt=PROMPT), timeout=10)
    answer = G.AnswerChoiceRequest(run_id=run.run_id, choice_id="dataset", accept_default=True)
    error = error_of(api.AnswerChoice, answer, timeout=10)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    api.CancelRun(G.CancelRunRequest(run_id=run.run_id), timeout=90)


def test_with_a_token_calls_without_it_are_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with ServiceProcess(
        "gateway", tmp_path / "data", env={"P2M_GATEWAY_TOKEN_FILE": str(token_file)}
    ) as service:
        api = stub(service.address)
        listing = G.ListRunsRequest()
        assert error_of(api.ListRuns, listing, timeout=10).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        wrong = (("authorization", "Bearer nope"),)
        assert error_of(api.ListRuns, listing, timeout=10, metadata=wrong).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        watch = G.WatchRunRequest(run_id="run-x")
        assert error_of(lambda: list(api.WatchRun(watch, timeout=10))).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert api.ListRuns(listing, timeout=10, metadata=good).runs == []
        assert TOKEN not in service.log()  # the secret never reaches the log


def test_a_restarted_gateway_resumes_its_unfinished_runs(
    tmp_path: Path, local_llm: ServiceProcess
) -> None:
    """A run stuck on an absent parser survives a gateway restart and goes on once it is there."""
    data_dir = tmp_path / "data"
    parser_port = free_port()
    closed = f"127.0.0.1:{free_port()}"
    env = {
        "P2M_PARSER_ADDR": f"127.0.0.1:{parser_port}",
        "P2M_RETRIEVER_ADDR": closed,
        "P2M_STAGE_PATIENCE_S": "8",
    }
    first = ServiceProcess("gateway", data_dir, env=env).start()
    try:
        run = stub(first.address).CreateRun(G.CreateRunRequest(prompt=PROMPT), timeout=10)
    finally:
        first.stop()
    stored = data_dir / "runs" / "runs.sqlite"
    assert stored.exists()
    parser = ServiceProcess(
        "parser", tmp_path / "parser", "--llm-base-url", local_llm.base_url, port=parser_port
    )
    with parser, ServiceProcess("gateway", data_dir, env=env) as second:
        api = stub(second.address)
        events = list(api.WatchRun(G.WatchRunRequest(run_id=run.run_id), timeout=120))
        final = api.GetRun(G.GetRunRequest(run_id=run.run_id), timeout=10)
    assert any(e.message == "run resumed" for e in events)
    assert final.stages[0].state == G.STAGE_STATE_SUCCEEDED  # parsed after the restart
    assert final.task.instruction.startswith("Classify")
    assert final.state in FINISHED_STATES
