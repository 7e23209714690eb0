from __future__ import annotations

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.prompt_text import validate_prompt


@pytest.mark.parametrize(
    ("prompt", "problem"),
    [
        ("", "is empty"),
        ("   \n\t ", "is empty"),
        ("a" * 70_000, "the limit is 65536"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        ("text\x00with NUL", "not text"),
        ("\x01\x02\x03\x04 binary-ish", "not text"),
        ("lone \ud800 surrogate", "Unicode"),
        ("é" * 40_000, "the limit is 65536"),
    ],
)
def test_bad_prompts_are_rejected_naming_the_problem(prompt: str | bytes, problem: str):
    with pytest.raises(InvalidInput) as info:
        validate_prompt(prompt, 65536, "prompt_file")
    assert info.value.field == "prompt_file"
    assert problem in info.value.problem


def test_good_prompts_pass_and_bytes_are_decoded():
    assert validate_prompt("Do it.\n\tNow.", 100) == "Do it.\n\tNow."
    assert validate_prompt("日本語".encode(), 100) == "日本語"
