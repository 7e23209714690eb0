"""Deterministic parse of prompts whose examples are marked ``input=`` / ``output=`` lines.

Accepted markers, one per line start, case-insensitive: ``input`` / ``output`` (also the
Japanese 入力 / 出力) followed by ``=`` or ``:``. A value in double quotes runs to the first
closing quote that ends a line (so quotes inside stay); an unquoted value runs to the next
marker or blank line. Text before the first marker is the instruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from p2m.common.types import Example

_MARKER = re.compile(
    r"^[ \t]*(?P<label>input|output|入力|出力)[ \t]*[=:\uff1a][ \t]*", re.IGNORECASE | re.MULTILINE
)
_INPUT_LABELS = {"input", "入力"}


@dataclass(frozen=True)
class MarkedPrompt:
    """What the markers gave: instruction, complete pairs, and what was left over."""

    instruction: str
    demonstrations: tuple[Example, ...]
    warnings: tuple[str, ...]


def parse_marked(prompt: str) -> MarkedPrompt | None:
    """Split a marked prompt; None when it holds no complete input/output pair."""
    markers = list(_MARKER.finditer(prompt))
    if not markers:
        return None
    fields: list[tuple[str, str]] = []
    trailing: list[str] = []
    for index, match in enumerate(markers):
        end = markers[index + 1].start() if index + 1 < len(markers) else len(prompt)
        value, rest = _read_value(prompt[match.end() : end])
        label = "input" if match.group("label").lower() in _INPUT_LABELS else "output"
        fields.append((label, value))
        if rest.strip():
            trailing.append(rest.strip())
    demonstrations, warnings = _pair(fields)
    if not demonstrations:
        return None
    instruction = prompt[: markers[0].start()].strip()
    if trailing:
        instruction = "\n\n".join([instruction, *trailing]).strip()
        warnings.append("text between or after the examples was added to the instruction")
    return MarkedPrompt(instruction, tuple(demonstrations), tuple(warnings))


def _read_value(segment: str) -> tuple[str, str]:
    """Return (value, leftover text) of the segment after a marker."""
    if segment.startswith('"'):
        closing = re.search(r'"[ \t]*(?:\r?\n|$)', segment[1:])
        if closing:
            return segment[1 : closing.start() + 1], segment[closing.end() + 1 :]
    blank = re.search(r"\n[ \t]*\r?\n", segment)
    if blank:
        return segment[: blank.start()].strip(), segment[blank.end() :]
    return segment.strip(), ""


def _pair(fields: list[tuple[str, str]]) -> tuple[list[Example], list[str]]:
    demonstrations: list[Example] = []
    warnings: list[str] = []
    pending: str | None = None
    for label, value in fields:
        if label == "input":
            if pending is not None:
                warnings.append(f"input without an output was dropped: {pending[:60]!r}")
            pending = value
        elif pending is None:
            warnings.append(f"output without an input was dropped: {value[:60]!r}")
        else:
            demonstrations.append(Example(pending, value))
            pending = None
    if pending is not None:
        warnings.append(f"input without an output was dropped: {pending[:60]!r}")
    return demonstrations, warnings
