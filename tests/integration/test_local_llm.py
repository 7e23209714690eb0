"""The embedded OpenAI-compatible endpoint: llama.cpp serving the pip-shipped SmolLM2."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from p2m.common.budget import Budget
from p2m.common.closed_set import closest_label
from p2m.common.errors import FailedPrecondition, InvalidInput, LLMOutputError
from p2m.common.llm import STOPPED_EARLY, LLMClient, LLMConfig
from p2m.common.shipped_models import SHIPPED_MODELS, gguf_general_name, resolve_gguf
from p2m.common.types import Example, TaskSpec
from p2m.evaluator.teacher import TeacherPredictor
from p2m.generator.filters import ends_in_a_loop, repeats_itself
from p2m.generator.invariants import Invariants
from p2m.generator.prompts import INPUT_SCHEMA, input_schema
from tests.support import ServiceProcess


def test_models_endpoint_names_the_model(local_llm: ServiceProcess):
    with urllib.request.urlopen(f"{local_llm.base_url}/models", timeout=10) as reply:
        body = json.load(reply)
    assert [m["id"] for m in body["data"]] == [SHIPPED_MODELS["smollm2"].display_name]


async def test_chat_and_json_schema_output(local_llm: ServiceProcess):
    config = LLMConfig(base_url=local_llm.base_url, model="smollm2", max_concurrency=2)
    async with LLMClient(config) as client:
        result = await client.chat([{"role": "user", "content": "Say hello."}], max_tokens=16)
        schema = {
            "type": "object",
            "properties": {"colour": {"type": "string"}, "count": {"type": "integer"}},
            "required": ["colour", "count"],
        }
        answers = await asyncio.gather(
            *[
                client.chat_json(
                    [{"role": "user", "content": f"Name colour number {i} and a count."}],
                    schema,
                    max_tokens=64,
                )
                for i in range(3)
            ]
        )
        usage = client.usage
    assert result.text.strip()
    assert result.completion_tokens > 0
    for value, _ in answers:
        assert isinstance(value["colour"], str)
        assert isinstance(value["count"], int)
    assert usage.requests == 4
    assert usage.completion_tokens >= result.completion_tokens


async def test_a_looping_answer_is_cut_as_soon_as_it_repeats_itself(local_llm: ServiceProcess):
    """SmolLM2 asked for a word two hundred times writes it to the token cap; watched for loops,
    the streamed answer ends after the first repeated run and the endpoint stops working on it.
    """
    config = LLMConfig(base_url=local_llm.base_url, model="smollm2")
    ask = "Reply with a JSON object whose input is the word 'cat' repeated two hundred times."
    messages = [{"role": "user", "content": ask}]
    async with LLMClient(config) as client:
        with pytest.raises(LLMOutputError) as unwatched:
            await client.chat_json(messages, INPUT_SCHEMA, max_tokens=300)
        with pytest.raises(LLMOutputError) as watched:
            await client.chat_json(messages, INPUT_SCHEMA, max_tokens=300, stop_when=ends_in_a_loop)
        # Then a question answered whole: the cut request left nothing behind on the endpoint.
        value, _ = await client.chat_json(
            [{"role": "user", "content": "Name a colour."}],
            {"type": "object", "properties": {"colour": {"type": "string"}}},
            max_tokens=32,
            stop_when=ends_in_a_loop,
        )
        usage = client.usage
    full, cut = unwatched.value.result, watched.value.result
    assert (usage.capped_answers, usage.stopped_answers) == (1, 1)  # counted, the third neither
    assert full.finish_reason == "length" and full.completion_tokens == 300
    assert cut.finish_reason == STOPPED_EARLY and cut.completion_tokens < 100
    assert cut.prompt_tokens == full.prompt_tokens  # estimated from the whole answer's count
    assert repeats_itself(cut.text) and cut.text in full.text  # the same answer, cut short
    assert isinstance(value["colour"], str)


async def test_the_input_pattern_is_a_grammar_llama_cpp_keeps_with_quotes_asked_for(
    local_llm: ServiceProcess,
):
    learned = Invariants(input_prefix=r"\[Posted: \d{4}-\d{2}-\d{2}\]", input_one_line=True)
    ask = 'Write a news sentence that quotes someone in "double quotes", over two lines.'
    config = LLMConfig(base_url=local_llm.base_url, model="smollm2", max_concurrency=2)
    async with LLMClient(config) as client:
        answers = await asyncio.gather(
            *[
                client.chat_json(
                    [{"role": "user", "content": ask}],
                    input_schema(learned),
                    check=INPUT_SCHEMA,
                    temperature=1.0,
                    seed=seed,
                    max_tokens=96,
                )
                for seed in range(4)
            ],
            return_exceptions=True,
        )
        usage = client.usage
    # llama.cpp took the pattern as a grammar (no fallback to the schema in words) ...
    assert usage.requests == 4 and usage.failed_requests == 0
    for answer in answers:
        if isinstance(answer, Exception):  # cut at max_tokens: no closing quote yet
            assert "not JSON" in str(answer)
            continue
        text = answer[0]["input"]
        # ... and every answer keeps the prefix on one line, its quotes escaped (else: HTTP 500).
        assert re.match(learned.input_prefix, text) and "\n" not in text


INTENTS = ("card_arrival", "exchange_rate", "lost_or_stolen_card", "age_limit", "pin_blocked")
INTENT_TASK = TaskSpec(
    f"Classify the bank customer's message as one of these intents: {', '.join(INTENTS)}.",
    (
        Example("Where is the card you sent me?", "card_arrival"),
        Example("I can't find my card, someone took it", "lost_or_stolen_card"),
        Example("What rate do you give for euros?", "exchange_rate"),
    ),
)


async def test_a_closed_set_teacher_answer_is_read_as_the_closest_label(local_llm: ServiceProcess):
    """SmolLM2 often misspells a label; what comes back is a label or nothing like one."""
    config = LLMConfig(base_url=local_llm.base_url, model="smollm2", max_concurrency=2)
    inputs = [
        "How old must I be to open an account?",
        "My PIN is blocked after three tries, help",
        "Has my new card been posted yet?",
        "Is the dollar rate better on weekdays?",
    ]
    async with LLMClient(config) as client:
        predictor = TeacherPredictor(
            client, INTENT_TASK, max_new_tokens=16, concurrency=2, budget=Budget()
        )
        answers = (await predictor.predict(inputs)).predictions
    assert any(answer in INTENTS for answer in answers), answers
    for answer in answers:
        assert answer in INTENTS or closest_label(answer, INTENTS) == answer, answer


def test_shipped_models_verify(tmp_path: Path):
    path, name = resolve_gguf("smollm2", tmp_path)
    assert name == "SmolLM2-135M-Instruct-Q4_1"
    assert gguf_general_name(path) == SHIPPED_MODELS["smollm2"].gguf_name


def test_a_tampered_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    genuine, _ = resolve_gguf("smollm2", tmp_path)
    package = tmp_path / "fake_pkg"
    package.mkdir()
    tampered = package / genuine.name
    shutil.copyfile(genuine, tampered)
    with tampered.open("r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    monkeypatch.setattr("p2m.common.shipped_models.package_dir", lambda name: package)
    with pytest.raises(FailedPrecondition, match="sha256"):
        resolve_gguf("smollm2", tmp_path)


def test_multi_part_model_is_assembled_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    genuine, _ = resolve_gguf("smollm2", tmp_path)
    data = genuine.read_bytes()
    parts = tmp_path / "parts"
    parts.mkdir()
    half = len(data) // 2
    (parts / "a.bin").write_bytes(data[:half])
    (parts / "b.bin").write_bytes(data[half:])
    split = dataclasses.replace(
        SHIPPED_MODELS["smollm2"], packages=("a", "b"), parts=("a.bin", "b.bin")
    )
    monkeypatch.setitem(SHIPPED_MODELS, "split", split)
    monkeypatch.setattr("p2m.common.shipped_models.package_dir", lambda name: parts)
    path, _ = resolve_gguf("split", tmp_path / "models")
    assert path.parent == tmp_path / "models" / "gguf"
    assert path.read_bytes() == data


def test_unknown_model_choice_is_invalid(tmp_path: Path):
    with pytest.raises(InvalidInput) as info:
        resolve_gguf("gpt-17", tmp_path)
    assert info.value.field == "local_llm"
