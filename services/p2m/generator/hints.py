"""Topics that vary the new inputs: written once per task by the teacher, one per request.

Shown the same demonstrations, a small teacher writes the same input again and again (about 70%
of its candidates were duplicates here). Asking it once for a list of different topics the
task's inputs could be about, and giving each request one of them, spreads the inputs out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from p2m.common.types import Example
from p2m.generator.filters import normalise

WANTED = 30
MAX_HINTS = 60
MAX_HINT_WORDS = 10
HINTS_SCHEMA = {
    "type": "object",
    "properties": {"topics": {"type": "array", "items": {"type": "string"}}},
    "required": ["topics"],
}
HINTS_SYSTEM = (
    'You plan varied training data for a task. Reply with one JSON object with the key "topics": '
    "a list of short topics."
)


def hints_messages(instruction: str, demonstrations: Sequence[Example]) -> list[dict[str, str]]:
    """Ask for a list of topics new inputs of the task could be about."""
    shown = "\n".join(f"- {d.input.strip()[:300]}" for d in demonstrations[:8])
    parts = [f"Task: {instruction}"]
    if shown:
        parts.append(f"Example inputs:\n{shown}")
    parts.append(
        f"List {WANTED} different topics, situations or subjects that other inputs of this task "
        "could be about, a few words each, as different from each other and from the examples "
        "as you can."
    )
    return [
        {"role": "system", "content": HINTS_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def clean_hints(value: Any) -> list[str]:
    """The usable topics of an answer: short, non-empty, each once."""
    topics = value.get("topics", []) if isinstance(value, dict) else []
    seen: dict[str, str] = {}
    for topic in topics:
        text = str(topic).strip()
        if text and len(text.split()) <= MAX_HINT_WORDS:
            seen.setdefault(normalise(text), text)
    return list(seen.values())[:MAX_HINTS]


def hint_for(hints: Sequence[str], request_id: str) -> str | None:
    """The topic of request ``request_id`` (fixed by its id), or None without topics."""
    if not hints:
        return None
    digest = hashlib.sha256(request_id.encode()).digest()
    return hints[int.from_bytes(digest[:4], "big") % len(hints)]
