from __future__ import annotations

from typing import Any

import pytest

from p2m.common.types import Example
from p2m.parser.markers import parse_marked

TASKS = ("squad", "temporal", "mconala_ja")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("version", ["main", "pr263"])
def test_paper_prompts_parse_exactly(paper_prompts: dict[str, Any], task: str, version: str):
    spec = (
        paper_prompts[task] if version == "main" else paper_prompts[task]["original_pr263_version"]
    )
    parsed = parse_marked(spec["full_prompt"])
    assert parsed is not None
    assert parsed.instruction == spec["instruction"]
    assert parsed.demonstrations == tuple(
        Example(e["input"], e["output"]) for e in spec["examples"]
    )
    assert parsed.warnings == ()


def test_quotes_inside_a_quoted_value_are_kept():
    prompt = 'Answer.\ninput="He said "hi" twice"\noutput="said "hi""\n'
    parsed = parse_marked(prompt)
    assert parsed is not None
    assert parsed.demonstrations == (Example('He said "hi" twice', 'said "hi"'),)


def test_unquoted_labels_with_colons_and_mixed_case():
    prompt = "Translate to French.\n\nInput: cat\nOutput: chat\n\nINPUT: dog\nOUTPUT: chien\n"
    parsed = parse_marked(prompt)
    assert parsed is not None
    assert parsed.instruction == "Translate to French."
    assert parsed.demonstrations == (Example("cat", "chat"), Example("dog", "chien"))


def test_japanese_labels_with_full_width_colon():
    prompt = "英語に翻訳してください。\n入力\uff1a猫\n出力\uff1acat\n"
    parsed = parse_marked(prompt)
    assert parsed is not None
    assert parsed.demonstrations == (Example("猫", "cat"),)


def test_multiline_quoted_value():
    prompt = 'Summarise.\ninput="line one\nline two"\noutput="two lines"'
    parsed = parse_marked(prompt)
    assert parsed is not None
    assert parsed.demonstrations == (Example("line one\nline two", "two lines"),)


def test_markers_mid_line_are_not_markers():
    prompt = 'If nothing is found, i.e., output="N/A", say so.\ninput="a"\noutput="b"'
    parsed = parse_marked(prompt)
    assert parsed is not None
    assert parsed.instruction == 'If nothing is found, i.e., output="N/A", say so.'


def test_unpaired_fields_are_dropped_with_warnings():
    prompt = 'Do it.\noutput="orphan"\ninput="a"\noutput="b"\ninput="dangling"'
    parsed = parse_marked(prompt)
    assert parsed is not None
    assert parsed.demonstrations == (Example("a", "b"),)
    assert len(parsed.warnings) == 2
    assert any("orphan" in w for w in parsed.warnings)
    assert any("dangling" in w for w in parsed.warnings)


def test_text_after_the_examples_joins_the_instruction():
    prompt = 'Label it.\ninput="x"\noutput="y"\n\nAlways answer in lower case.'
    parsed = parse_marked(prompt)
    assert parsed is not None
    assert parsed.instruction == "Label it.\n\nAlways answer in lower case."
    assert parsed.warnings


@pytest.mark.parametrize(
    "prompt",
    ["Just an instruction with no examples.", 'Only an input:\ninput="x"', ""],
)
def test_no_complete_pair_means_no_deterministic_parse(prompt: str):
    assert parse_marked(prompt) is None
