"""Span-first generation's parts: the layout learned, the spans offered, the round trip's match."""

from __future__ import annotations

import random

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.llm import UsageCounters
from p2m.common.types import Example, TaskSpec
from p2m.generator.engine import DROP_REASONS, GenerationReport
from p2m.generator.grounded import (
    InputLayout,
    answer_spans,
    copies_a_passage,
    gives_answer,
    input_layout,
    passage_messages,
    pick_span,
    question_messages,
    same_answer,
)
from p2m.generator.invariants import Invariants, infer
from p2m.generator.options import GenerateOptions, generation_key, span_first_layout
from p2m.generator.service import options_from_pb, report_to_pb
from prompt2model.v1 import generator_pb2

PASSAGE = (
    "Super Bowl 50 was an American football game to determine the champion of the National "
    "Football League (NFL) for the 2015 season. The game was played on February 7, 2016, at "
    "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California. About 71,088 "
    "people watched it."
)
SQUAD = TaskSpec(
    "Answer the question from the context.",
    (
        Example(f"Question: Where was Super Bowl 50 played? Context: {PASSAGE}", "Santa Clara"),
        Example(
            "Question: What river runs through Warsaw? Context: Warsaw stands on the Vistula "
            "River in east-central Poland, about 260 kilometres from the Baltic Sea.",
            "Vistula River",
        ),
    ),
)
TEMPORAL = TaskSpec(
    "Normalise the date.",
    (
        Example("[Posted: 2013-10-25] I left yesterday.", "yesterday == 2013-10-24"),
        Example("[Posted: 2014-01-02] Nothing here.", "N/A"),
    ),
)


def test_the_layout_is_the_two_marked_parts_with_the_output_copied_from_one():
    layout = input_layout(SQUAD.demonstrations, infer(SQUAD))
    assert layout == InputLayout(("Question:", "Context:"), passage=1, separator=" ")
    parts = layout.parts(SQUAD.demonstrations[1].input)
    assert parts == [
        "What river runs through Warsaw?",
        "Warsaw stands on the Vistula River in east-central Poland, about 260 kilometres from "
        "the Baltic Sea.",
    ]
    assert layout.join(parts) == SQUAD.demonstrations[1].input
    assert layout.parts("What river? Context: Warsaw") is None  # a marker missing


def test_no_layout_where_outputs_are_not_copied_from_one_marked_part():
    assert input_layout(TEMPORAL.demonstrations, infer(TEMPORAL)) is None  # not copied at all
    mixed = TaskSpec(  # one output is copied from the question, the other from the context
        "Answer.",
        (
            Example("Question: Is Oslo big? Context: It is a city.", "Oslo"),
            Example("Question: Where? Context: It lies in Norway.", "Norway"),
        ),
    )
    assert input_layout(mixed.demonstrations, infer(mixed)) is None


def test_span_first_changes_the_key_only_where_it_applies():
    on, off = GenerateOptions(span_first=True), GenerateOptions()
    assert span_first_layout(SQUAD, on) is not None and span_first_layout(SQUAD, off) is None
    assert generation_key(SQUAD, on, "m") != generation_key(SQUAD, off, "m")
    assert span_first_layout(TEMPORAL, on) is None
    assert generation_key(TEMPORAL, on, "m") == generation_key(TEMPORAL, off, "m")
    unchecked = GenerateOptions(span_first=True, check_invariants=False)  # no layout
    assert span_first_layout(SQUAD, unchecked) is None


def test_passage_first_has_its_own_key_where_it_applies_and_not_with_span_first():
    passage, span = GenerateOptions(passage_first=True), GenerateOptions(span_first=True)
    assert span_first_layout(SQUAD, passage) == span_first_layout(SQUAD, span) is not None
    keys = {generation_key(SQUAD, o, "m") for o in (passage, span, GenerateOptions())}
    assert len(keys) == 3
    assert generation_key(TEMPORAL, passage, "m") == generation_key(TEMPORAL, span, "m")
    with pytest.raises(InvalidInput) as refused:
        GenerateOptions(span_first=True, passage_first=True).validate()
    assert refused.value.field == "options.passage_first"


def test_spans_are_names_dates_and_numbers_copied_as_written():
    spans = answer_spans(PASSAGE)
    assert {"Levi's Stadium", "San Francisco Bay Area", "Santa Clara", "NFL"} <= set(spans["name"])
    assert "National Football League" in spans["name"]
    assert "The" not in spans["name"] and "February" not in spans["name"]
    assert spans["date"] == ["February 7, 2016"]
    assert {"2015", "2015 season", "71,088", "71,088 people"} <= set(spans["number"])
    assert "50 was" not in spans["number"]  # a verb is no unit
    for found in spans.values():
        assert all(span in PASSAGE for span in found)


