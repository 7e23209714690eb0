"""Span-first and passage-first inputs: the passage first, then the question for it.

Where every demonstration's output is copied from one marked part of its input (SQuAD: the answer
is a span of the text after "Context:"), a small teacher asked for a whole new input writes the
question first and then a passage made up to fit it ("What sport did World War II end in?"),
and its own answers are mostly one word (55 of the 80 SQuAD outputs Qwen2.5-Coder-0.5B wrote,
against 197 of the dev half's 595). Span-first generation asks for the passage alone, picks a
span of it (a name, a date or a number: a short common-noun phrase cannot be told from other
words without a tagger), asks for the question whose answer is that span, and keeps the example
only where the teacher, answering the assembled input as it answers any input, gives that span
back (round-trip consistency). Passage-first asks for the question without choosing its
answer (one the passage answers), and the input so made is answered by the vote as any input:
the question is written about a passage that exists, and no example is lost to a round trip.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2m.common.closed_set import squash
from p2m.common.types import Example
from p2m.generator.filters import COPIED_SHARE, word_trigrams
from p2m.generator.invariants import Invariants, marked_parts

PASSAGE_SCHEMA = {
    "type": "object",
    "properties": {"passage": {"type": "string"}},
    "required": ["passage"],
}
QUESTION_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}},
    "required": ["question"],
}
PASSAGE_SYSTEM = (
    'You write training data for a task. Reply with one JSON object with the key "passage": a '
    "new passage of the kind the examples show, different from every one of them."
)
QUESTION_SYSTEM = (
    'You write training data for a task. Reply with one JSON object with the key "question": '
    "the text that goes with the passage, written so that the given answer answers it."
)
# A teacher's answer agrees with the chosen span when their words overlap this much (token F1,
# as SQuAD scores partial answers): "Levi's Stadium in Santa Clara" for "Levi's Stadium".
AGREEMENT_F1 = 0.5
MAX_SPAN_WORDS = 6
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(
    rf"\b(?:(?:{_MONTHS}) \d{{1,2}}, \d{{4}}|\d{{1,2}} (?:{_MONTHS}) \d{{4}}"
    rf"|(?:{_MONTHS}) \d{{4}}|(?:{_MONTHS}) \d{{1,2}})\b"
)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:%| percent)?(?![\w])")
_UNIT = re.compile(r"\s([a-z]{3,})\b")
_WORD = re.compile(r"[A-Za-z\u00C0-\u024F][\w'\u2019\u00C0-\u024F-]*|\d[\w.,-]*|[^\w\s]")
# Lowercase words that may join the capitalised words of one name ("University of Warsaw").
_NAME_JOINERS = frozenset({"of", "de", "du", "der", "von", "van", "da", "del", "la", "and", "the"})
# Words that start a capitalised run without being part of the name ("The Denver Broncos").
_FUNCTION_WORDS = frozenset(
    " ".join(
        (
            "a an the this that these those it its he she they we i in on at by for from to of",
            "as and but or if when while after before during since with without about also",
            "however there here his her their our your my",
        )
    ).split()
)
# Words after a number that are not its unit ("50 was", "2015 and").
_NOT_UNITS = _FUNCTION_WORDS | frozenset(
    " ".join(
        ("was were is are be been has had have will would can could", "may might did does")
    ).split()
)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class InputLayout:
    """How the demonstrations' inputs are built: marked parts, one of them the passage.

    Attributes:
        markers: The markers, in order ("Question:", "Context:").
        passage: The index of the marker whose text every demonstration's output is copied from.
        separator: What stands between one part's text and the next marker.
    """

    markers: tuple[str, ...]
    passage: int
    separator: str

    @property
    def question(self) -> int:
        """The index of the other part (layouts have two)."""
        return 1 - self.passage

    def parts(self, text: str) -> list[str] | None:
        """The texts after each marker of ``text``, or None when it is not laid out so.

        Laid out so: it starts with the first marker, and no marker's text is empty.
        """
        if not text.lstrip().startswith(self.markers[0]):
            return None
        parts = marked_parts(text, self.markers)
        return parts if parts is not None and all(parts) else None

    def join(self, parts: Sequence[str]) -> str:
        """An input laid out as the demonstrations': each marker, a space, its text."""
        return self.separator.join(
            f"{marker} {text}" for marker, text in zip(self.markers, parts, strict=True)
        )


