"""llama.cpp serves a student with the same answers as transformers (f32), in-process and behind
the KServe model server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from p2m.common.procs import pid_running
from p2m.common.student import Decoding, Student, StudentSpec
from p2m.llamacpp.student import LlamaCppStudent
from tests.support import REPO, free_port, run_p2m
from tests.tiny_models import build_tiny_decoder

INPUTS = [
    "What is the capital of France?",
    "Name a colour of the sky.",
    "2 + 2 =",
    "Who wrote Hamlet?",
    "Translate 'cat' into German.",
    "日本の首都はどこですか",
    "Ünïcödé: ça va?",
    "List three fruits, separated by commas, in alphabetical order please.",
]
SMOLLM2_FOLDER = "models/hf/HuggingFaceTB--SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def smol_student(retriever_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M from the session's model store, as a student folder (untrained)."""
    folder = tmp_path_factory.mktemp("smol") / "student"
    shutil.copytree(retriever_data_dir / SMOLLM2_FOLDER, folder, copy_function=os.link)
    spec = StudentSpec("decoder-only", "Answer briefly.", max_output_tokens=24, base_model="smol")
    spec.save(folder)
    return folder


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_llama_cpp_answers_as_transformers_on_tiny_students(
    model_type: str, tmp_path: Path
) -> None:
    folder = build_tiny_decoder(tmp_path / model_type, model_type=model_type)
    decoding = Decoding(max_new_tokens=12)
    expected = Student(folder).predict(INPUTS, decoding)
    served = LlamaCppStudent(folder, "f32", tmp_path / "cache", parallel=4)
    assert served.predict(INPUTS, decoding) == expected
    assert served.predict(INPUTS[:1], decoding) == expected[:1]  # a batch of one alike
    assert served.predict([], decoding) == []


def test_both_runtimes_hold_answers_to_the_student_s_output_form(tmp_path: Path) -> None:
    """A labels form read as the model's own longest answer, slightly changed, moves that answer
    to the label in transformers and in llama.cpp alike; the others are held the same way."""
    folder = build_tiny_decoder(tmp_path / "llama")
    decoding = Decoding(max_new_tokens=12)
    raw = Student(folder).predict(INPUTS, decoding)
    longest = max(raw, key=len)
    spec = replace(
        StudentSpec.load(folder), output_form="labels", output_labels=(longest + "!", "zz")
    )
    spec.save(folder)
    expected = spec.hold(INPUTS, raw)
    assert longest + "!" in expected and expected != raw
    assert Student(folder).predict(INPUTS, decoding) == expected
    served = LlamaCppStudent(folder, "f32", tmp_path / "cache", parallel=4)
    try:
        assert served.predict(INPUTS, decoding) == expected
    finally:
        served.close()


@pytest.mark.timeout(300)
def test_smollm2_in_llama_cpp_f32_is_the_same_model_and_q8_0_q4_0_are_smaller(
    smol_student: Path, tmp_path: Path
) -> None:
    decoding = Decoding(max_new_tokens=24)
    expected = Student(smol_student).predict(INPUTS, decoding)
    cache = tmp_path / "cache"
    full = LlamaCppStudent(smol_student, "f32", cache, parallel=8)
    assert full.predict(INPUTS, decoding) == expected
    exported = full.gguf_path
    stamp = exported.stat().st_mtime_ns
    pid = full.pid
    assert pid is not None and pid_running(pid)
    full.close()
    assert full.pid is None and not pid_running(pid)  # its llama.cpp process is gone
    again = LlamaCppStudent(smol_student, "f32", cache, parallel=2)
    assert again.gguf_path == exported and exported.stat().st_mtime_ns == stamp  # reused
    again.close()

    small = LlamaCppStudent(smol_student, "q8_0", cache, parallel=8)
    assert small.gguf_path.stat().st_size < 0.3 * exported.stat().st_size
    answers = small.predict(INPUTS, decoding)
    assert len(answers) == len(INPUTS) and all(answers)
    # int8 weights move some answers, not most: the first words agree on most inputs.
    same_start = sum(a.split()[:1] == b.split()[:1] for a, b in zip(answers, expected, strict=True))
    assert same_start >= len(INPUTS) // 2, list(zip(answers, expected, strict=True))
    q8_size = small.gguf_path.stat().st_size
    small.close()

    smaller = LlamaCppStudent(smol_student, "q4_0", cache, parallel=2)
    assert smaller.gguf_path.stat().st_size < 0.8 * q8_size
    answers = smaller.predict(INPUTS, decoding)
    assert len(answers) == len(INPUTS) and all(answers)  # llama.cpp reads the 4-bit mix
    smaller.close()


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return dict(json.loads(reply.read()))


@pytest.mark.timeout(300)
def test_serve_model_takes_llama_cpp_in_the_set_precision_and_answers_as_transformers(
    smol_student: Path, tmp_path: Path
) -> None:
    expected = Student(smol_student).predict(INPUTS, Decoding(max_new_tokens=24))
    port = free_port()
    # No --runtime or --precision: auto, and the setting's precision (f32: transformers' answers).
    env = {**os.environ, "P2M_DATA_DIR": str(tmp_path / "data"), "P2M_SERVING_PRECISION": "f32"}
    argv = [sys.executable, "-m", "p2m", "serve-model", "--model", str(smol_student)]
    argv += ["--name", "smol", "--http-port", str(port), "--grpc-port", "0"]
    argv += ["--max-batch-size", "4"]
    server = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "serve-model did not get ready"
            try:
                with urllib.request.urlopen(f"{base}/v2/models/smol/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        reply = _post(f"{base}/v1/models/smol:predict", {"instances": INPUTS})
        assert reply["predictions"] == expected
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as metrics:
            text = metrics.read().decode()
        assert 'p2m_model_runtime_info{model_name="smol",precision="f32",runtime="llama.cpp"}' in (
            text
        )
    finally:
        server.terminate()
        stdout, _ = server.communicate(timeout=60)
    assert f"serving smol at {base}/v1/models/smol:predict (llama.cpp f32)" in stdout
    assert list((tmp_path / "data" / "cache" / "gguf").glob("student-*-f32.gguf"))


def test_serve_model_refuses_llama_cpp_for_an_encoder_decoder(tmp_path: Path) -> None:
    folder = tmp_path / "t5"
    folder.mkdir()
    StudentSpec("encoder-decoder", "Answer.").save(folder)
    done = run_p2m("serve-model", "--model", str(folder), "--runtime", "llama.cpp", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--runtime llama.cpp cannot serve this student" in done.stderr
    assert "encoder-decoder" in done.stderr
    done = run_p2m("serve-model", "--model", str(folder), "--precision", "int4", timeout=120)
    assert done.returncode == 2 and "--precision must be one of" in done.stderr
