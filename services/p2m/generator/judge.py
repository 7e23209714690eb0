"""An optional LLM judge: the teacher grades each example it made against the instruction.

A schema-constrained score from 1 to 5 with a short rubric; examples below the threshold are
dropped (``judged_low``). It costs one request per example, so it is off unless asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2m.common.types import Example

MIN_SCORE, MAX_SCORE = 1, 5
DEFAULT_THRESHOLD = 3
JUDGE_TOKENS = 64
SHOWN_DEMONSTRATIONS = 3
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE},
        "reason": {"type": "string"},
    },
    "required": ["score"],
}
JUDGE_SYSTEM = (
    'You check training data for a task. Reply with one JSON object: "score", an integer from '
    '1 to 5, and "reason", a few words.'
)
RUBRIC = """Score the new example:
5: the input is a realistic input of the task and the output is exactly right for it, in the form the examples show.
4: right, with a small flaw of form.
3: plausible, but doubtful.
2: the output is wrong, or the input does not fit the task.
1: nonsense, or off the task."""  # noqa: E501


def judge_messages(
    instruction: str, demonstrations: Sequence[Example], example: Example
) -> list[dict[str, str]]:
    """Ask for a grade of ``example`` (the task's first demonstrations shown as reference)."""
    shown = "\n\n".join(
        f"input: {d.input}\noutput: {d.output}" for d in demonstrations[:SHOWN_DEMONSTRATIONS]
    )
    parts = [f"Task: {instruction}"]
    if shown:
        parts.append(f"Examples of the task:\n\n{shown}")
    parts.append(f"New example:\n\ninput: {example.input}\noutput: {example.output}")
    parts.append(RUBRIC)
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def score_of(value: object) -> int | None:
    """The score in a judge's answer, or None when it holds none in range."""
    score = value.get("score") if isinstance(value, dict) else None
    if isinstance(score, bool) or not isinstance(score, int | float):
        return None
    return int(score) if MIN_SCORE <= score <= MAX_SCORE else None
