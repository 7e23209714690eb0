"""The real deployer service on loopback: KServe model servers started as processes, answering
v1 REST, v2 REST and v2 gRPC with the student's own predictions, batching concurrent requests,
rolling, listing, undeploying, and coming back after a crash and a deployer restart."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import pytest
from google.protobuf import duration_pb2

from p2m.common.artifacts import ArtifactStore
from p2m.common.student import Student, StudentSpec
from prompt2model.v1 import common_pb2, deployer_pb2, deployer_pb2_grpc
from tests.support import ServiceProcess, run_p2m

with mock.patch.object(sys, "argv", sys.argv[:1]):  # kserve parses the flags when imported
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2_pb2
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as v2_grpc
    from kserve.protocol.infer_type import deserialize_bytes_tensor

SMOLLM2 = "HuggingFaceTB--SmolLM2-135M-Instruct"
INSTRUCTION = "Answer with the capital city of the country."
INPUTS = ["France", "Japan", "a somewhat longer input about Italy", "Peru"]
MISSING_URI = "p2m-artifact://sha256/" + "0" * 64
BATCHING = deployer_pb2.BatchingOptions(
    max_batch_size=8, max_latency=duration_pb2.Duration(nanos=200_000_000)
)
TASK = common_pb2.TaskSpec(
    instruction=INSTRUCTION,
    demonstrations=[common_pb2.Example(input="Spain", output="Madrid")],
)


class Setup:
    """The deployer under test (replaced when a test restarts it) and its artifacts."""

    def __init__(self, data_dir: Path, models: dict[str, common_pb2.ArtifactRef]) -> None:
        self.data_dir = data_dir
        self.models = models
        self.expected: dict[str, list[str]] = {}
        self.demo_available = False
        self.service: ServiceProcess | None = None
        self.channel: grpc.Channel | None = None
        self.stub: deployer_pb2_grpc.DeployerStub

    def start(self) -> None:
        self.service = ServiceProcess("deployer", self.data_dir).start(timeout_s=60)
        self.channel = grpc.insecure_channel(self.service.address)
        self.stub = deployer_pb2_grpc.DeployerStub(self.channel)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.service is not None:
            self.service.stop()

    def record(self, name: str) -> dict[str, Any]:
        path = self.data_dir / "deployments" / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8"))


def _ref(ref) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, kind=ref.kind)


@pytest.fixture(scope="module")
def setup(retriever_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    from tests.tiny_models import build_tiny_t5

    work = tmp_path_factory.mktemp("deployer-work")
    data_dir = tmp_path_factory.mktemp("deployer")
    store = ArtifactStore(data_dir / "artifacts")
    tokenizer = retriever_data_dir / "models" / "hf" / SMOLLM2
    folders = {}
    for label, seed in (("a", 0), ("b", 1)):
        folders[label] = build_tiny_t5(tokenizer, work / f"tiny-t5-{label}", seed=seed)
        StudentSpec("encoder-decoder", INSTRUCTION, max_output_tokens=8).save(folders[label])
    (work / "data").mkdir()
    (work / "data" / "train.jsonl").write_text('{"input": "x", "output": "y"}\n')
    models = {label: _ref(store.put_dir(folder, "model")) for label, folder in folders.items()}
    models["dataset"] = _ref(store.put_dir(work / "data", "dataset"))
    setup = Setup(data_dir, models)
    for label, folder in folders.items():  # greedy decoding: the server must say the same
        setup.expected[label] = Student(folder).predict(INPUTS)
    setup.demo_available = run_p2m("demo", "--help", timeout=60).returncode == 0
    setup.start()
    yield setup
    try:
        for endpoint in setup.stub.ListDeployments(deployer_pb2.ListDeploymentsRequest()).endpoints:
            setup.stub.Undeploy(deployer_pb2.UndeployRequest(name=endpoint.name), timeout=60)
    finally:
        setup.stop()
        for path in (data_dir / "deployments").glob("*.json"):  # whatever a failure left
            record = json.loads(path.read_text(encoding="utf-8"))
            for proc in (record["server"], record["demo"]):
                if proc:
                    _kill_group(proc["pid"])


@pytest.fixture(scope="module")
def tiny(setup: Setup) -> common_pb2.Endpoint:
    """Model "a" served as "tiny": no demo, batches of up to 8 requests within 200 ms."""
    reply = setup.stub.Deploy(_deploy_request("tiny", setup.models["a"]), timeout=180)
    assert reply.endpoint.ready, reply.endpoint.message
    return reply.endpoint


def _deploy_request(
    name: str, model: common_pb2.ArtifactRef, *, skip_demo: bool = True, **kwargs: Any
) -> deployer_pb2.DeployRequest:
    options = deployer_pb2.DeployOptions(
        skip_demo=skip_demo, batching=BATCHING, ready_timeout=duration_pb2.Duration(seconds=150)
    )
    return deployer_pb2.DeployRequest(name=name, model=model, options=options, **kwargs)


def _post(url: str, body: Any, timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with _opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _metrics(base_url: str) -> dict[str, float]:
    status, body = _get(f"{base_url}/metrics")
    assert status == 200
    values = {}
    for line in body.decode().splitlines():
        if line.startswith("p2m_batch") and 'model_name="tiny"' in line:
            name, value = line.split("{")[0], line.rsplit(" ", 1)[1]
            values[name] = float(value)
    return values


def _grpc_infer(address: str, name: str, tensor_name: str, texts: list[str]) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        request = v2_pb2.ModelInferRequest(
            model_name=name,
            inputs=[
                v2_pb2.ModelInferRequest.InferInputTensor(
                    name=tensor_name,
                    datatype="BYTES",
                    shape=[len(texts)],
                    contents=v2_pb2.InferTensorContents(bytes_contents=[t.encode() for t in texts]),
                )
            ],
        )
        reply = stub.ModelInfer(request, timeout=60)
    (output,) = reply.outputs
    assert output.name == "output" and output.datatype == "BYTES"
    assert list(output.shape) == [len(texts)]
    if reply.raw_output_contents:
        values = deserialize_bytes_tensor(reply.raw_output_contents[0]).tolist()
    else:
        values = list(output.contents.bytes_contents)
    return [v.decode() for v in values]


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pid: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


def _server_pids(name: str) -> list[int]:
    """Every live `p2m serve-model --name <name>` process on this machine."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve-model" in argv and name.encode() in argv:
            pid = int(cmdline.parent.name)
            if not _gone(pid):
                pids.append(pid)
    return sorted(pids)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _port(url_or_address: str) -> int:
    return int(url_or_address.rstrip("/").rsplit(":", 1)[1].split("/")[0])


