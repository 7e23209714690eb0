"""How many tokens a request may answer with: sized by the demonstrations, not one fixed cap.

A fixed cap is wrong both ways: 256 tokens cut a SQuAD example (a context is 200 to 400 tokens)
and let a chatty teacher explain for 256 tokens where the answer is a date. Tokens are
estimated from UTF-8 bytes (about 4 bytes a token in English, 3 in Japanese), with room to spare.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2m.common.types import Example

BYTES_PER_TOKEN = 3.0
ANSWER_FLOOR = 32
EXAMPLE_FLOOR = 160
JSON_OVERHEAD = 16  # {"input": ""} and escapes
# A cap, not a target (the answer ends at its stop sequence or closing brace): room for a teacher
# that writes inputs longer than the demonstrations', whose JSON a tight cap would cut open.
ANSWER_HEADROOM = 1.5
EXAMPLE_HEADROOM = 3.0
CEILING = 4096
WITHOUT_DEMONSTRATIONS = 256  # nothing to size by


def estimated_tokens(text: str) -> int:
    """A generous estimate of ``text``'s token count."""
    return int(len(text.encode("utf-8")) / BYTES_PER_TOKEN) + 1


def answer_tokens(demonstrations: Sequence[Example], explicit: int = 0) -> int:
    """Most tokens an answer may take: ``explicit`` when set, else from the longest output."""
    if explicit or not demonstrations:
        return explicit or WITHOUT_DEMONSTRATIONS
    longest = max(estimated_tokens(d.output) for d in demonstrations)
    return min(CEILING, max(ANSWER_FLOOR, int(ANSWER_HEADROOM * longest) + 16))


def example_tokens(demonstrations: Sequence[Example], explicit: int = 0) -> int:
    """Most tokens a new input (as JSON) may take."""
    if explicit or not demonstrations:
        return explicit or 2 * WITHOUT_DEMONSTRATIONS
    longest = max(estimated_tokens(d.input) for d in demonstrations)
    return min(CEILING, max(EXAMPLE_FLOOR, int(EXAMPLE_HEADROOM * (longest + JSON_OVERHEAD))))