def input_layout(demonstrations: Sequence[Example], invariants: Invariants) -> InputLayout | None:
    """The layout span-first generation needs, or None where it does not apply.

    It applies where the invariants learned two markers and outputs copied from the input, and
    every demonstration's input is those two marked parts alone, its output copied from the
    same one of them.
    """
    markers = invariants.input_markers
    if not invariants.output_in_input or len(markers) != 2 or len(demonstrations) < 2:
        return None
    probe = InputLayout(markers, 0, " ")
    sources: set[int] = set()
    for demonstration in demonstrations:
        parts = probe.parts(demonstration.input)
        if parts is None:
            return None
        output = squash(demonstration.output)
        holding = [i for i, part in enumerate(parts) if output in squash(part)]
        if len(holding) != 1:
            return None
        sources.add(holding[0])
    if len(sources) != 1:
        return None
    first = demonstrations[0].input
    gap = re.search(r"(\s*)" + re.escape(markers[1]), first)
    separator = gap.group(1) if gap is not None and gap.group(1) else " "
    return InputLayout(markers, sources.pop(), separator)


def answer_spans(passage: str) -> dict[str, list[str]]:
    """Spans of ``passage`` a question could ask for, by kind: names, dates and numbers.

    Each span is copied from the passage as written and holds at most ``MAX_SPAN_WORDS`` words.
    """
    dates = _unique(m.group(0) for m in _DATE.finditer(passage))
    in_dates = " ".join(dates)
    numbers: list[str] = []
    for match in _NUMBER.finditer(passage):
        if match.group(0) in in_dates:
            continue
        numbers.append(match.group(0))
        unit = _UNIT.match(passage, match.end())
        if unit is not None and unit.group(1) not in _NOT_UNITS:
            numbers.append(passage[match.start() : unit.end()])
    months = set(_MONTHS.split("|"))
    spans = {
        "name": [name for name in _names(passage) if name not in months],
        "date": dates,
        "number": _unique(numbers),
    }
    return {
        kind: [s for s in found if len(s.split()) <= MAX_SPAN_WORDS]
        for kind, found in spans.items()
    }


def _names(passage: str) -> list[str]:
    """Runs of capitalised words ("Levi's Stadium", "University of Warsaw")."""
    names: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", passage):
        words = list(_WORD.finditer(sentence))
        run: list[re.Match[str]] = []
        for index, word in enumerate(words):
            text = word.group(0)
            after = words[index + 1].group(0) if index + 1 < len(words) else ""
            if text[:1].isupper() or (run and text in _NAME_JOINERS and after[:1].isupper()):
                run.append(word)
                continue
            names.extend(_name_of(sentence, run))
            run = []
        names.extend(_name_of(sentence, run))
    return _unique(names)


def _name_of(sentence: str, run: list[re.Match[str]]) -> list[str]:
    """The name a run of words makes, without leading function words; none for one at start."""
    while run and run[0].group(0).lower() in _FUNCTION_WORDS:
        run = run[1:]
    while run and run[-1].group(0) in _NAME_JOINERS:
        run = run[:-1]
    if not run or (len(run) == 1 and run[0].start() == 0):
        return []  # a sentence's first word alone: capitalised by position, not as a name
    return [sentence[run[0].start() : run[-1].end()]]


def _unique(spans: Any) -> list[str]:
    seen: dict[str, str] = {}
    for span in spans:
        seen.setdefault(squash(span), span.strip())
    return [span for span in seen.values() if span]