# -- one deployment, three protocols ---------------------------------------------------------


def test_deploy_answers_v1_v2_rest_and_v2_grpc(setup: Setup, tiny: common_pb2.Endpoint):
    base = tiny.base_url
    assert base.startswith("http://127.0.0.1:")
    assert tiny.name == "tiny" and tiny.kind == "local-modelserver" and tiny.ready
    assert tiny.message == "" and tiny.demo_url == "" and tiny.k8s_namespace == ""
    assert tiny.v1_predict_url == f"{base}/v1/models/tiny:predict"
    assert tiny.v2_infer_url == f"{base}/v2/models/tiny/infer"
    assert tiny.grpc_address.startswith("127.0.0.1:")
    assert tiny.model.uri == setup.models["a"].uri and tiny.model.size_bytes > 0
    assert tiny.update_time.seconds > 0
    assert tiny.runtime == "transformers f32"  # a T5: llama.cpp serves decoder-only students
    expected = setup.expected["a"]

    instances = [INPUTS[0], {"input": INPUTS[1]}, INPUTS[2], {"input": INPUTS[3]}]
    status, body = _post(tiny.v1_predict_url, {"instances": instances})
    assert status == 200, body
    assert body == {"predictions": expected}

    tensor = {"name": "input", "shape": [len(INPUTS)], "datatype": "BYTES", "data": INPUTS}
    status, body = _post(tiny.v2_infer_url, {"id": "req-1", "inputs": [tensor]})
    assert status == 200, body
    assert body["model_name"] == "tiny" and body["id"] == "req-1"
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output", "BYTES", [4])
    assert output["data"] == expected

    assert _grpc_infer(tiny.grpc_address, "tiny", "text", INPUTS) == expected

    status, metadata = _get(f"{base}/v2/models/tiny")
    assert status == 200
    assert json.loads(metadata)["inputs"][0] == {
        "name": "input",
        "datatype": "BYTES",
        "shape": [-1],
    }


