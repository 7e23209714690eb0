"""The few-shot prompt that asks the teacher for a new input (its answers: common.teacher_prompt).

The input is asked for alone; its output then comes from the answer requests, all alike, and
the most frequent answer wins (self-consistency).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from p2m.common.types import Example
from p2m.generator import output_items, scripts
from p2m.generator.invariants import Invariants

INPUT_SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
}
# Regex escapes llama.cpp's schema-to-grammar conversion lacks, in the form it takes.
_GRAMMAR_ESCAPES = {r"\d": "[0-9]", r"\w": "[A-Za-z0-9_]", r"\s": "[ \t]"}
# llama.cpp reads a string's pattern on the answer's raw JSON text between the quotes, not on the
# decoded string, so a "." lets a raw quote through: the JSON ends early and the endpoint cannot
# read its own answer (HTTP 500, "does not match the expected peg-native format"; 26 of 256
# requests for a SQuAD input). A JSON string's characters (no raw quote, backslash or control
# character), each escape whole:
_JSON_CHAR = r'([^"\\\x00-\x1f]|\\.)'
# ... and a one-line string's: no escaped line break either.
_ONE_LINE_JSON_CHAR = r'([^"\\\x00-\x1f]|\\[^nr])'
NEW_INPUT_SYSTEM = (
    'You write training data for a task. Reply with one JSON object with the key "input": a new '
    "input of the task, in the form of the examples' inputs and different from every one of them."
)


def _render(examples: Sequence[Example]) -> str:
    return "\n\n".join(f"input: {e.input}\noutput: {e.output}" for e in examples)


def pick_examples(
    demonstrations: Sequence[Example],
    generated: Sequence[Example],
    rng: random.Random,
    *,
    n_generated: int,
    diverse: bool,
) -> list[Example]:
    """The examples one prompt shows: the demonstrations, then (diverse) a random sample.

    As in the paper, diverse prompts add a random sample of the examples generated so far to
    the demonstrations given. The demonstrations come first, in the order given, so every
    prompt shares a long prefix the endpoint can keep cached (llama.cpp reuses it: about 3x
    faster on two cores than shuffled prompts); only the tail varies.
    """
    shown = list(demonstrations)
    if diverse:
        shown += rng.sample(list(generated), min(n_generated, len(generated)))
    return shown


def rule_lines(invariants: Invariants, demonstrations: Sequence[Example]) -> list[str]:
    """The invariants as a teacher reads them best: in words, with a demonstration's own text."""
    lines = []
    start = next(
        (m.group(0) for d in demonstrations if (m := re.match(invariants.input_prefix, d.input))),
        "",
    )
    if invariants.input_prefix and start:
        own = " (with its own numbers)" if r"\d" in invariants.input_prefix else ""
        lines.append(f'The input starts with "{start}"{own}.')
    markers = [f'"{m}"' for m in invariants.input_markers if m not in start]
    if markers:
        lines.append(f"The input holds {', then '.join(markers)}.")
    if invariants.input_one_line:
        lines.append("The input is one line.")
    if invariants.input_sentence_end:
        lines.append("The input ends at the end of a sentence, with its punctuation.")
    if written := _non_latin(invariants.input_scripts):
        lines.append(f"The input is written in {scripts.describe(written)}.")
    if invariants.output_from_marker:
        marker = invariants.output_from_marker
        lines.append(f'The output is copied word for word from the text after "{marker}".')
    elif invariants.output_in_input:
        lines.append("The output is copied word for word from the input.")
    if invariants.output_choices:
        choices = ", ".join(f'"{c}"' for c in invariants.output_choices)
        lines.append(f"The output is one of: {choices}.")
    if invariants.output_literals:
        symbols = ", ".join(f'"{symbol}"' for symbol in invariants.output_literals)
        fixed = "".join(f' or is "{f}"' for f in invariants.output_fixed)
        lines.append(f"The output uses {symbols} as the examples do{fixed}.")
    lines.extend(_item_lines(invariants, demonstrations))
    if invariants.output_language:
        lines.append(f"The output is valid {invariants.output_language} code.")
    if invariants.output_one_line:
        lines.append("The output is one line.")
    if written := _non_latin(invariants.output_scripts):
        lines.append(f"The output is written in {scripts.describe(written)}.")
    return lines