def test_a_span_is_drawn_by_kind_and_avoids_outputs_held_enough():
    spans = {"name": ["Oslo", "Bergen"], "date": [], "number": ["12"]}
    drawn = {pick_span(spans, random.Random(seed)) for seed in range(40)}
    assert drawn == {"Oslo", "Bergen", "12"}
    assert pick_span(spans, random.Random(1), avoid=["oslo", "Bergen"]) == "12"
    assert pick_span({"name": ["Oslo"]}, random.Random(1), avoid=["Oslo"]) is None


@pytest.mark.parametrize(
    ("answer", "span", "same"),
    [
        ("Santa Clara", "Santa Clara", True),
        ("the Vistula River.", "Vistula River", True),
        ("Levi's Stadium in Santa Clara", "Levi's Stadium", True),
        ("California", "Santa Clara", False),
        ("", "Santa Clara", False),
    ],
)
def test_an_answer_gives_the_span_back_when_their_words_overlap_enough(answer, span, same):
    assert same_answer(answer, span) is same


def test_a_question_that_holds_its_answer_gives_it_away():
    assert gives_answer("Which city is Santa Clara in?", "santa clara")
    assert not gives_answer("Where was the game played?", "Santa Clara")


def test_the_passage_request_shows_passages_and_asks_for_the_topic_and_length():
    layout = input_layout(SQUAD.demonstrations, infer(SQUAD))
    passages = [layout.parts(d.input)[1] for d in SQUAD.demonstrations]
    messages = passage_messages("Answer.", layout, passages, "volcanoes")
    user = messages[-1]["content"]
    assert passages[0] in user and passages[1] in user and "volcanoes" in user
    assert f"about {len(passages[0].split())} words" in user  # the longer's, as the median
    assert '"passage"' in messages[0]["content"]


def test_the_question_request_asks_about_the_new_passage_for_the_span_alone():
    layout = input_layout(SQUAD.demonstrations, infer(SQUAD))
    messages = question_messages("Answer it.", layout, "Oslo is old.", "Oslo")
    user = messages[-1]["content"]
    assert user.startswith("Task: Answer it.\n\nContext: Oslo is old.\n\n")
    assert 'whose answer is "Oslo"' in user and 'after "Question:"' in user
    assert PASSAGE not in user  # no demonstration to copy


def test_the_passage_first_question_request_chooses_no_answer():
    layout = input_layout(SQUAD.demonstrations, infer(SQUAD))
    user = question_messages("Answer it.", layout, "Oslo is old.")[-1]["content"]
    assert user.startswith("Task: Answer it.\n\nContext: Oslo is old.\n\n")
    assert "copied from the passage" in user and 'answer is "' not in user


def test_a_passage_that_copies_half_of_a_known_one_is_a_copy():
    half = " ".join(PASSAGE.split()[:30])
    assert copies_a_passage(half + " Then the fans went home happy.", [PASSAGE])
    fresh = "Oslo is the capital of Norway. It has about 700,000 people and many old parks."
    assert not copies_a_passage(fresh, [PASSAGE])


def test_span_first_is_asked_for_over_grpc_and_off_when_not():
    assert options_from_pb(generator_pb2.GenerateOptions(span_first=True)).span_first
    assert options_from_pb(generator_pb2.GenerateOptions(passage_first=True)).passage_first
    default = options_from_pb(generator_pb2.GenerateOptions())
    assert not default.span_first and not default.passage_first
    with pytest.raises(InvalidInput, match="passage_first"):
        options_from_pb(generator_pb2.GenerateOptions(span_first=True, passage_first=True))


def test_every_drop_reason_reaches_the_grpc_report():
    counts = {reason: index + 1 for index, reason in enumerate(DROP_REASONS)}
    report = GenerationReport(
        requested=1,
        accepted=1,
        dropped=counts,
        invariant_drops={},
        invariants=Invariants(),
        label_counts={},
        duplicate_share=0.0,
        near_duplicate_share=0.0,
        judge_mean_score=0.0,
        commonest_output_share=0.0,
        self_consistency_agreement=0.0,
        usage=UsageCounters(),
        resumed_from=0,
        cached=False,
        stop_reason="target_reached",
        rounds=1,
        elapsed_s=1.0,
    )
    dropped = report_to_pb(report).dropped
    assert {reason: getattr(dropped, reason) for reason in DROP_REASONS} == counts
