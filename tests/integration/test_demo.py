"""`p2m demo`: the Gradio page of a deployed model, over HTTP and in a headless Chromium.

The demo calls a KServe v1 endpoint. Here that endpoint is :class:`StandInKServe`, a tiny real
HTTP server on a loopback port that implements exactly the v1 contract the demo relies on
(``GET /v1/models``, ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``) with a
deterministic rule: it upper-cases each input. It stands in for the real KServe model server,
which is tested on its own with the deployer; these tests are about the demo.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, free_port, run_p2m

MODEL = "upper"
TITLE = f"{MODEL}: Prompt2Model demo"
TASK = {
    "instruction": "Write the text in capital letters.",
    "demonstrations": [
        {"input": "good morning", "output": "GOOD MORNING"},
        {"input": "see you at 5 pm", "output": "SEE YOU AT 5 PM"},
    ],
    "language": "en",  # `p2m parse --json` writes more keys; the demo ignores them
}
# Shaped like `p2m evaluate --json` with --teacher: "bertscore" is an alias of "bertscore_f1".
METRICS = {
    "metrics": {"exact_match": 0.5, "chrf": 61.25, "bertscore_f1": 0.9, "bertscore": 0.9},
    "num_examples": 40,
    "teacher": {"metrics": {"exact_match": 0.75, "chrf": 70.0, "bertscore_f1": 0.95}},
}


class StandInKServe:
    """Stand-in for the KServe model server: its v1 REST protocol, one model that upper-cases.

    An input starting with "fail:" gets a 500 with KServe's ``{"error": ...}`` body; any other
    model name a 404. It can be stopped and started again on the same port.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> StandInKServe:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _V1Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _V1Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"models": [MODEL]})
        elif self.path == f"/v1/models/{MODEL}":
            self._send(200, {"name": MODEL, "ready": True})
        else:
            self._send(
                404, {"error": f"Model with name {self.path.split('/')[-1]} does not exist."}
            )

    def do_POST(self) -> None:
        if self.path != f"/v1/models/{MODEL}:predict":
            self._send(404, {"error": "Model does not exist."})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        instances = body.get("instances")
        if not isinstance(instances, list) or not all(isinstance(i, str) for i in instances):
            self._send(400, {"error": 'expected {"instances": [str, ...]}'})
        elif any(i.startswith("fail:") for i in instances):
            self._send(500, {"error": "stand-in failure on purpose"})
        else:
            self._send(200, {"predictions": [i.upper() for i in instances]})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DemoProcess:
    """`p2m demo` in a subprocess on a port it picks (--port 0); its URL read from stdout."""

    def __init__(self, folder: Path, *args: str) -> None:
        self._cmd = [sys.executable, "-m", "p2m", "demo", *args, "--port", "0"]
        self._out = folder / "demo.out"
        self._err = folder / "demo.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout_s: float = 60.0) -> DemoProcess:
        with self._out.open("wb") as out, self._err.open("wb") as err:
            self.proc = subprocess.Popen(self._cmd, stdout=out, stderr=err, cwd=REPO)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(r"running at (http://\S+)", self._out.read_text())
            if found:
                self.url = found.group(1).rstrip("/")
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"p2m demo exited early:\n{self.log()}")
            time.sleep(0.2)
        self.proc.kill()
        raise TimeoutError(f"p2m demo not serving in {timeout_s}s:\n{self.log()}")

    def stop(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return self._out.read_text() + self._err.read_text(errors="replace")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandInKServe]:
    server = StandInKServe().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo(stand_in: StandInKServe, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo's URL; no --name: the demo takes the one model the endpoint lists.

    On teardown it gets SIGTERM and must exit 0 without a traceback.
    """
    folder = tmp_path_factory.mktemp("demo")
    (folder / "task.json").write_text(json.dumps(TASK))
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    process = DemoProcess(
        folder,
        "--endpoint",
        stand_in.url,
        "--timeout",
        "10",
        "--task-json",
        str(folder / "task.json"),
        "--metrics-json",
        str(folder / "metrics.json"),
    ).start()
    yield process.url
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log()


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _component(demo_url: str, elem_id: str) -> dict[str, Any]:
    config = json.loads(_get(f"{demo_url}/config")[1])
    found = [c["props"] for c in config["components"] if c["props"].get("elem_id") == elem_id]
    assert len(found) == 1, f"no single component with elem_id {elem_id}"
    return dict(found[0])


def _predict(demo_url: str, text: str) -> str:
    from gradio_client import Client

    client = Client(demo_url, verbose=False, download_files=False)
    try:
        return str(client.predict(text, api_name="/predict"))
    finally:
        client.close()


def test_page_loads_with_title_and_instruction(demo: str):
    status, html = _get(f"{demo}/")
    assert status == 200
    assert TITLE in html
    assert _component(demo, "p2m-description")["value"] == TASK["instruction"]


def test_prediction_through_gradio_api_is_the_endpoints_answer(demo: str):
    assert _predict(demo, "hello, demo") == "HELLO, DEMO"


def test_examples_are_the_demonstrations_inputs(demo: str):
    samples = _component(demo, "p2m-examples")["samples"]
    assert samples == [[d["input"]] for d in TASK["demonstrations"]]


def test_metrics_of_student_and_teacher_are_shown(demo: str):
    table = _component(demo, "p2m-metrics")["value"]
    assert "| metric | student | teacher |" in table
    assert "| exact_match | 0.5000 | 0.7500 |" in table
    assert "| chrf | 61.2500 | 70.0000 |" in table
    assert "| bertscore_f1 | 0.9000 | 0.9500 |" in table
    assert "| bertscore |" not in table  # the alias is shown once


def test_endpoint_error_is_reported_with_its_reason(demo: str):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"answered HTTP 500: stand-in failure on purpose"):
        _predict(demo, "fail: please")


def test_endpoint_down_gives_a_clear_error_and_the_demo_recovers(
    demo: str, stand_in: StandInKServe
):
    from gradio_client.exceptions import AppError

    stand_in.stop()
    try:
        with pytest.raises(AppError, match=r"is not reachable"):
            _predict(demo, "anyone there?")
    finally:
        stand_in.start()
    assert _predict(demo, "back again") == "BACK AGAIN"


def _one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines on stderr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing task file", "--task-json: file not found:"),
        ("task not JSON", "is not valid JSON: Expecting value (line 1, column 1)"),
        ("task without instruction", "task.instruction: must be a non-empty string"),
        ("metric not a number", "metrics.student.chrf: must be a number, not 'high'"),
        ("endpoint not http", "--endpoint: must be an http:// or https:// URL with a host"),
        ("endpoint missing", "Missing option '--endpoint'"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path: Path, case: str, message: str):
    task, metrics = tmp_path / "task.json", tmp_path / "metrics.json"
    task.write_text(json.dumps(TASK))
    metrics.write_text(json.dumps({"student": {"chrf": 61.0}}))
    endpoint = ["--endpoint", "http://127.0.0.1:9"]
    if case == "missing task file":
        task = tmp_path / "absent.json"
    elif case == "task not JSON":
        task.write_text("not json")
    elif case == "task without instruction":
        task.write_text(json.dumps({"demonstrations": []}))
    elif case == "metric not a number":
        metrics.write_text(json.dumps({"student": {"chrf": "high"}}))
    elif case == "endpoint not http":
        endpoint = ["--endpoint", "ftp://127.0.0.1/models"]
    elif case == "endpoint missing":
        endpoint = []
    result = run_p2m(
        "demo",
        *endpoint,
        "--name",
        MODEL,
        "--task-json",
        str(task),
        "--metrics-json",
        str(metrics),
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in _one_line(result.stderr)
    assert "Traceback" not in result.stderr


def test_no_name_and_endpoint_down_exits_1_asking_for_name():
    result = run_p2m("demo", "--endpoint", f"http://127.0.0.1:{free_port()}", timeout=60)
    assert result.returncode == 1, result.stderr
    stderr = _one_line(result.stderr)
    assert "cannot list the endpoint's models" in stderr
    assert "give the model with --name" in stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium not installed (Debian packages chromium, chromium-driver: "
    "`make browser`)",
)
def test_browser_submits_an_input_and_reads_the_output(demo: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    # Both paths given: Selenium Manager (which downloads drivers) is never run.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(f"{demo}/")
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#p2m-input textarea"))
        assert driver.title == TITLE

        # An example fills the input box with a demonstration's input.
        example = TASK["demonstrations"][1]["input"]
        driver.find_element(By.XPATH, f"//*[@id='p2m-examples']//*[text()='{example}']").click()
        wait.until(lambda d: box.get_attribute("value") == example)

        box.clear()
        box.send_keys("typed in a browser")
        driver.find_element(By.ID, "p2m-submit").click()
        output = driver.find_element(By.CSS_SELECTOR, "#p2m-output textarea")
        wait.until(lambda d: output.get_attribute("value") == "TYPED IN A BROWSER")

        # Everything the page loaded came from the demo itself: nothing from the internet.
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert loaded, "the page loaded no resources?"
        assert [url for url in loaded if not url.startswith(demo)] == []
    finally:
        driver.quit()
