"""Topics that vary the new inputs: written once per task by the teacher, one per request.

Shown the same demonstrations, a small teacher writes the same input again and again (about 70%
of its candidates were duplicates here). Asking it once for a list of different topics the
task's inputs could be about, and giving each request one of them, spreads the inputs out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from p2m.common.types import Example
from p2m.generator.filters import normalise

WANTED = 20
# Too few topics from the teacher (a 0.5B one often gives none, or repeats the examples): the
# list is filled up with these broad ones, which still pull the inputs apart. Programming
# topics for code tasks scored lower on MCoNaLa both times they were tried (ChrF++ 13.0 against
# 13.8 at 250 requests; 13.0 against 15.3 at 80 examples): English topics drew English inputs,
# dropped for their script (376 invariant drops against 255).
MIN_TOPICS = 8
FALLBACK_TOPICS = (
    "sports",
    "cooking",
    "banking",
    "travel",
    "health care",
    "education",
    "music",
    "movies",
    "politics",
    "science",
    "technology",
    "the weather",
    "shopping",
    "family life",
    "work",
    "history",
    "law",
    "cars",
    "housing",
    "farming",
    "the environment",
    "video games",
    "art",
    "fashion",
    "medicine",
    "space",
    "restaurants",
    "public transport",
    "pets",
    "startups",
)
MAX_HINTS = 60
MAX_HINT_WORDS = 10
MAX_HINT_CHARS = 60
TEMPERATURE = 0.8  # varied, but a small model at 1.4 repeats itself into a loop
# Bounded lengths: with a grammar-constrained endpoint the list must end (a 0.5B teacher asked
# for 30 topics wrote "year-end-month-day-date-time-..." until its token limit).
HINTS_SCHEMA = {
    "type": "object",
    "properties": {
        "topics": {
            "type": "array",
            "items": {"type": "string", "maxLength": MAX_HINT_CHARS},
            "maxItems": WANTED,
        }
    },
    "required": ["topics"],
}
_QUOTED = re.compile(r'"((?:[^"\\]|\\.){1,200})"')
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
        f"List {WANTED} different everyday topics that new inputs of this task could be about, "
        "for example: sports, banking, a holiday trip. Each a few words, all different from "
        "each other and from the examples."
    )
    return [
        {"role": "system", "content": HINTS_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def clean_hints(value: Any, demonstrations: Sequence[Example] = ()) -> list[str]:
    """The usable topics of an answer: short, each once, none a demonstration's output."""
    topics = value.get("topics", []) if isinstance(value, dict) else []
    outputs = {normalise(d.output) for d in demonstrations}
    seen: dict[str, str] = {}
    for topic in topics if isinstance(topics, list) else []:
        text = str(topic).strip()
        key = normalise(text)
        short = len(text) <= MAX_HINT_CHARS and len(text.split()) <= MAX_HINT_WORDS
        if key and key not in outputs and short:
            seen.setdefault(key, text)
    topics = list(seen.values())[:MAX_HINTS]
    if len(topics) < MIN_TOPICS:
        topics += [t for t in FALLBACK_TOPICS if normalise(t) not in seen]
    return topics


def salvage_hints(text: str, demonstrations: Sequence[Example] = ()) -> list[str]:
    """The topics of an answer cut short (no closing bracket): every whole quoted string."""
    quoted = [m.group(1) for m in _QUOTED.finditer(text) if m.group(1) != "topics"]
    return clean_hints({"topics": quoted}, demonstrations)


def hint_for(hints: Sequence[str], request_id: str) -> str | None:
    """The topic of request ``request_id`` (fixed by its id), or None without topics."""
    if not hints:
        return None
    digest = hashlib.sha256(request_id.encode()).digest()
    return hints[int.from_bytes(digest[:4], "big") % len(hints)]
