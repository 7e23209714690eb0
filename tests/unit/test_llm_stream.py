"""A streamed chat completion read into one body, cut short by a watch on the answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from p2m.common.errors import LLMOutputError
from p2m.common.llm import (
    STOPPED_EARLY,
    _MalformedResponseError,
    _parse_chat_completion,
    _read_stream,
)


async def sse(*chunks: object) -> AsyncIterator[str]:
    """Server-sent event lines as an endpoint streams them (a blank line after each event)."""
    for chunk in chunks:
        yield chunk if isinstance(chunk, str) else f"data: {json.dumps(chunk)}"
        yield ""


def delta(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def never(_: str) -> bool:
    return False


async def test_a_whole_stream_reads_as_the_completion_it_streamed():
    usage = {"prompt_tokens": 12, "completion_tokens": 3}
    lines = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        delta('{"input": '),
        delta('"hi"}'),
        delta("", "stop"),
        {"choices": [], "usage": usage},
        "data: [DONE]",
    )
    body = await _read_stream(lines, never, prompt_estimate=99)
    assert _parse_chat_completion(body) == ('{"input": "hi"}', "stop", 12, 3)


async def test_the_watch_cuts_the_answer_where_it_says_so():
    seen: list[str] = []

    def three_pieces(text: str) -> bool:
        seen.append(text)
        return len(seen) == 3

    lines = sse(*(delta(piece) for piece in ("a", "b", "c", "d", "e")), "data: [DONE]")
    body = await _read_stream(lines, three_pieces, prompt_estimate=40)
    assert _parse_chat_completion(body) == ("abc", STOPPED_EARLY, 40, 3)
    assert seen == ["a", "ab", "abc"]  # nothing read after the cut


async def test_an_error_in_the_stream_is_an_unreadable_answer_or_a_bad_response():
    rejected = {"error": {"message": "the model produced output that does not match the format"}}
    with pytest.raises(LLMOutputError, match="could not read"):
        await _read_stream(sse(delta("{"), rejected), never, 1)
    with pytest.raises(_MalformedResponseError, match="slot unavailable"):
        await _read_stream(sse({"error": {"message": "slot unavailable"}}), never, 1)
    with pytest.raises(_MalformedResponseError, match="not JSON"):
        await _read_stream(sse("data: {oops"), never, 1)


async def test_a_stream_that_breaks_off_is_a_bad_response_to_retry():
    async def broken() -> AsyncIterator[str]:
        yield f"data: {json.dumps(delta('{'))}"
        raise ConnectionResetError("peer closed the connection")

    with pytest.raises(_MalformedResponseError, match=r"broke off \(ConnectionResetError\)"):
        await _read_stream(broken(), never, 1)
