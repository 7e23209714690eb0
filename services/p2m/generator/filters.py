"""Quality filters: normalisation, duplicate detection, field checks, and the majority vote."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Any

from p2m.common.types import TaskSpec

_PUNCT_SPACE = re.compile(r"[\W_]+", re.UNICODE)
SHINGLE = 4
# An input copies the instruction when one run of the instruction's text, at least this long,
# makes up at least this share of it.
COPIED_RUN_CHARS = 12
COPIED_SHARE = 0.5
# A text that holds a run of this many characters twice repeats itself: a small teacher caught
# in a loop ("... is wheat, which is a staple crop. ... is wheat, which is a staple crop. ...").
# No input of the paper's three dev halves (1,130) or of its generated sets (15,004) does; at 60
# characters six SQuAD questions do, quoting their context.
LOOP_CHARS = 80


def normalise(text: str) -> str:
    """Case-folded, NFKC, punctuation and runs of spaces collapsed to one space."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT_SPACE.sub(" ", folded).strip()


def shingles(text: str, size: int = SHINGLE) -> frozenset[str]:
    """Character ``size``-grams of the normalised text (the whole text when shorter)."""
    norm = normalise(text)
    if len(norm) <= size:
        return frozenset([norm])
    return frozenset(norm[i : i + size] for i in range(len(norm) - size + 1))


