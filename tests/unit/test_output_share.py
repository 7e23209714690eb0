"""The cap on how often one open output may repeat in a generated dataset."""

from __future__ import annotations

from p2m.common.types import Example
from p2m.generator.output_share import MIN_REPEATS, OutputCap, OutputCounts
from p2m.generator.prompts import new_input_messages

SPAN_DEMOS = (
    Example("Question: planet? Context: Jupiter is big", "Jupiter"),
    Example("Question: city? Context: Canberra is a capital", "Canberra"),
)
DATED_DEMOS = (
    Example("[Posted: 2022-01-01] next week", "next week == 2022-01-08"),
    Example("[Posted: 2022-01-01] someday", "N/A"),
    Example("[Posted: 2022-02-01] sometime", "N/A"),
    Example("[Posted: 2022-03-01] tomorrow", "tomorrow == 2022-03-02"),
)


def test_an_output_may_make_its_share_of_the_examples_asked_for_and_never_fewer_than_two():
    cap = OutputCap.for_demonstrations(SPAN_DEMOS, 2000, 0.02)
    assert cap.limit("jupiter") == 40
    assert OutputCap.for_demonstrations(SPAN_DEMOS, 30, 0.02).limit("jupiter") == MIN_REPEATS


def test_an_output_the_demonstrations_repeat_keeps_their_share():
    cap = OutputCap.for_demonstrations(DATED_DEMOS, 100, 0.02)
    assert cap.repeated == {"n a": 0.5}  # "N/A" normalised, in 2 of 4 demonstrations
    assert cap.limit("n a") == 50
    assert cap.limit("next week 2022 01 08") == 2


def test_counts_read_outputs_as_the_same_when_only_case_and_punctuation_differ():
    cap = OutputCap.for_demonstrations(SPAN_DEMOS, 10, 0.02)
    counts = OutputCounts(["Jupiter", "jupiter."])
    assert counts.full("JUPITER", cap)
    assert not counts.full("Canberra", cap)
    counts.add("Canberra")
    assert counts.at_cap(cap) == ["Jupiter"]  # first spelling, only those at the cap
    assert counts.commonest_share() == 2 / 3


def test_a_share_of_zero_or_one_caps_nothing():
    counts = OutputCounts(["Jupiter"] * 50)
    for share in (0.0, 1.0):
        cap = OutputCap.for_demonstrations(SPAN_DEMOS, 100, share)
        assert not cap.active
        assert not counts.full("Jupiter", cap) and counts.at_cap(cap) == []
    assert OutputCounts().commonest_share() == 0.0


def test_a_request_for_a_new_input_names_the_outputs_to_avoid():
    messages = new_input_messages("Answer.", SPAN_DEMOS, avoid=["Jupiter", "Canberra"])
    assert 'its correct output must not be "Jupiter", "Canberra"' in messages[-1]["content"]
    plain = new_input_messages("Answer.", SPAN_DEMOS)
    assert "must not be" not in plain[-1]["content"]
