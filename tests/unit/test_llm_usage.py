"""LLM usage counters: answers cut at their token limit and answers stopped looping, summed."""

from __future__ import annotations

from p2m.common.convert import usage_to_pb
from p2m.common.llm import STOPPED_EARLY, ChatResult, UsageCounters
from p2m.gateway.stages import add_usage
from prompt2model.v1 import common_pb2


def answer(finish: str, completion_tokens: int = 5) -> ChatResult:
    return ChatResult("text", finish, 100, completion_tokens, 0.1, 1)


def test_capped_and_stopped_answers_are_counted_apart_from_finished_ones():
    usage = UsageCounters()
    for finish in ("stop", "length", STOPPED_EARLY, "length", "stop"):
        usage.add(answer(finish), attempts=1, ok=True)
    usage.add(None, attempts=2, ok=False)  # a failed call has no answer to count
    assert (usage.capped_answers, usage.stopped_answers) == (2, 1)
    assert (usage.requests, usage.failed_requests, usage.completion_tokens) == (7, 2, 25)


def test_the_gateway_sums_every_usage_field_of_its_stages():
    first, second = UsageCounters(), UsageCounters()
    first.add(answer("length"), attempts=1, ok=True)
    second.add(answer(STOPPED_EARLY), attempts=3, ok=True)
    total = common_pb2.LLMUsage()
    add_usage(total, usage_to_pb(first))
    add_usage(total, usage_to_pb(second))
    assert total == common_pb2.LLMUsage(
        requests=4,
        retries=2,
        failed_requests=2,
        prompt_tokens=200,
        completion_tokens=10,
        capped_answers=1,
        stopped_answers=1,
    )
