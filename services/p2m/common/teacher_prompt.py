"""The request that asks a teacher LLM for one output: the same for generation and scoring.

The generator's self-consistency samples and the evaluator's teacher both ask through
``answer_messages``, so the teacher a report scores is the teacher that made the data.

Small chat models follow a conversation far better than a page of "Input:/Output:" text: they
continue such a page with explanations ("To solve this problem, ...") or a code fence. So the
instruction goes into the system message with "reply with the output only", each example
becomes a user turn (its input) answered by an assistant turn (its output), and the input to
answer is the last user turn. The model then answers in the examples' own form. When the outputs
form a closed set of labels, an answer is read as the label it is closest to. (Holding the
answer to the labels by a JSON schema scored lower with the default teacher on banking77, and a
grammar of the bare labels no higher than this reading, at four times the time.)
"""

from __future__ import annotations

from collections.abc import Sequence

from p2m.common.budget import Budget
from p2m.common.closed_set import closest_label
from p2m.common.llm import ChatResult, LLMClient
from p2m.common.types import Example, TaskSpec

#: Changes whenever the request changes what a teacher answers (cache keys include it).
PROMPT_VERSION = 3
REPLY_RULE = (
    "Reply with the output only, in exactly the form the example replies have: no explanation, "
    "no code fences, no label."
)
#: Where a chatty model starts a new example of its own: the answer ends there.
NEW_EXAMPLE_MARKERS = ("\nInput:", "\ninput:")
_LABELS = ("output:", "answer:")
_FENCE = "```"


def teacher_instruction(task: TaskSpec) -> str:
    """The instruction the teacher sees: the person's own words, not a translation.

    A translation serves retrieval (an English encoder, English catalogs); it can drop what the
    teacher needs (the MCoNaLa prompt's "one line" did not survive it).
    """
    return (task.original_instruction or task.instruction).strip()


def single_line_outputs(examples: Sequence[Example]) -> bool:
    """True when every example's output is one line (so an answer is cut at its first line)."""
    return bool(examples) and all("\n" not in e.output.strip() for e in examples)


def answer_messages(
    instruction: str, shown: Sequence[Example], input_text: str
) -> list[dict[str, str]]:
    """Ask for the output of ``input_text``: the examples as user/assistant turns before it."""
    messages = [{"role": "system", "content": f"{instruction.strip()}\n\n{REPLY_RULE}"}]
    for example in shown:
        messages.append({"role": "user", "content": example.input.strip()})
        messages.append({"role": "assistant", "content": example.output.strip()})
    messages.append({"role": "user", "content": input_text.strip()})
    return messages


def stop_sequences(shown: Sequence[Example]) -> tuple[str, ...]:
    """Where an answer ends: a new example, and a blank line when every output is one line.

    Not at the first line break: a model that fences its one line ("```python", the code,
    "```") would be cut before the code.
    """
    return ("\n\n", *NEW_EXAMPLE_MARKERS) if single_line_outputs(shown) else NEW_EXAMPLE_MARKERS


def clean_answer(text: str, single_line: bool) -> str:
    """The answer without what a chatty model adds around it.

    Cuts where the model starts an example of its own ("Input:"), unwraps a code fence, drops a
    leading "Output:"/"Answer:" label, strips whitespace, and with ``single_line`` keeps the
    first non-empty line.
    """
    for marker in NEW_EXAMPLE_MARKERS:
        text = text.split(marker, 1)[0]
    text = _unfenced(text.strip())
    if text.lower().startswith(_LABELS):
        text = text.split(":", 1)[1].strip()
    if single_line:
        text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return text


def _unfenced(text: str) -> str:
    """The body of a leading ```lang ... ``` block (the whole text when there is none)."""
    if not text.startswith(_FENCE):
        return text
    body = text[len(_FENCE) :].split("\n", 1)
    inner = body[1] if len(body) == 2 else ""
    return inner.split(_FENCE, 1)[0].strip()


async def ask_answer(
    llm: LLMClient,
    messages: list[dict[str, str]],
    shown: Sequence[Example],
    *,
    choices: Sequence[str] = (),
    temperature: float,
    max_tokens: int,
    seed: int | None = None,
    budget: Budget | None = None,
) -> tuple[str, ChatResult]:
    """The teacher's cleaned answer to ``messages`` (from ``answer_messages``) and its result.

    The answer is free text cut at ``stop_sequences(shown)``; with ``choices``, it is read as the
    choice it is closest to (``closest_label``).
    """
    result = await llm.chat(
        messages,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        stop=stop_sequences(shown),
        budget=budget,
    )
    answer = clean_answer(result.text, single_line_outputs(shown))
    return (closest_label(answer, choices) if choices else answer), result
