"""A task's output form read from its examples, and answers held to it."""

from __future__ import annotations

import pytest

from p2m.common.output_form import (
    FREE,
    LABELS,
    SPAN,
    OutputForm,
    closest_span,
    infer_output_form,
    is_span,
)
from p2m.common.types import Example, TaskSpec

CONTEXT = (
    "Question: How many points did the Panthers defense surrender? Context: The Panthers "
    "defense gave up just 308 points, ranking sixth in the league, while also leading the NFL "
    "in interceptions with 24."
)


def test_a_span_of_the_input_is_kept_as_written() -> None:
    assert closest_span("308 points", CONTEXT) == "308 points"
    assert closest_span("PANTHERS   defense", CONTEXT) == "PANTHERS   defense"


def test_an_answer_that_is_no_span_becomes_the_span_most_like_it() -> None:
    assert closest_span("sixth place in league", CONTEXT) == "sixth in the league"
    assert closest_span("24 interceptions.", CONTEXT) == "interceptions with 24"


def test_edge_punctuation_of_the_span_is_trimmed() -> None:
    assert closest_span("the league leaders", CONTEXT) == "league"


def test_an_answer_like_nothing_in_the_input_is_kept() -> None:
    assert closest_span("zebra crossing", CONTEXT) == "zebra crossing"
    assert closest_span("", CONTEXT) == ""


def test_spans_are_read_from_examples_whose_outputs_lie_in_their_inputs() -> None:
    inputs = [f"Question: who? Context: the name is Person{i} of town {i}." for i in range(10)]
    outputs = [f"Person{i}" for i in range(10)]
    assert infer_output_form(inputs, outputs) == OutputForm(SPAN)
    outputs[0] = "somebody else"  # one in ten breaks it: under the 95% a span needs
    assert infer_output_form(inputs, outputs).kind == FREE


def test_labels_are_read_from_repeating_short_outputs() -> None:
    inputs = [f"review {i}" for i in range(10)]
    outputs = ["positive", "negative"] * 5
    form = infer_output_form(inputs, outputs)
    assert form.kind == LABELS
    assert set(form.labels) == {"positive", "negative"}
    assert form.hold("Positive.", "review") == "positive"
    assert form.hold("I cannot tell", "review") == "I cannot tell"


def test_too_few_examples_say_nothing() -> None:
    assert infer_output_form(["a b"] * 3, ["a"] * 3).kind == FREE


@pytest.mark.parametrize(("answer", "expected"), [("Sixth", True), ("seventh", False)])
def test_is_span_ignores_case(answer: str, expected: bool) -> None:
    assert is_span(answer, CONTEXT) is expected


def test_free_text_is_never_changed() -> None:
    assert OutputForm().hold("anything at all", CONTEXT) == "anything at all"


def test_the_task_s_own_labels_come_first() -> None:
    """Outputs that each name a label once are no closed set by themselves; the task's list is."""
    intents = [f"intent_{i}" for i in range(20)]
    instruction = "Classify the message as one of these intents: " + ", ".join(intents) + "."
    task = TaskSpec(
        instruction=instruction,
        demonstrations=(Example("hi", "intent_0"), Example("hello", "intent_1")),
    )
    inputs = [f"message {i}" for i in range(12)]
    outputs = intents[:12]
    assert infer_output_form(inputs, outputs).kind == FREE
    form = infer_output_form(inputs, outputs, task)
    assert form == OutputForm(LABELS, tuple(intents))
    assert form.hold("Intent 17", "message") == "intent_17"
