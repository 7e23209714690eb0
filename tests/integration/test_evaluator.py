"""The real evaluator service on loopback: students (decoder-only and encoder-decoder), the
teacher through the real SmolLM2 endpoint, error codes, and `p2m evaluate` as a person runs it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from p2m.common.artifacts import ArtifactStore
from p2m.common.splits import write_splits
from p2m.common.student import StudentSpec
from p2m.common.types import Example
from prompt2model.v1 import common_pb2, evaluator_pb2, evaluator_pb2_grpc
from tests.support import ServiceProcess, run_p2m

SMOLLM2 = "HuggingFaceTB--SmolLM2-135M-Instruct"
INSTRUCTION = "Answer with the capital city of the country."
DEMONSTRATIONS = [Example("France", "Paris"), Example("Japan", "Tokyo")]
TEST = [
    Example("Italy", "Rome"),
    Example("Germany", "Berlin"),
    Example("Spain", "Madrid"),
    Example("Canada", "Ottawa"),
    Example("Egypt", "Cairo"),
    Example("Peru", "Lima"),
]
MISSING_URI = "p2m-artifact://sha256/" + "0" * 64
TASK = common_pb2.TaskSpec(
    instruction=INSTRUCTION,
    demonstrations=[common_pb2.Example(input=d.input, output=d.output) for d in DEMONSTRATIONS],
)


@dataclass(frozen=True)
class Setup:
    stub: evaluator_pb2_grpc.EvaluatorStub
    service: ServiceProcess
    data_dir: Path
    smollm2: common_pb2.ArtifactRef
    tiny_t5: common_pb2.ArtifactRef
    tiny_t5_folder: Path
    dataset: common_pb2.ArtifactRef


def _ref(ref) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(uri=ref.uri, sha256=ref.sha256, kind=ref.kind)


@pytest.fixture(scope="module")
def setup(
    local_llm: ServiceProcess,
    retriever_data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    from tests.tiny_models import build_tiny_t5

    work = tmp_path_factory.mktemp("evaluator-work")
    data_dir = tmp_path_factory.mktemp("evaluator")
    store = ArtifactStore(data_dir / "artifacts")
    # A decoder-only "student": SmolLM2 from the local model store, as is (hard links: no copy).
    source = retriever_data_dir / "models" / "hf" / SMOLLM2
    smollm2 = work / "smollm2"
    shutil.copytree(source, smollm2, copy_function=os.link)
    StudentSpec("decoder-only", INSTRUCTION, max_output_tokens=8).save(smollm2)
    # An encoder-decoder one: a tiny random T5 with SmolLM2's tokenizer.
    tiny_t5 = build_tiny_t5(source, work / "tiny-t5")
    StudentSpec("encoder-decoder", INSTRUCTION, max_output_tokens=8).save(tiny_t5)
    dataset = work / "dataset"
    write_splits({"train": DEMONSTRATIONS, "test": TEST}, dataset)
    refs = (
        store.put_dir(smollm2, "model"),
        store.put_dir(tiny_t5, "model"),
        store.put_dir(dataset, "dataset"),
    )
    service = ServiceProcess(
        "evaluator", data_dir, "--llm-base-url", local_llm.base_url, "--llm-model", "smollm2"
    ).start()
    with grpc.insecure_channel(service.address) as channel:
        yield Setup(
            evaluator_pb2_grpc.EvaluatorStub(channel),
            service,
            data_dir,
            _ref(refs[0]),
            _ref(refs[1]),
            tiny_t5,
            _ref(refs[2]),
        )
    service.stop()


def _options(*metrics: str, **kwargs) -> evaluator_pb2.EvaluateOptions:
    decoding = evaluator_pb2.DecodingOptions(max_new_tokens=8, batch_size=4)
    return evaluator_pb2.EvaluateOptions(metrics=list(metrics), decoding=decoding, **kwargs)


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_smollm2_student_scores_and_is_cached(setup: Setup):
    request = evaluator_pb2.EvaluateRequest(
        model=setup.smollm2,
        dataset=setup.dataset,
        options=_options("exact_match", "chrf", "bertscore_f1", num_worst_examples=3),
        run_id="eval-test",
    )
    reply = setup.stub.Evaluate(request, timeout=300)
    metrics = reply.metrics
    assert set(metrics.values) == {"exact_match", "chrf", "bertscore_f1"}
    assert 0.0 <= metrics.values["exact_match"] <= 1.0
    assert 0.0 <= metrics.values["chrf"] <= 100.0
    assert 0.0 < metrics.values["bertscore_f1"] <= 1.0 + 1e-6
    assert metrics.num_examples == len(TEST)
    assert metrics.notes["bertscore_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metrics.notes["bertscore_layers"] == "6"
    # The worst come lowest first: by exact match, ties by ChrF++.
    worst = [(w.scores["exact_match"], w.scores["chrf"]) for w in metrics.worst_examples]
    assert len(worst) == 3 and worst == sorted(worst)
    refs = {e.input: e.output for e in TEST}
    assert all(refs[w.example.input] == w.example.output for w in metrics.worst_examples)
    assert reply.model_size_bytes > 200_000_000  # SmolLM2's weights
    assert reply.num_parameters > 100_000_000
    assert 0 < reply.latency.p50_ms <= reply.latency.p95_ms and reply.latency.total_seconds > 0
    assert reply.llm_usage.requests == 0 and not reply.cached
    assert metrics.notes["runtime"] == "llama.cpp q8_0"  # as the model server serves it
    again = setup.stub.Evaluate(request, timeout=60)
    assert again.cached
    assert dict(again.metrics.values) == dict(metrics.values)
    assert list(again.metrics.worst_examples) == list(metrics.worst_examples)
    # In f32 llama.cpp and transformers give the same answers, hence the same scores.
    request.options.precision = "f32"
    full = setup.stub.Evaluate(request, timeout=300)
    assert not full.cached and full.metrics.notes["runtime"] == "llama.cpp f32"
    request.options.runtime, request.options.precision = "transformers", ""
    plain = setup.stub.Evaluate(request, timeout=300)
    assert not plain.cached and plain.metrics.notes["runtime"] == "transformers f32"
    assert dict(plain.metrics.values) == dict(full.metrics.values)


def test_examples_given_in_the_request_are_scored_instead_of_a_dataset(setup: Setup):
    request = evaluator_pb2.EvaluateRequest(
        model=setup.tiny_t5, options=_options("exact_match", "chrf"), run_id="eval-inline"
    )
    request.examples.extend(common_pb2.Example(input=e.input, output=e.output) for e in TEST[:2])
    reply = setup.stub.Evaluate(request, timeout=300)
    assert reply.metrics.num_examples == 2
    assert {w.example.input for w in reply.metrics.worst_examples} <= {e.input for e in TEST[:2]}
    request.examples.add(input="one more", output="example")
    assert setup.stub.Evaluate(request, timeout=300).metrics.num_examples == 3  # not cached


def test_encoder_decoder_student_streams_progress(setup: Setup):
    request = evaluator_pb2.EvaluateRequest(
        model=setup.tiny_t5,
        dataset=setup.dataset,
        split="test",
        options=_options("chrf", max_examples=5),
    )
    messages = list(setup.stub.EvaluateStream(request, timeout=300))
    done = [m.progress.done for m in messages]
    assert done == sorted(done) and done[-1] == 5 and len(messages) >= 3
    assert all(m.progress.stage == common_pb2.STAGE_EVALUATE for m in messages)
    assert all(not m.HasField("result") for m in messages[:-1])
    result = messages[-1].result
    assert result.metrics.num_examples == 5
    assert set(result.metrics.values) == {"chrf"}
    assert result.metrics.notes["architecture"] == "encoder-decoder"
    assert 0 < result.num_parameters < 10_000_000  # tiny
    assert len(result.metrics.worst_examples) == 5  # the default, 5


def test_teacher_through_the_local_llm(setup: Setup):
    request = evaluator_pb2.EvaluateRequest(
        teacher=evaluator_pb2.TeacherModel(max_requests=20),
        dataset=setup.dataset,
        task=TASK,
        options=_options("exact_match", "chrf", max_examples=3),
    )
    reply = setup.stub.Evaluate(request, timeout=300)
    assert reply.metrics.num_examples == 3
    assert reply.llm_usage.requests >= 3 and reply.llm_usage.completion_tokens > 0
    assert reply.latency.mean_ms > 0 and reply.latency.total_seconds > 0
    assert reply.model_size_bytes == 0 and reply.num_parameters == 0
    assert reply.metrics.notes["subject"] == "teacher"
    assert reply.metrics.notes["teacher_model"] == "smollm2"
    # A budget smaller than the split: the examples left unsent are not counted.
    request.teacher.max_requests = 2
    reply = setup.stub.Evaluate(request, timeout=300)
    assert reply.metrics.num_examples == 2
    assert reply.metrics.notes["unscored_examples"] == "1"
    assert reply.llm_usage.requests == 2


@pytest.mark.parametrize(
    ("change", "code", "text"),
    [
        (
            lambda r: r.options.metrics.append("rouge_l"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "rouge_l",
        ),
        (lambda r: r.ClearField("model"), grpc.StatusCode.INVALID_ARGUMENT, "subject"),
        (lambda r: r.dataset.ClearField("uri"), grpc.StatusCode.INVALID_ARGUMENT, "dataset.uri"),
        (lambda r: setattr(r, "split", "validation"), grpc.StatusCode.NOT_FOUND, "validation"),
        (lambda r: setattr(r, "split", "dev"), grpc.StatusCode.INVALID_ARGUMENT, "split"),
        (
            lambda r: r.model.CopyFrom(common_pb2.ArtifactRef(uri=MISSING_URI)),
            grpc.StatusCode.NOT_FOUND,
            "0000",
        ),
        (
            lambda r: setattr(r.options.decoding, "batch_size", 5000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "options.decoding.batch_size",
        ),
        (
            lambda r: r.teacher.CopyFrom(evaluator_pb2.TeacherModel()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "task.instruction",
        ),
        (lambda r: setattr(r, "run_id", "x" * 65), grpc.StatusCode.INVALID_ARGUMENT, "run_id"),
        (
            lambda r: setattr(r.options, "runtime", "onnx"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "options.runtime",
        ),
        (
            lambda r: setattr(r.options, "precision", "int4"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "options.precision",
        ),
        (  # the tiny T5 is an encoder-decoder
            lambda r: setattr(r.options, "runtime", "llama.cpp"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "llama.cpp cannot serve this student: it is an encoder-decoder model",
        ),
        (
            lambda r: r.examples.add(input="a", output="b"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not both",
        ),
        (
            lambda r: (r.ClearField("dataset"), r.examples.add(input="a", output=" ")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "examples[0]",
        ),
    ],
)
def test_bad_requests(setup: Setup, change, code, text):
    request = evaluator_pb2.EvaluateRequest(
        model=setup.tiny_t5, dataset=setup.dataset, options=_options("exact_match")
    )
    change(request)
    error = _error(lambda: setup.stub.Evaluate(request, timeout=60))
    assert error.code() == code, error.details()
    assert text in error.details()


# ---------------------------------------------------------------- the command line


p2m = run_p2m


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines on stderr


@pytest.fixture(scope="module")
def test_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("evaluate-cli") / "capitals.jsonl"
    rows = [{"country": e.input, "capital": e.output} for e in TEST]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_cli_json_report(setup: Setup, test_file: Path, tmp_path: Path):
    result = p2m(
        "evaluate",
        "--model",
        str(setup.tiny_t5_folder),
        "--test",
        str(test_file),
        "--input-field",
        "country",
        "--output-field",
        "capital",
        "--json",
        "--data-dir",
        str(tmp_path),
        "--max-examples",
        "4",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert set(report["metrics"]) == {"exact_match", "chrf", "bertscore_f1", "bertscore"}
    assert report["metrics"]["bertscore"] == report["metrics"]["bertscore_f1"]
    assert report["num_examples"] == 4
    assert set(report["latency"]) == {"mean_ms", "p50_ms", "p95_ms", "total_seconds"}
    assert report["model_size_bytes"] > 0 and report["num_parameters"] > 0
    assert report["notes"]["bertscore_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(report["worst_examples"]) == 4
    assert set(report["worst_examples"][0]) == {"input", "reference", "prediction", "scores"}
    assert "teacher" not in report


def test_cli_decodes_with_the_serving_runtime_setting(setup: Setup, test_file: Path, tmp_path):
    smollm2 = ArtifactStore(setup.data_dir / "artifacts").path(setup.smollm2.sha256)
    args = ["evaluate", "--model", str(smollm2), "--test", str(test_file), "--json"]
    args += ["--input-field", "country", "--output-field", "capital", "--metrics", "exact_match"]
    args += ["--max-examples", "2", "--data-dir", str(tmp_path)]
    runtimes = {}
    for setting in ("auto", "transformers"):
        result = p2m(*args, env={"P2M_SERVING_RUNTIME": setting})
        assert result.returncode == 0, result.stderr
        runtimes[setting] = json.loads(result.stdout)["notes"]["runtime"]
    # Unset on the command line, the runtime is the setting's, as the model server's would be.
    assert runtimes == {"auto": "llama.cpp q8_0", "transformers": "transformers f32"}


def test_cli_student_and_teacher_side_by_side(
    setup: Setup, test_file: Path, tmp_path: Path, local_llm: ServiceProcess
):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(
        INSTRUCTION
        + "\n\n"
        + "".join(f'input="{d.input}"\noutput="{d.output}"\n\n' for d in DEMONSTRATIONS),
        encoding="utf-8",
    )
    result = p2m(
        "evaluate",
        "--model",
        str(setup.tiny_t5_folder),
        "--test",
        str(test_file),
        "--input-field",
        "country",
        "--output-field",
        "capital",
        "--teacher",
        "--prompt-file",
        str(prompt),
        "--llm-base-url",
        local_llm.base_url,
        "--metrics",
        "exact_match",
        "--metrics",
        "chrf",
        "--max-examples",
        "2",
        "--max-new-tokens",
        "8",
        "--json",
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["notes"]["subject"] == "student"
    teacher = report["teacher"]
    assert teacher["notes"]["subject"] == "teacher"
    assert set(teacher["metrics"]) == set(report["metrics"]) == {"exact_match", "chrf"}
    assert teacher["num_examples"] == report["num_examples"] == 2
    assert teacher["llm_usage"]["requests"] >= 2
    assert teacher["model_size_bytes"] == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--output-field", "answer"], "line 1: no field 'answer'"),
        (["--metrics", "exact_match,bleu"], "unknown metric 'bleu'"),
        (["--batch-size", "-1"], "invalid option batch_size"),
        (["--teacher"], "--teacher needs --prompt-file"),
    ],
)
def test_cli_bad_input_exits_2(setup: Setup, test_file: Path, tmp_path: Path, flags, message):
    result = p2m(
        "evaluate",
        "--model",
        str(setup.tiny_t5_folder),
        "--test",
        str(test_file),
        "--input-field",
        "country",
        "--output-field",
        "capital",
        "--data-dir",
        str(tmp_path),
        *flags,
    )
    assert result.returncode == 2, result.stderr
    assert message in _flat(result.stderr)
    assert "Traceback" not in result.stderr


def test_cli_bad_line_is_named(setup: Setup, tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n{"input": "c"}\n', encoding="utf-8")
    result = p2m(
        "evaluate",
        "--model",
        str(setup.tiny_t5_folder),
        "--test",
        str(path),
        "--data-dir",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert "line 2: no field 'output'" in _flat(result.stderr)
    path.write_text('{"input": "a", "output": "b"}\n', encoding="utf-8")
    missing = p2m("evaluate", "--model", str(tmp_path / "nope"), "--test", str(path))
    assert missing.returncode == 2 and "no such folder" in _flat(missing.stderr)