def _item_lines(invariants: Invariants, demonstrations: Sequence[Example]) -> list[str]:
    """The keyed items' rules, with the demonstrations' own values as the shapes' examples."""
    rules = invariants.item_rules
    if rules.empty:
        return []
    literal = invariants.output_literals[0]
    lines = []
    if rules.keys_in_input:
        lines.append(f'The text before each "{literal}" is copied word for word from the input.')
    if rules.value_shapes:
        shapes = [re.compile(shape) for shape in rules.value_shapes]
        values = [
            value
            for d in demonstrations
            for _, value in output_items.items(d.output, literal, rules.separator) or []
        ]
        shown = [next((v for v in values if s.fullmatch(v)), "") for s in shapes]
        written = " or ".join(f'"{v}"' for v in dict.fromkeys(shown) if v)
        if written:
            lines.append(f'The text after each "{literal}" is written like {written}.')
    return lines


def _non_latin(used: tuple[str, ...]) -> tuple[str, ...]:
    """The writing systems worth telling a teacher: Latin goes without saying."""
    return tuple(s for s in used if s != "latin")


def new_input_messages(
    instruction: str,
    shown: Sequence[Example],
    rules: Sequence[str] = (),
    label: str | None = None,
    hint: str | None = None,
    avoid: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Ask for one new input of the task that keeps ``rules`` (see ``rule_lines``).

    With ``label``, an input whose correct output is that label (balancing a closed set); with
    ``hint``, an input about that topic (varying the inputs); with ``avoid``, an input whose
    output is none of those (outputs the dataset holds enough of).
    """
    parts = [f"Task: {instruction}"]
    if shown:
        parts.append(f"Examples:\n\n{_render(shown)}")
    if rules:
        parts.append("Every example keeps these rules:\n" + "\n".join(f"- {r}" for r in rules))
    ask = "Write one new input for this task, of the same kind as the examples' inputs"
    if hint:
        ask += f" but touching on: {hint}"
    if label is not None:
        ask += f'; its correct output must be "{label}"'
    if avoid:
        ask += "; its correct output must not be " + ", ".join(f'"{a}"' for a in avoid)
    parts.append(ask + ". Reply with the input only, not its output.")
    return [
        {"role": "system", "content": NEW_INPUT_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def input_schema(invariants: Invariants) -> dict[str, Any]:
    """The schema an endpoint decodes a new input by: the learned prefix, one line if so learned.

    An endpoint that turns schemas into grammars (llama.cpp) then writes inputs that keep the
    prefix by construction, where a small teacher dropped it in most answers ("Posted:
    2022-05-17" for "[Posted: 2022-05-17] ..."), and one-line inputs without a line break. A
    sentence's end (``input_sentence_end``) is checked, not decoded by: a grammar that cannot
    end the string mid-sentence kept Qwen2.5-0.5B writing to its token cap (9 of 32 answers to
    SQuAD input requests, against 3 of 20 without it). The
    pattern is written as llama.cpp reads it (``_JSON_CHAR``), so an answer is checked against
    ``INPUT_SCHEMA`` and the invariants check the prefix and the line. An endpoint that reads
    patterns on the decoded string (OpenAI's) writes no double quote or backslash there.
    """
    prefix = invariants.input_prefix
    if not prefix and invariants.input_starts_with:
        prefix = scripts.char_class(invariants.input_starts_with)
    if not prefix and not invariants.input_one_line:
        return INPUT_SCHEMA
    for escape, plain in _GRAMMAR_ESCAPES.items():
        prefix = prefix.replace(escape, plain)
    char = _ONE_LINE_JSON_CHAR if invariants.input_one_line else _JSON_CHAR
    field = {"type": "string", "pattern": f"^{prefix}{char}+$"}
    return {**INPUT_SCHEMA, "properties": {"input": field}}