class _JaccardIndex:
    """Sets of grams seen so far; finds one at least ``threshold`` similar (Jaccard)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._sets: list[frozenset[Any]] = []
        self._postings: dict[Any, list[int]] = {}

    def near(self, grams: frozenset[Any]) -> bool:
        overlap: Counter[int] = Counter()
        for gram in grams:
            overlap.update(self._postings.get(gram, ()))
        return any(
            shared / (len(grams) + len(self._sets[index]) - shared) >= self.threshold
            for index, shared in overlap.items()
        )

    def add(self, grams: frozenset[Any]) -> None:
        index = len(self._sets)
        self._sets.append(grams)
        for gram in grams:
            self._postings.setdefault(gram, []).append(index)


class DuplicateIndex:
    """Inputs seen so far: exact (normalised) and near duplicate checks.

    Near means a Jaccard index of at least ``threshold`` between character 4-gram sets (small
    edits of a text), or of at least ``word_threshold`` between word 3-gram sets (a long input
    used again with a few details changed: the same sentence about a fiscal year, other dates).
    """

    def __init__(self, threshold: float, word_threshold: float = 1.0) -> None:
        """Treat inputs this similar by characters, or by words, as near duplicates."""
        self.threshold = threshold
        self._exact: set[str] = set()
        self._chars = _JaccardIndex(threshold)
        self._words = _JaccardIndex(word_threshold) if word_threshold < 1.0 else None

    def check(self, text: str) -> str | None:
        """Return "exact_duplicate", "near_duplicate", or None when ``text`` is new."""
        if normalise(text) in self._exact:
            return "exact_duplicate"
        if self._chars.near(shingles(text)):
            return "near_duplicate"
        if self._words is not None and self._words.near(word_trigrams(text)):
            return "near_duplicate"
        return None

    def add(self, text: str) -> None:
        """Remember ``text`` as seen."""
        self._exact.add(normalise(text))
        self._chars.add(shingles(text))
        if self._words is not None:
            self._words.add(word_trigrams(text))


def field_problem(text: str, max_chars: int) -> str | None:
    """Return "empty" or "too_long" for a bad input or output field, else None."""
    if not text.strip():
        return "empty"
    if len(text) > max_chars:
        return "too_long"
    return None


def repeats_itself(text: str, span: int = LOOP_CHARS) -> bool:
    """True when some run of ``span`` characters occurs twice in ``text`` (overlaps count)."""
    seen: set[str] = set()
    for start in range(len(text) - span + 1):
        run = text[start : start + span]
        if run in seen:
            return True
        seen.add(run)
    return False


def ends_in_a_loop(text: str, span: int = LOOP_CHARS) -> bool:
    """True when ``text``'s last ``span`` characters occur earlier in it (a growing stream's).

    A stream checked as it grows needs only its newest run looked for: a loop keeps going.
    """
    return len(text) > span and text.find(text[-span:]) < len(text) - span


def copies_input(input_text: str, output_text: str) -> bool:
    """True when the output only repeats the input (the same text, or the input whole inside it)."""
    source, target = normalise(input_text), normalise(output_text)
    if not target:
        return False
    return target == source or (len(source) >= 16 and source in target)


def copies_instruction(text: str, instructions: Sequence[str]) -> bool:
    """True when most of ``text`` is one run of one of the ``instructions`` (normalised).

    A small teacher asked for a new input of a task sometimes writes the task itself
    ("Solve the Japanese Stack Overflow question", or with a topic in front), or answers with
    the wording of its own request; neither is an example. Short shared phrases ("the review")
    do not count.
    """
    source = normalise(text)
    for instruction in instructions:
        target = normalise(instruction)
        if COPIED_SHARE * len(source) > len(target):
            continue
        run = SequenceMatcher(None, source, target, autojunk=False).find_longest_match()
        if run.size >= max(COPIED_RUN_CHARS, COPIED_SHARE * len(source)):
            return True
    return False


def instructions_to_screen(task: TaskSpec) -> tuple[str, ...]:
    """The instruction's texts (as given and as written) inputs must not copy.

    Empty when a demonstration's input copies one itself: such a task's inputs quote it.
    """
    texts = tuple(t for t in (task.instruction, task.original_instruction) if t.strip())
    if any(copies_instruction(d.input, texts) for d in task.demonstrations):
        return ()
    return texts


def majority_vote(outputs: Sequence[str], nested: bool = False) -> tuple[str, float]:
    """The most frequent output (ties: the shortest, then the first) and its share of the votes.

    Outputs are compared normalised; the winner is returned as first written. ``nested`` is for
    answers copied from the input: an output also counts for every output it sits inside (word
    for word), so "Parliament" backs "Parliament of Victoria" instead of outvoting it; ties go
    to the more often written, then as above. A small teacher often copies a piece of the span:
    on 400 SQuAD dev inputs, five answers each at temperature 1, Exact Match 28.2 nested against
    25.2 by plain counts (17 inputs won, 5 lost); one greedy answer scored 26.2.
    """
    if not outputs:
        raise ValueError("no outputs to vote on")
    keys = [normalise(o) for o in outputs]
    counts = Counter(keys)
    first_written: dict[str, str] = {}
    for key, output in zip(keys, outputs, strict=True):
        first_written.setdefault(key, output)

    def support(key: str) -> int:
        if not nested:
            return counts[key]
        return sum(n for other, n in counts.items() if f" {other} " in f" {key} ")

    best = max(counts, key=lambda k: (support(k), counts[k], -len(first_written[k])))
    return first_written[best], support(best) / len(outputs)


def samples_to_settle(votes: Sequence[str], left: int, nested: bool = False) -> int:
    """How many of ``left`` further outputs to ask for before voting on ``votes`` (0: none).

    The vote is settled when the leader's count exceeds the runner-up's by more than ``left``:
    no further outputs could then change ``majority_vote``'s winner, ties included. Otherwise
    the answer is the fewest further outputs that settle it if they all agree with the leader.
    A ``nested`` vote is never settled early: one more output that holds the leader outvotes it.
    """
    if nested:
        return left
    counts = sorted(Counter(normalise(v) for v in votes).values(), reverse=True)
    lead, second = (*counts, 0, 0)[:2]
    if lead > second + left:
        return 0
    return min(left, (second + left - lead) // 2 + 1)


def word_trigrams(text: str) -> frozenset[tuple[str, ...]]:
    """Word 3-grams of the normalised text (the whole text as one gram when shorter)."""
    words = normalise(text).split()
    if len(words) < 3:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + 3]) for i in range(len(words) - 2))


def near_duplicate_share(texts: Sequence[str], threshold: float = 0.5) -> float:
    """Share of ``texts`` whose word-trigram Jaccard with another of them is >= ``threshold``."""
    grams = [word_trigrams(text) for text in texts]
    postings: dict[tuple[str, ...], list[int]] = {}
    for index, own in enumerate(grams):
        for gram in own:
            postings.setdefault(gram, []).append(index)
    near = 0
    for index, own in enumerate(grams):
        shared: Counter[int] = Counter()
        for gram in own:
            shared.update(other for other in postings[gram] if other != index)
        if any(n / (len(own) + len(grams[o]) - n) >= threshold for o, n in shared.items()):
            near += 1
    return near / len(texts) if texts else 0.0
