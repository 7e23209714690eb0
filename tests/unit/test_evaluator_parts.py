"""The evaluator's parts without a model: teacher prompt, latency, worst examples, JSONL, keys."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from p2m.common.budget import Budget
from p2m.common.errors import InvalidInput, LLMError, LLMOutputError, Unavailable
from p2m.common.llm import ChatResult, UsageCounters
from p2m.common.teacher_prompt import (
    answer_messages,
    clean_answer,
    stop_sequences,
    teacher_instruction,
)
from p2m.common.types import Example, TaskSpec
from p2m.evaluator.engine import (
    EvalData,
    EvaluateOptions,
    EvaluationResult,
    Latency,
    ScoredExample,
    StudentSubject,
    TeacherSubject,
    evaluation_key,
    latency_of,
    read_jsonl,
    worst_examples,
)
from p2m.evaluator.service import options_from_pb
from p2m.evaluator.teacher import TeacherPredictor
from prompt2model.v1 import evaluator_pb2

TASK = TaskSpec(
    "Answer with the capital city of the country.",
    (Example("France", "Paris"), Example("Japan", "Tokyo")),
)


def test_teacher_request_is_the_instruction_then_each_example_as_a_chat_turn():
    messages = answer_messages(TASK.instruction, TASK.demonstrations, " Italy ")
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[0]["content"].startswith("Answer with the capital city of the country.\n\n")
    assert "output only" in messages[0]["content"]
    assert [m["content"] for m in messages[1:]] == ["France", "Paris", "Japan", "Tokyo", "Italy"]


def test_the_teacher_sees_the_persons_own_instruction_not_its_translation():
    task = TaskSpec(
        "Write one line of Python.",
        language="ja",
        original_instruction="Pythonで1行のコードを生成してください。",
    )
    assert teacher_instruction(task) == "Pythonで1行のコードを生成してください。"
    assert teacher_instruction(TASK) == TASK.instruction


def test_one_line_outputs_stop_at_a_blank_line_not_at_the_first_line_break():
    assert stop_sequences(TASK.demonstrations) == ("\n\n", "\nInput:", "\ninput:")
    assert "\n\n" not in stop_sequences([Example("a", "two\nlines")])


@pytest.mark.parametrize(
    ("answer", "single_line", "cleaned"),
    [
        (" Rome ", True, "Rome"),
        ("Output: Rome", True, "Rome"),
        ("Answer: Rome", True, "Rome"),
        ("Rome\nInput: Spain\nOutput: Madrid", True, "Rome"),
        ("\nRome\nThe capital of Italy is Rome.", True, "Rome"),
        ("```python\nprint(x)\n```\nThis prints x.", True, "print(x)"),
        ("```\nprint(x)", True, "print(x)"),
        ("line one\nline two\nInput: x", False, "line one\nline two"),
        ("", True, ""),
    ],
)
def test_clean_answer(answer, single_line, cleaned):
    assert clean_answer(answer, single_line) == cleaned


class _FakeLLM:
    """Answers "<input>!" and charges the budget like LLMClient does."""

    def __init__(self, fail_on: str = "", unreadable_on: str = "") -> None:
        self.fail_on = fail_on
        self.unreadable_on = unreadable_on
        self.prompts: list[str] = []

    async def chat(self, messages, *, temperature, max_tokens, stop, budget, seed=None):
        reservation = budget.reserve(10, max_tokens)
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        await asyncio.sleep(0)
        budget.settle(reservation, 3)
        if self.fail_on and prompt == self.fail_on:
            raise LLMError("endpoint down", attempts=2)
        if self.unreadable_on and prompt == self.unreadable_on:
            raise LLMOutputError("could not read the model's answer")
        return ChatResult(prompt + "!\nInput: more", "stop", 10, 2, 0.05, 1)


async def test_teacher_answers_in_order_within_the_budget():
    llm = _FakeLLM()
    done: list[int] = []
    predictor = TeacherPredictor(
        llm, TASK, max_new_tokens=8, concurrency=1, budget=Budget(max_requests=3)
    )
    answers = await predictor.predict(["a", "b", "c", "d", "e"], done.append)
    assert answers.predictions == ("a!", "b!", "c!", None, None)
    assert answers.latencies_s[:3] == (0.05, 0.05, 0.05) and answers.latencies_s[3] is None
    assert answers.usage.requests == 3 and answers.usage.completion_tokens == 6
    assert done == [1, 2, 3]


async def test_teacher_failure_is_unavailable():
    predictor = TeacherPredictor(
        _FakeLLM(fail_on="b"), TASK, max_new_tokens=8, concurrency=2, budget=Budget()
    )
    with pytest.raises(Unavailable, match="endpoint down"):
        await predictor.predict(["a", "b", "c"])


async def test_an_answer_the_endpoint_could_not_read_scores_as_empty_not_as_an_outage():
    predictor = TeacherPredictor(
        _FakeLLM(unreadable_on="b"), TASK, max_new_tokens=8, concurrency=2, budget=Budget()
    )
    answers = await predictor.predict(["a", "b", "c"])
    assert answers.predictions == ("a!", "", "c!")
    assert answers.latencies_s == (0.05, None, 0.05)
    assert answers.usage.requests == 3


def test_latency_percentiles():
    latency = latency_of([0.010, 0.020, 0.030, 0.040, 0.100], total_s=0.2)
    assert latency.mean_ms == pytest.approx(40.0)
    assert latency.p50_ms == pytest.approx(30.0)
    assert latency.p95_ms == pytest.approx(88.0)  # 40 + 0.8 * (100 - 40)
    assert latency.total_seconds == pytest.approx(0.2)
    assert latency_of([], 0.0) == Latency()


def test_worst_examples_rank_by_first_metric_then_chrf():
    examples = [Example(f"in{i}", ref) for i, ref in enumerate(["Paris", "Rome", "Oslo", "Bern"])]
    predictions = ["Paris", "Roma", "Xyz", "Bern"]
    per_example = [
        {"exact_match": 1.0},
        {"exact_match": 0.0},
        {"exact_match": 0.0},
        {"exact_match": 1.0},
    ]
    worst = worst_examples(examples, predictions, per_example, ["exact_match"], 3)
    # Both misses score 0: "Xyz" shares nothing with "Oslo", "Roma" some of "Rome".
    assert [w.prediction for w in worst] == ["Xyz", "Roma", "Paris"]
    assert worst[0] == ScoredExample("in2", "Oslo", "Xyz", {"exact_match": 0.0})


def test_read_jsonl_names_the_bad_line(tmp_path: Path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"q": "a", "a": 1}\n\n{"q": "b"}\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"line 3: no field 'a'"):
        read_jsonl(path, "q", "a")
    path.write_text('{"q": "a", "a": 1}\n[1]\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="line 2: not a JSON object"):
        read_jsonl(path, "q", "a")
    path.write_text('{"q": "a", "a": 1}\n{"q": "b", "a": true}\n', encoding="utf-8")
    data = read_jsonl(path, "q", "a")
    assert data.examples == (Example("a", "1"), Example("b", "true"))
    assert data.key != read_jsonl(path, "a", "q").key  # the fields read are part of the key
    with pytest.raises(InvalidInput, match="file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_options_validation_names_the_field():
    with pytest.raises(InvalidInput) as info:
        EvaluateOptions(batch_size=2000).validate()
    assert info.value.field == "options.decoding.batch_size"
    message = evaluator_pb2.EvaluateOptions(metrics=["chrf", "meteor"])
    with pytest.raises(InvalidInput, match="meteor"):
        options_from_pb(message)
    message = evaluator_pb2.EvaluateOptions(decoding=evaluator_pb2.DecodingOptions(num_beams=-1))
    with pytest.raises(InvalidInput) as info:
        options_from_pb(message)
    assert info.value.field == "options.decoding.num_beams"
    defaults = options_from_pb(evaluator_pb2.EvaluateOptions())
    assert defaults == EvaluateOptions(metrics=("exact_match", "chrf"), num_worst_examples=5)


def test_key_depends_on_model_data_options_and_the_teachers_prompt():
    data = EvalData((Example("a", "b"),), "d" * 64, "test")
    student = StudentSubject(Path("/m"), "a" * 64)
    options = EvaluateOptions()
    key = evaluation_key(student, data, options, None, "", "")
    assert key == evaluation_key(StudentSubject(Path("/x"), "a" * 64), data, options, None, "", "")
    assert key != evaluation_key(StudentSubject(Path("/m"), "b" * 64), data, options, None, "", "")
    assert key != evaluation_key(student, data, EvaluateOptions(max_examples=1), None, "", "")
    teacher = TeacherSubject()
    one = evaluation_key(teacher, data, options, TASK, "smollm2", "")
    assert one != evaluation_key(teacher, data, options, TaskSpec("other"), "smollm2", "")
    assert one != evaluation_key(teacher, data, options, TASK, "qwen", "")


def test_result_json_round_trip():
    result = EvaluationResult(
        metrics={"chrf": 50.0},
        num_examples=1,
        worst_examples=(ScoredExample("i", "r", "p", {"chrf": 50.0}),),
        notes={"subject": "student"},
        latency=Latency(1.0, 1.0, 1.0, 0.001),
        model_size_bytes=10,
        num_parameters=5,
        usage=UsageCounters(requests=2),
    )
    data = json.loads(json.dumps(result.to_json()))
    assert EvaluationResult.from_json(data) == result
    assert set(data) >= {
        "metrics",
        "num_examples",
        "latency",
        "model_size_bytes",
        "num_parameters",
        "notes",
        "worst_examples",
    }
