"""The student's prompt fitted to its token budget: instruction start kept, input middle cut."""

from __future__ import annotations

from typing import Any

import pytest

from p2m.common.encoder import shipped_encoder_path
from p2m.common.prompt_layout import (
    CUT_MARK,
    INSTRUCTION_SHARE,
    fitted_instruction,
    format_input,
    instruction_budget,
    prompt_ids,
)
from p2m.common.student import TEMPLATE_VERSION, StudentSpec, encode_prompts
from p2m.common.types import Example
from p2m.trainer.encode import IGNORE_INDEX, encode_examples

LONG_INSTRUCTION = "Classify the banking question into one of these intents: " + ", ".join(
    f"intent_{i}" for i in range(200)
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A real WordPiece tokenizer (the shipped MiniLM's), with [SEP] as its end token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shipped_encoder_path())
    tok.eos_token = "[SEP]"
    return tok


def _text(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def test_prompts_that_fit_are_the_plain_format(tokenizer: Any) -> None:
    inputs = ["the cat sat", "a dog barked twice"]
    ids = prompt_ids(tokenizer, "Classify it.", inputs, 64, TEMPLATE_VERSION)
    assert ids == [tokenizer(format_input("Classify it.", text))["input_ids"] for text in inputs]


def test_a_long_instruction_keeps_its_start_and_is_the_same_for_every_example(
    tokenizer: Any,
) -> None:
    budget = 96
    inputs = ["short question", "another question about a card that was declined at a shop"]
    ids = prompt_ids(tokenizer, LONG_INSTRUCTION, inputs, budget, TEMPLATE_VERSION)
    instruction = fitted_instruction(tokenizer, LONG_INSTRUCTION, budget)
    instruction_ids = tokenizer(instruction, add_special_tokens=False)["input_ids"]
    assert LONG_INSTRUCTION.startswith(instruction) and len(instruction) < len(LONG_INSTRUCTION)
    assert len(instruction_ids) <= budget * INSTRUCTION_SHARE
    for row, text in zip(ids, inputs, strict=True):
        assert len(row) <= budget
        decoded = _text(tokenizer, row)
        assert decoded.startswith("classify the banking question")
        assert text in decoded and decoded.endswith("output :")  # the input whole, the cue kept
    shared = next(i for i, (a, b) in enumerate(zip(*ids, strict=False)) if a != b)
    assert shared >= len(instruction_ids)  # one common prefix: computed once per batch


def test_a_long_input_loses_its_middle_not_its_question_or_end(tokenizer: Any) -> None:
    context = " ".join(f"w{i}" for i in range(400))
    text = f"Question: who won the final? Context: {context} the end"
    (row,) = prompt_ids(tokenizer, "Answer from the context.", [text], 128, TEMPLATE_VERSION)
    decoded = _text(tokenizer, row)
    assert len(row) <= 128
    assert decoded.startswith("answer from the context. input : question : who won the final?")
    assert "w0 " in decoded and "w399 the end" in decoded and "w200 " not in decoded
    assert CUT_MARK.strip() in decoded and decoded.endswith("output :")


def test_the_trainer_and_the_student_build_the_same_prompt(tokenizer: Any) -> None:
    text = "Question: which one? Context: " + " ".join(f"w{i}" for i in range(300))
    (row,) = encode_examples(
        tokenizer, "decoder-only", LONG_INSTRUCTION, [Example(text, "intent_3")], 120, 8
    )
    spec = StudentSpec("decoder-only", LONG_INSTRUCTION, max_input_tokens=120)
    (prompt,) = encode_prompts(tokenizer, spec, [text])
    prompt_length = row["labels"].index(next(x for x in row["labels"] if x != IGNORE_INDEX))
    assert row["input_ids"][:prompt_length] == prompt and len(prompt) <= 120


def test_a_short_task_tag_is_the_instructions_start_in_training_and_serving(
    tokenizer: Any,
) -> None:
    inputs = ["short question", "another question about a card that was declined at a shop"]
    tag = fitted_instruction(tokenizer, LONG_INSTRUCTION, 384, max_instruction_tokens=12)
    assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) <= 12
    assert LONG_INSTRUCTION.startswith(tag) and "intent_5" not in tag
    rows = prompt_ids(tokenizer, LONG_INSTRUCTION, inputs, 384, TEMPLATE_VERSION, 12)
    assert rows == [tokenizer(format_input(tag, text))["input_ids"] for text in inputs]
    trained = encode_examples(
        tokenizer,
        "decoder-only",
        LONG_INSTRUCTION,
        [Example(inputs[0], "intent_3")],
        384,
        8,
        max_instruction_tokens=12,
    )
    spec = StudentSpec("decoder-only", LONG_INSTRUCTION, max_instruction_tokens=12)
    assert encode_prompts(tokenizer, spec, inputs[:1])[0] == rows[0]
    assert trained[0]["input_ids"][: len(rows[0])] == rows[0]
    assert instruction_budget(384) == instruction_budget(384, 1000) == int(384 * INSTRUCTION_SHARE)
    assert instruction_budget(384, 12) == 12


def test_too_small_a_budget_keeps_the_cue(tokenizer: Any) -> None:
    (row,) = prompt_ids(tokenizer, LONG_INSTRUCTION, ["some input words"], 8, TEMPLATE_VERSION)
    assert len(row) == 8 and _text(tokenizer, row).endswith("output :")


def test_models_of_the_first_template_are_read_as_trained(tokenizer: Any) -> None:
    """Template 1 truncated the whole prompt from the left: the instruction's start is lost."""
    spec = StudentSpec("decoder-only", LONG_INSTRUCTION, max_input_tokens=96, template_version=1)
    (row,) = encode_prompts(tokenizer, spec, ["short question"])
    decoded = _text(tokenizer, row)
    assert len(row) == 96 and not decoded.startswith("classify")
    assert decoded.endswith("input : short question output :")


def test_a_tokenizer_without_character_offsets_is_cut_the_same_way() -> None:
    """ByT5's (Python, byte-level) gives no offsets: the cuts are decoded from the token ids."""
    from transformers import ByT5Tokenizer

    byt5 = ByT5Tokenizer()
    text = "Question: who won? Context: " + " ".join(f"w{i}" for i in range(400)) + " the end"
    rows = prompt_ids(byt5, LONG_INSTRUCTION, [text, "short one"], 512, TEMPLATE_VERSION)
    fitted = fitted_instruction(byt5, LONG_INSTRUCTION, 512)
    assert len(fitted) == int(512 * INSTRUCTION_SHARE)  # one token a byte
    for row in rows:
        decoded = byt5.decode(row, skip_special_tokens=True)
        assert len(row) <= 512 and decoded.startswith(fitted + "\n\nInput: ")
        assert decoded.endswith("\nOutput:")
    decoded = byt5.decode(rows[0], skip_special_tokens=True)
    assert "Input: Question: who won? Context: w0 w1" in decoded and "w399 the end" in decoded
    assert CUT_MARK in decoded and "w200 " not in decoded
