"""The form every output of a task takes, read from its examples, and answers held to it.

Two forms are told apart: a **span** (every output is a piece of its own input, as in extractive
question answering) and **labels** (the outputs form a closed set, as in classification). A
student's answer that breaks the form is read as the span or label it is most like: a student
that writes "the Panthers' defence" where the input says "Panthers defense", or "Positive" for
"positive", is given the piece of text its task allows. An answer like nothing allowed is kept.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from p2m.common.closed_set import closed_set_labels, closest_label, repeating_labels, squash
from p2m.common.text_scores import normalize_answer
from p2m.common.types import TaskSpec

FREE, SPAN, LABELS = "free", "span", "labels"
KINDS = (FREE, SPAN, LABELS)
# A form is read from at least this many examples, and holds for at least this share of them
# (a retrieved dataset may carry a few rows that break it).
MIN_EXAMPLES = 8
MIN_SHARE = 0.95
# A span may be this many words longer than the answer it stands in for.
SPAN_SLACK_WORDS = 3
_WORD = re.compile(r"\S+")
_EDGE_PUNCTUATION = " \t\n.,;:!?\"'()[]{}«»“”\u2018\u2019"


@dataclass(frozen=True)
class OutputForm:
    """What an output may be: any text, a span of its input, or one of ``labels``."""

    kind: str = FREE
    labels: tuple[str, ...] = ()

    def hold(self, answer: str, text: str) -> str:
        """``answer`` to the input ``text``, as the span or label it is most like."""
        if self.kind == SPAN:
            return closest_span(answer, text)
        if self.kind == LABELS:
            return closest_label(answer, self.labels)
        return answer

    def describe(self) -> str:
        """The form in words, for model cards and logs."""
        if self.kind == SPAN:
            return "a span of its input"
        if self.kind == LABELS:
            return f"one of {len(self.labels)} labels"
        return "free text"


def infer_output_form(
    inputs: Sequence[str], outputs: Sequence[str], task: TaskSpec | None = None
) -> OutputForm:
    """The form ``outputs`` take against their ``inputs``; free text where none holds.

    Labels where the task names a closed set (``closed_set_labels``: its instruction's list, or
    its demonstrations' repeating outputs) that at least ``MIN_SHARE`` of the outputs are in,
    or where the outputs themselves repeat as a closed set does; else a span where at least
    ``MIN_SHARE`` of the outputs are pieces of their input.
    """
    pairs = [(i, o) for i, o in zip(inputs, outputs, strict=True) if o.strip()]
    if len(pairs) < MIN_EXAMPLES:
        return OutputForm()
    named = closed_set_labels(task) if task is not None else ()
    known = {squash(label) for label in named}
    if named and sum(squash(o) in known for _, o in pairs) >= MIN_SHARE * len(pairs):
        return OutputForm(LABELS, named)
    labels = repeating_labels([o for _, o in pairs])
    if labels:
        return OutputForm(LABELS, labels)
    if sum(is_span(o, i) for i, o in pairs) >= MIN_SHARE * len(pairs):
        return OutputForm(SPAN)
    return OutputForm()


def is_span(answer: str, text: str) -> bool:
    """Whether ``answer`` appears in ``text`` (case and runs of whitespace aside)."""
    wanted = squash(answer)
    return bool(wanted) and wanted in squash(text)


def closest_span(answer: str, text: str) -> str:
    """``answer`` when it is a span of ``text``, else the span of ``text`` most like it.

    Most like: the highest word overlap (SQuAD's F1 over normalised words) among runs of the
    text's words up to ``SPAN_SLACK_WORDS`` longer than the answer, the shorter one on a tie,
    its edge punctuation trimmed. ``answer`` itself when no run shares a word with it.
    """
    if not answer.strip() or is_span(answer, text):
        return answer
    wanted = Counter(normalize_answer(answer).split())
    if not wanted:
        return answer
    words = [(m.start(), m.end(), normalize_answer(m.group())) for m in _WORD.finditer(text)]
    longest = sum(wanted.values()) + SPAN_SLACK_WORDS
    best, best_score, best_length = answer, 0.0, 0
    for first in range(len(words)):
        if not words[first][2] or words[first][2] not in wanted:
            continue  # a best run starts with a shared word
        window: Counter[str] = Counter()
        for last in range(first, min(len(words), first + longest)):
            window.update(words[last][2].split())
            shared = sum((window & wanted).values())
            if not shared:
                continue
            precision = shared / sum(window.values())
            recall = shared / sum(wanted.values())
            score = 2 * precision * recall / (precision + recall)
            length = last - first + 1
            if score > best_score or (score == best_score and length < best_length):
                start, end = words[first][0], words[last][1]
                best, best_score, best_length = text[start:end], score, length
    if not best_score:
        return answer
    return best.strip(_EDGE_PUNCTUATION) or best
