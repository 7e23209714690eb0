"""The few-shot prompts sent to the teacher: one asks for a new example, one for an output."""

from __future__ import annotations

import random
from collections.abc import Sequence

from p2m.common.types import Example

EXAMPLE_SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string"}, "output": {"type": "string"}},
    "required": ["input", "output"],
}
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"output": {"type": "string"}},
    "required": ["output"],
}
NEW_EXAMPLE_SYSTEM = (
    'You write training data for a task. Reply with one JSON object with the keys "input" and '
    '"output": a new input, different from every example shown, and the correct output for it.'
)
ANSWER_SYSTEM = (
    'You carry out a task. Reply with one JSON object with the key "output": the correct '
    "output for the input given."
)


def _render(examples: Sequence[Example]) -> str:
    return "\n\n".join(f"input: {e.input}\noutput: {e.output}" for e in examples)


def pick_examples(
    demonstrations: Sequence[Example],
    generated: Sequence[Example],
    rng: random.Random,
    *,
    n_demos: int,
    n_generated: int,
    diverse: bool,
) -> list[Example]:
    """The examples one prompt shows: the demonstrations, then (diverse) a random sample.

    As in the paper, diverse prompts add a random sample of the examples generated so far to
    the person's demonstrations. The demonstrations come first and in a fixed order, so every
    prompt shares a long prefix the endpoint can keep cached (llama.cpp reuses it: about 3x
    faster on two cores than shuffled prompts); only the tail varies.
    """
    shown = list(demonstrations[:n_demos])
    if diverse:
        shown += rng.sample(list(generated), min(n_generated, len(generated)))
    return shown


def new_example_messages(instruction: str, shown: Sequence[Example]) -> list[dict[str, str]]:
    """Ask for one new example of the task."""
    parts = [f"Task: {instruction}"]
    if shown:
        parts.append(f"Examples:\n\n{_render(shown)}")
    parts.append("Write one new example: a new, different input and its correct output.")
    return [
        {"role": "system", "content": NEW_EXAMPLE_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def answer_messages(
    instruction: str, shown: Sequence[Example], input_text: str
) -> list[dict[str, str]]:
    """Ask for the output of one given input (a self-consistency sample)."""
    parts = [f"Task: {instruction}"]
    if shown:
        parts.append(f"Examples:\n\n{_render(shown)}")
    parts.append(f"input: {input_text}")
    return [
        {"role": "system", "content": ANSWER_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]
