"""The demo's inputs (task, metrics, endpoint URL) and its KServe client's error mapping."""

from __future__ import annotations

import json

import httpx
import pytest

from p2m.common.errors import InvalidInput, NotFound, P2MError, Unavailable
from p2m.common.types import Example, ParseMethod, TaskSpec
from p2m.demo.app import RunMetrics, task_from_json
from p2m.demo.endpoint import KServeClient, check_endpoint


def test_flat_metrics_are_one_column():
    metrics = RunMetrics.from_json({"exact_match": 1, "chrf": 55.5})
    assert metrics.columns == (("model", {"exact_match": 1.0, "chrf": 55.5}),)
    assert metrics.to_markdown().splitlines() == [
        "| metric | model |",
        "|---|---:|",
        "| exact_match | 1.0000 |",
        "| chrf | 55.5000 |",
    ]


def test_subject_metrics_are_columns_and_missing_cells_say_so():
    metrics = RunMetrics.from_json(
        {"student": {"exact_match": 0.5, "chrf": 60.0}, "teacher": {"metrics": {"chrf": 70.0}}}
    )
    assert [subject for subject, _ in metrics.columns] == ["student", "teacher"]
    assert "| exact_match | 0.5000 | n/a |" in metrics.to_markdown()


def test_evaluate_report_gives_student_and_teacher_and_drops_the_alias():
    report = {
        "metrics": {"bertscore_f1": 0.9, "bertscore": 0.9},
        "num_examples": 3,
        "latency": {"p50_ms": 1.0},
        "teacher": {"metrics": {"bertscore_f1": 0.8, "bertscore": 0.8}, "num_examples": 3},
    }
    table = RunMetrics.from_json(report).to_markdown()
    assert "| metric | student | teacher |" in table
    assert "| bertscore_f1 | 0.9000 | 0.8000 |" in table
    assert "| bertscore |" not in table


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "metrics"),
        ({}, "metrics"),
        ({"chrf": "high"}, "metrics.chrf"),
        ({"chrf": True}, "metrics.chrf"),
        ({"chrf": float("nan")}, "metrics.chrf"),
        ({"student": {"chrf": 1.0}, "teacher": 2.0}, "metrics.teacher"),
        ({"metrics": {}}, "metrics.metrics"),
    ],
)
def test_bad_metrics_name_the_field(data: object, field: str):
    with pytest.raises(InvalidInput) as caught:
        RunMetrics.from_json(data)
    assert caught.value.field == field


def test_markdown_cells_cannot_break_the_table():
    table = RunMetrics.from_json({"a|b<i>": 1.0}).to_markdown()
    assert "| a\\|b&lt;i&gt; | 1.0000 |" in table


def test_task_keeps_instruction_and_demonstrations_and_ignores_other_keys():
    task = task_from_json(
        {
            "instruction": " Translate. ",
            "demonstrations": [{"input": "hola", "output": "hello"}],
            "language": "es",
        }
    )
    assert task.instruction == "Translate."
    assert [(d.input, d.output) for d in task.demonstrations] == [("hola", "hello")]
    assert task_from_json({"instruction": "x"}).demonstrations == ()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("text", "task"),
        ({"instruction": ""}, "task.instruction"),
        ({"instruction": "x", "demonstrations": {}}, "task.demonstrations"),
        ({"instruction": "x", "demonstrations": ["a"]}, "task.demonstrations[0]"),
        ({"instruction": "x", "demonstrations": [{"input": "a"}]}, "task.demonstrations[0].output"),
    ],
)
def test_bad_task_names_the_field(data: object, field: str):
    with pytest.raises(InvalidInput) as caught:
        task_from_json(data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://model.example.svc/prefix/ ", "https://model.example.svc/prefix"),
    ],
)
def test_endpoint_is_normalised(url: str, expected: str):
    assert check_endpoint(url) == expected


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:8080", "ftp://host", "http://", "http://h:99999", "http://h:0", "http://h/?q=1"],
)
def test_bad_endpoint_is_invalid_input(url: str):
    with pytest.raises(InvalidInput):
        check_endpoint(url, "--endpoint")


def _client(handler: object) -> KServeClient:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return KServeClient("http://kserve.test", "my model", timeout_s=1, transport=transport)


def test_predict_posts_v1_instances_and_reads_the_prediction():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"predictions": [{"label": "pos"}]})

    assert _client(handler).predict("great") == '{"label": "pos"}'
    assert str(seen[0].url) == "http://kserve.test/v1/models/my%20model:predict"
    assert json.loads(seen[0].content) == {"instances": ["great"]}


@pytest.mark.parametrize(
    ("response", "error", "text"),
    [
        (httpx.Response(404, json={"error": "Model x does not exist."}), NotFound, "HTTP 404"),
        (httpx.Response(400, json={"error": "bad"}), InvalidInput, "HTTP 400: bad"),
        (httpx.Response(503, text="overloaded"), Unavailable, "HTTP 503: overloaded"),
        (httpx.Response(200, text="<html>"), P2MError, "other than JSON"),
        (httpx.Response(200, json={"predictions": []}), P2MError, "without one prediction"),
    ],
)
def test_endpoint_failures_become_typed_errors(
    response: httpx.Response, error: type[Exception], text: str
):
    with pytest.raises(error, match=text):
        _client(lambda request: response).predict("x")


def test_unreachable_endpoint_is_unavailable():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(Unavailable, match="is not reachable"):
        _client(handler).predict("x")


def test_list_models_reads_the_v1_list():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(200, json={"models": ["a", "b"]})

    assert _client(handler).list_models() == ["a", "b"]


def test_a_task_spec_survives_its_json_form():
    task = TaskSpec(
        " Traduire. ",
        (Example("hola", "hello"),),
        language="fr",
        original_instruction="Traduire.",
        parse_method=ParseMethod.LLM,
        warnings=("one demonstration",),
        prompt_sha256="ab" * 32,
    )
    assert TaskSpec.from_json(task.to_json()) == task
    with pytest.raises(InvalidInput) as caught:
        TaskSpec.from_json({**task.to_json(), "parse_method": "guess"}, "job.task")
    assert caught.value.field == "job.task.parse_method"