def test_concurrent_requests_share_batches(setup: Setup, tiny: common_pb2.Endpoint):
    before = _metrics(tiny.base_url)
    texts = INPUTS * 2
    barrier = threading.Barrier(len(texts))

    def one(text: str) -> tuple[int, Any]:
        barrier.wait()
        return _post(tiny.v1_predict_url, {"instances": [text]})

    with ThreadPoolExecutor(len(texts)) as pool:
        replies = list(pool.map(one, texts))
    after = _metrics(tiny.base_url)
    expected = dict(zip(INPUTS, setup.expected["a"], strict=True))
    assert [status for status, _ in replies] == [200] * len(texts)
    assert [body["predictions"] for _, body in replies] == [[expected[t]] for t in texts]
    batches = after["p2m_batches_total"] - before.get("p2m_batches_total", 0)
    requests = after["p2m_batch_requests_total"] - before.get("p2m_batch_requests_total", 0)
    inputs = after["p2m_batch_inputs_total"] - before.get("p2m_batch_inputs_total", 0)
    assert requests == inputs == len(texts)
    assert 1 <= batches < len(texts), f"{len(texts)} concurrent requests ran in {batches} batches"


WRK_SECONDS = 5
WRK_CONNECTIONS = 8
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances": ["a somewhat longer input about Italy"]}'
"""


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is missing: `sudo make browser`")
def test_endpoint_under_wrk_load_answers_every_request(
    setup: Setup, tiny: common_pb2.Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """wrk keeps 8 connections busy for 5 s: no error, no non-2xx, batches form; figures shown."""
    script = tmp_path / "predict.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    before = _metrics(tiny.base_url)
    result = subprocess.run(
        [
            "wrk",
            "--threads",
            "2",
            "--connections",
            str(WRK_CONNECTIONS),
            "--duration",
            f"{WRK_SECONDS}s",
            "--timeout",
            "30s",
            "--latency",
            "--script",
            str(script),
            tiny.v1_predict_url,
        ],
        capture_output=True,
        text=True,
        timeout=WRK_SECONDS + 60,
        check=True,
    )
    figures = parse_wrk(result.stdout)
    after = _metrics(tiny.base_url)
    with capsys.disabled():
        print(
            f"\nwrk on {tiny.v1_predict_url}, {WRK_CONNECTIONS} connections, {WRK_SECONDS} s: "
            f"{figures['requests']:.0f} requests, {figures['requests_per_s']:.1f} req/s, "
            f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms"
        )
    assert figures["requests"] >= WRK_CONNECTIONS, result.stdout
    assert figures["non_2xx"] == 0 and figures["socket_errors"] == 0, result.stdout
    served = after["p2m_batch_requests_total"] - before.get("p2m_batch_requests_total", 0)
    batches = after["p2m_batches_total"] - before.get("p2m_batches_total", 0)
    assert served >= figures["requests"], f"the server counted {served} requests"
    assert batches < served, "no two requests under load shared a batch"
    status, body = _post(tiny.v1_predict_url, {"instances": [INPUTS[2]]})  # still correct after
    assert status == 200 and body["predictions"] == [setup.expected["a"][2]]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests, requests/s, p50/p99 latency (ms), non-2xx answers and socket errors."""
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        assert match, f"no {percent}% latency in wrk's output:\n{output}"
        return float(match[1]) * units[match[2]]

    requests = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    assert requests and rate, f"unexpected wrk output:\n{output}"
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests": float(requests[1]),
        "requests_per_s": float(rate[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(non_2xx[1]) if non_2xx else 0.0,
        "socket_errors": float(sum(int(n) for n in sockets.groups())) if sockets else 0.0,
    }


def test_bad_payloads_are_answered_400(tiny: common_pb2.Endpoint):
    cases = [
        (tiny.v1_predict_url, {"instances": "France"}, "instances"),
        (tiny.v1_predict_url, {"inputs": ["France"]}, "instances"),
        (tiny.v1_predict_url, {"instances": [3]}, "instances[0]"),
        (tiny.v1_predict_url, {"instances": [{"text": "France"}]}, "instances[0]"),
        (
            tiny.v2_infer_url,
            {"inputs": [{"name": "input", "shape": [1], "datatype": "INT32", "data": [1]}]},
            "BYTES",
        ),
        (
            tiny.v2_infer_url,
            {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["France"]}]},
            '"input" or "text"',
        ),
        (
            tiny.v2_infer_url,
            {
                "inputs": [
                    {"name": "input", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}
                ]
            },
            "shape",
        ),
    ]
    for url, body, needle in cases:
        status, reply = _post(url, body)
        assert status == 400, (body, reply)
        assert needle in reply["error"], (body, reply)
    with grpc.insecure_channel(tiny.grpc_address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        bad = v2_pb2.ModelInferRequest(
            model_name="tiny",
            inputs=[
                v2_pb2.ModelInferRequest.InferInputTensor(
                    name="input",
                    datatype="INT32",
                    shape=[1],
                    contents=v2_pb2.InferTensorContents(int_contents=[1]),
                )
            ],
        )
        error = _error(lambda: stub.ModelInfer(bad, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "BYTES" in error.details()


def _listening(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_model_server_listens_on_loopback_only(tiny: common_pb2.Endpoint):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp here to read the bound addresses from")
    ipv4_loopback = "0100007F"  # 127.0.0.1, little-endian hex
    v4_mapped_loopback = "0000000000000000FFFF00000100007F"  # ::ffff:127.0.0.1
    for port in (_port(tiny.base_url), _port(tiny.grpc_address)):
        addresses = _listening(port)
        assert addresses, f"nothing listens on {port}"
        assert set(addresses) <= {ipv4_loopback, v4_mapped_loopback}, (port, addresses)


# -- the deployer's contract -----------------------------------------------------------------


def test_invalid_requests_name_the_field(setup: Setup):
    model = setup.models["a"]
    duration = duration_pb2.Duration

    def options(**kwargs: Any) -> deployer_pb2.DeployOptions:
        return deployer_pb2.DeployOptions(skip_demo=True, **kwargs)

    deploy_cases = [
        (deployer_pb2.DeployRequest(name="", model=model), "name"),
        (deployer_pb2.DeployRequest(name="Bad_Name", model=model), "name"),
        (deployer_pb2.DeployRequest(name="9lives", model=model), "name"),
        (deployer_pb2.DeployRequest(name="ends-", model=model), "name"),
        (deployer_pb2.DeployRequest(name="a" * 46, model=model), "name"),
        (deployer_pb2.DeployRequest(name="ok"), "model.uri"),
        (
            deployer_pb2.DeployRequest(name="ok", model=common_pb2.ArtifactRef(uri="s3://x")),
            "model.uri",
        ),
        (
            deployer_pb2.DeployRequest(
                name="ok", model=common_pb2.ArtifactRef(uri=model.uri, sha256="1" * 64)
            ),
            "model.sha256",
        ),
        (
            deployer_pb2.DeployRequest(name="ok", model=model, options=options(min_replicas=-1)),
            "options.min_replicas",
        ),
        (
            deployer_pb2.DeployRequest(
                name="ok", model=model, options=options(min_replicas=3, max_replicas=2)
            ),
            "options.min_replicas",
        ),
        (
            deployer_pb2.DeployRequest(name="ok", model=model, options=options(max_replicas=101)),
            "options.max_replicas",
        ),
        (
            deployer_pb2.DeployRequest(
                name="ok", model=model, options=options(concurrency_target=1001)
            ),
            "options.concurrency_target",
        ),
        (
            deployer_pb2.DeployRequest(
                name="ok",
                model=model,
                options=options(batching=deployer_pb2.BatchingOptions(max_batch_size=1025)),
            ),
            "options.batching.max_batch_size",
        ),
        (
            deployer_pb2.DeployRequest(
                name="ok",
                model=model,
                options=options(
                    batching=deployer_pb2.BatchingOptions(max_latency=duration(seconds=11))
                ),
            ),
            "options.batching.max_latency",
        ),
        (
            deployer_pb2.DeployRequest(
                name="ok", model=model, options=options(ready_timeout=duration(seconds=3601))
            ),
            "options.ready_timeout",
        ),
        (
            deployer_pb2.DeployRequest(
                name="ok", model=model, options=options(ready_timeout=duration(seconds=-1))
            ),
            "options.ready_timeout",
        ),
        (deployer_pb2.DeployRequest(name="ok", model=model, run_id="r" * 65), "run_id"),
        (
            deployer_pb2.DeployRequest(name="ok", model=model, options=options(runtime="onnx")),
            "options.runtime",
        ),
        (
            deployer_pb2.DeployRequest(name="ok", model=model, options=options(precision="int4")),
            "options.precision",
        ),
        (  # a tiny T5: llama.cpp serves decoder-only students
            deployer_pb2.DeployRequest(
                name="ok", model=model, options=options(runtime="llama.cpp")
            ),
            "options.runtime",
        ),
        (
            deployer_pb2.DeployRequest(name="ok", model=model, options=options(precision="q8_0")),
            "options.precision",
        ),
        (deployer_pb2.DeployRequest(name="ok", model=setup.models["dataset"]), "model.uri"),
    ]
    for request, field in deploy_cases:
        error = _error(lambda request=request: setup.stub.Deploy(request, timeout=30))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, error.details())
        assert error.details().startswith(f"{field}:"), (field, error.details())
    error = _error(lambda: setup.stub.Undeploy(deployer_pb2.UndeployRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("name:")
    for request, field in [
        (deployer_pb2.ListDeploymentsRequest(page_size=1001), "page_size"),
        (deployer_pb2.ListDeploymentsRequest(page_size=-1), "page_size"),
        (deployer_pb2.ListDeploymentsRequest(page_token="dGlueQ.0000"), "page_token"),
        (deployer_pb2.ListDeploymentsRequest(page_token="not a token"), "page_token"),
    ]:
        error = _error(lambda request=request: setup.stub.ListDeployments(request, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(f"{field}:"), error.details()
    assert not (setup.data_dir / "deployments" / "ok.json").exists()


def test_missing_artifact_or_deployment_is_not_found(setup: Setup):
    missing = common_pb2.ArtifactRef(uri=MISSING_URI)
    error = _error(lambda: setup.stub.Deploy(_deploy_request("ghost", missing), timeout=30))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = _error(
        lambda: setup.stub.Undeploy(deployer_pb2.UndeployRequest(name="ghost"), timeout=10)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    reply = setup.stub.Undeploy(
        deployer_pb2.UndeployRequest(name="ghost", allow_missing=True), timeout=10
    )
    assert not reply.removed and not reply.HasField("endpoint")


def test_same_model_again_changes_nothing(setup: Setup, tiny: common_pb2.Endpoint):
    pid = setup.record("tiny")["server"]["pid"]
    again = setup.stub.Deploy(
        _deploy_request("tiny", setup.models["a"], run_id="again"), timeout=60
    )
    assert not again.replaced
    assert again.endpoint == tiny
    assert setup.record("tiny")["server"]["pid"] == pid


# -- a second deployment: demo, rolling, paging, restart, undeploy ---------------------------


def test_demo_is_served_beside_the_model(setup: Setup, tiny: common_pb2.Endpoint):
    """ "other" serves model "a" with a demo (when `p2m demo` exists), then rolls to "b"."""
    metrics = common_pb2.Metrics(values={"chrf": 12.5, "exact_match": 0.25}, num_examples=4)
    request = _deploy_request(
        "other", setup.models["a"], skip_demo=not setup.demo_available, task=TASK, metrics=metrics
    )
    first = setup.stub.Deploy(request, timeout=180).endpoint
    assert first.ready, first.message
    old = setup.record("other")
    assert old["options"]["max_batch_size"] == 8 and old["model"]["uri"] == setup.models["a"].uri
    if not setup.demo_available:
        assert first.demo_url == ""
        pytest.skip("`p2m demo` is not available yet; served without the demo")
    assert first.demo_url.startswith("http://127.0.0.1:") and first.demo_url.endswith("/")
    status, page = _get(first.demo_url)
    assert status == 200 and b"gradio" in page.lower()
    assert old["demo"]["pid"] > 0 and old["task_file"] and old["metrics_file"]
    assert json.loads(Path(old["task_file"]).read_text())["instruction"] == INSTRUCTION
    assert json.loads(Path(old["metrics_file"]).read_text()) == {
        "metrics": {"chrf": 12.5, "exact_match": 0.25}
    }


def test_another_model_rolls_the_deployment(setup: Setup, tiny: common_pb2.Endpoint):
    old = setup.record("other")
    request = _deploy_request(
        "other", setup.models["b"], skip_demo=not setup.demo_available, task=TASK
    )
    reply = setup.stub.Deploy(request, timeout=180)
    assert reply.replaced and reply.endpoint.ready, reply.endpoint.message
    assert reply.endpoint.model.uri == setup.models["b"].uri
    assert reply.endpoint.base_url != f"http://127.0.0.1:{old['server']['ports'][0]}"
    status, body = _post(reply.endpoint.v1_predict_url, {"instances": INPUTS})
    assert status == 200 and body["predictions"] == setup.expected["b"]
    assert _wait_gone(old["server"]["pid"]) and not _port_open(old["server"]["ports"][0])
    if old["demo"]:
        assert _wait_gone(old["demo"]["pid"])
    new = setup.record("other")
    assert new["create_time"] == old["create_time"] and new["update_time"] > old["update_time"]
    assert not Path(old["server"]["log"]).exists()


def test_list_pages_by_name(setup: Setup, tiny: common_pb2.Endpoint):
    first = setup.stub.ListDeployments(deployer_pb2.ListDeploymentsRequest(page_size=1))
    assert [e.name for e in first.endpoints] == ["other"] and first.next_page_token
    second = setup.stub.ListDeployments(
        deployer_pb2.ListDeploymentsRequest(page_size=1, page_token=first.next_page_token)
    )
    assert [e.name for e in second.endpoints] == ["tiny"] and second.next_page_token == ""
    assert second.endpoints[0].ready and second.endpoints[0].base_url == tiny.base_url
    everything = setup.stub.ListDeployments(deployer_pb2.ListDeploymentsRequest())
    assert [e.name for e in everything.endpoints] == ["other", "tiny"]
    assert everything.next_page_token == ""


def test_not_ready_in_time_says_why_and_stays_deployed(setup: Setup, tiny: common_pb2.Endpoint):
    request = _deploy_request("slow", setup.models["b"])
    request.options.ready_timeout.CopyFrom(duration_pb2.Duration(nanos=300_000_000))
    started = time.monotonic()
    reply = setup.stub.Deploy(request, timeout=60)
    assert time.monotonic() - started < 10
    assert not reply.endpoint.ready and not reply.replaced
    assert reply.endpoint.message.startswith("not ready after 0.3s: "), reply.endpoint.message
    pid = setup.record("slow")["server"]["pid"]  # kept: a slow model may still come up
    assert _server_pids("slow") == [pid]
    removed = setup.stub.Undeploy(deployer_pb2.UndeployRequest(name="slow"), timeout=60)
    assert removed.removed and removed.endpoint.name == "slow"
    assert _wait_gone(pid, timeout_s=5) and _server_pids("slow") == []


def test_a_roll_not_ready_in_time_keeps_the_old_model(setup: Setup, tiny: common_pb2.Endpoint):
    old = setup.record("other")
    request = _deploy_request("other", setup.models["a"])
    request.options.ready_timeout.CopyFrom(duration_pb2.Duration(nanos=300_000_000))
    reply = setup.stub.Deploy(request, timeout=60)
    assert not reply.replaced and not reply.endpoint.ready
    assert reply.endpoint.message.startswith("not ready after 0.3s: ")
    assert reply.endpoint.message.endswith(f"other still serves {setup.models['b'].uri}")
    assert setup.record("other") == old
    assert _server_pids("other") == [old["server"]["pid"]]  # the new one was stopped
    base = f"http://127.0.0.1:{old['server']['ports'][0]}"
    status, body = _post(f"{base}/v1/models/other:predict", {"instances": INPUTS})
    assert status == 200 and body["predictions"] == setup.expected["b"]


def test_restart_adopts_live_deployments_and_restarts_dead_ones(
    setup: Setup, tiny: common_pb2.Endpoint
):
    other, crashed = setup.record("other"), setup.record("tiny")
    _kill_group(crashed["server"]["pid"])  # the model server crashes...
    assert _wait_gone(crashed["server"]["pid"])
    setup.stop()  # ...and the deployer goes down too, then comes back
    setup.start()
    assert setup.record("other")["server"]["pid"] == other["server"]["pid"]  # adopted
    if other["demo"]:
        assert setup.record("other")["demo"]["pid"] == other["demo"]["pid"]
    restarted = setup.record("tiny")
    assert restarted["server"]["pid"] != crashed["server"]["pid"]
    assert restarted["server"]["ports"] == crashed["server"]["ports"]  # same URLs again
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        listed = setup.stub.ListDeployments(deployer_pb2.ListDeploymentsRequest()).endpoints
        if all(e.ready for e in listed):
            break
        time.sleep(0.5)
    assert [(e.name, e.ready) for e in listed] == [("other", True), ("tiny", True)], listed
    status, body = _post(tiny.v1_predict_url, {"instances": INPUTS})
    assert status == 200 and body["predictions"] == setup.expected["a"]


def test_undeploy_stops_the_processes(setup: Setup, tiny: common_pb2.Endpoint):
    record = setup.record("other")
    reply = setup.stub.Undeploy(deployer_pb2.UndeployRequest(name="other"), timeout=60)
    assert reply.removed and reply.endpoint.name == "other"
    assert reply.endpoint.model.uri == setup.models["b"].uri
    for proc in (record["server"], record["demo"]):
        if proc:
            assert _wait_gone(proc["pid"], timeout_s=5), proc
            assert not any(_port_open(p) for p in proc["ports"]), proc
    assert _server_pids("other") == []
    assert not (setup.data_dir / "deployments" / "other.json").exists()
    assert not (setup.data_dir / "deployments" / "other.d").exists()
    listed = setup.stub.ListDeployments(deployer_pb2.ListDeploymentsRequest()).endpoints
    assert [e.name for e in listed] == ["tiny"]