def pick_span(
    spans: dict[str, list[str]], rng: random.Random, avoid: Sequence[str] = ()
) -> str | None:
    """One span: a kind drawn evenly among those found, then a span of it (none of ``avoid``)."""
    taken = {squash(a) for a in avoid}
    kinds = {kind: [s for s in found if squash(s) not in taken] for kind, found in spans.items()}
    kinds = {kind: found for kind, found in kinds.items() if found}
    if not kinds:
        return None
    kind = rng.choice(sorted(kinds))
    return rng.choice(kinds[kind])


def normalise_answer(text: str) -> list[str]:
    """SQuAD's normalisation, as words: lower case, no punctuation, no articles."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return _SQUAD_ARTICLES.sub(" ", text).split()


def same_answer(answer: str, span: str) -> bool:
    """True when ``answer`` gives ``span`` back (token F1 of at least ``AGREEMENT_F1``)."""
    got, want = normalise_answer(answer), normalise_answer(span)
    if not got or not want:
        return False
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return False
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall) >= AGREEMENT_F1


def copies_a_passage(passage: str, passages: Sequence[str], share: float = COPIED_SHARE) -> bool:
    """True when ``share`` of the passage's word trigrams come from one of ``passages``.

    Shown the demonstrations' passages, the default teacher wrote one of them again, whole or
    its first half, in 6 of the first 12 passages it wrote.
    """
    own = word_trigrams(passage)
    return any(len(own & word_trigrams(other)) >= share * len(own) for other in passages)


def gives_answer(question: str, span: str) -> bool:
    """True when the question already holds its answer ("What city is Santa Clara in?")."""
    return squash(span) in squash(question)


def passage_messages(
    instruction: str,
    layout: InputLayout,
    passages: Sequence[str],
    hint: str | None,
) -> list[dict[str, str]]:
    """Ask for a new passage like ``passages`` (the text after the layout's passage marker)."""
    marker = layout.markers[layout.passage]
    words = sorted(len(p.split()) for p in passages)
    length = words[len(words) // 2] if words else 0
    parts = [f"Task: {instruction}"]
    if passages:
        shown = "\n\n".join(passages)
        parts.append(f'Examples of the text after "{marker}" in this task\'s inputs:\n\n{shown}')
    ask = f'Write one new text of this kind (the text after "{marker}")'
    if hint:
        ask += f", about: {hint}"
    if length:
        ask += f", of about {length} words"
    ask += (
        ". Make it factual and specific, with the names, dates and numbers a question could ask "
        "about. Reply with the text only."
    )
    parts.append(ask)
    return [
        {"role": "system", "content": PASSAGE_SYSTEM},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def question_messages(
    instruction: str, layout: InputLayout, passage: str, answer: str = ""
) -> list[dict[str, str]]:
    """Ask for the question part of a new input whose answer is ``answer``, a span of ``passage``.

    Without ``answer`` (passage-first), one question the passage's own words answer.

    No demonstration is shown: Qwen2.5-Coder-0.5B shown them wrote their own questions again
    ("What city did Super Bowl 50 take place in?" for a passage on Warsaw) in most answers.
    Told to leave the answer out, it still wrote it into 18 of 36 questions (12 of 18 untold).
    """
    passage_marker = layout.markers[layout.passage]
    question_marker = layout.markers[layout.question]
    if answer:
        wanted = f'whose answer is "{answer}", without the words "{answer}" in it'
    else:
        wanted = "whose answer is a few words copied from the passage, not words of the question"
    user = (
        f"Task: {instruction}\n\n{passage_marker} {passage}\n\n"
        f'Write the text after "{question_marker}" for this passage: one question about the '
        f"passage {wanted}. Reply with that text only."
    )
    return [
        {"role": "system", "content": QUESTION_SYSTEM},
        {"role": "user", "content": user},
    ]
