"""Whether a task's outputs form a closed set of labels, and which.

Shared by the generator (its invariants, balanced labels) and by every teacher answer request,
which reads a closed-set answer as the label it is closest to.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence

from p2m.common.types import TaskSpec

MIN_DEMONSTRATIONS = 2
# A closed set: at most this many words per output, and each label shown at least twice or all
# outputs repeating.
MAX_LABEL_WORDS = 4
# Labels an instruction lists: quoted ("positive" or "negative"), or after "one of" / "one of
# these intents:" up to the end of the sentence.
_QUOTED = re.compile(r"[\"“”'`]([^\"“”'`\n]{1,40})[\"“”'`]")
_ONE_OF = re.compile(r"\bone of(?: these| the following)?(?: \w+)?:?\s+([^.\n]+)", re.IGNORECASE)
_LIST_SPLIT = re.compile(r",\s*(?:or\s+|and\s+)?|\s+or\s+|\s+and\s+")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]+")
# How alike an answer and a label must be to read the answer as that label: difflib's default.
SNAP_CUTOFF = 0.6


def squash(text: str) -> str:
    """``text`` with runs of whitespace as one space, stripped and case-folded."""
    return _SPACE.sub(" ", text).strip().casefold()


def closed_set_labels(task: TaskSpec) -> tuple[str, ...]:
    """The labels every output of ``task`` is one of; empty for an open set.

    From the instruction (quoted labels, or a list after "one of") when every demonstration's
    output is among them, else from the demonstrations when their outputs repeat. Needs at
    least ``MIN_DEMONSTRATIONS`` demonstrations.
    """
    outputs = [d.output.strip() for d in task.demonstrations]
    if len(outputs) < MIN_DEMONSTRATIONS:
        return ()
    instruction = f"{task.instruction}\n{task.original_instruction}"
    return instruction_labels(instruction, outputs) or repeating_labels(outputs)


def instruction_labels(instruction: str, outputs: Sequence[str]) -> tuple[str, ...]:
    """Labels the instruction lists (quoted, or after "one of"), when every output is one."""
    lists = [[q.strip() for q in _QUOTED.findall(instruction)]]
    for found in _ONE_OF.finditer(instruction):
        lists.append([item.strip(" '\"`") for item in _LIST_SPLIT.split(found.group(1))])
    for labels in lists:
        labels = [label for label in labels if label and len(label.split()) <= MAX_LABEL_WORDS]
        known = {squash(label) for label in labels}
        if len(known) >= 2 and all(squash(o) in known for o in outputs):
            return tuple(dict.fromkeys(labels))
    return ()


def repeating_labels(outputs: Sequence[str]) -> tuple[str, ...]:
    """The labels when the outputs look like a closed set: short, and repeating."""
    if any(len(o.split()) > MAX_LABEL_WORDS or not o for o in outputs):
        return ()
    counts = Counter(squash(o) for o in outputs)
    if len(counts) < 2 or len(counts) == len(outputs):
        return ()  # one value says nothing; all different is an open set
    if min(counts.values()) < 2 and len(counts) > len(outputs) / 2:
        return ()
    return tuple(dict.fromkeys(o for o in outputs))


def closest_label(answer: str, labels: Sequence[str]) -> str:
    """The label ``answer`` is, or is much like; ``answer`` itself when no label is close.

    A small teacher writes "Refund_not_showing_up" for "refund_not_showing_up",
    "deposit_not_updated_after_cheque" for "balance_not_updated_after_cheque_or_cash_deposit",
    or "reverted_top_up" for "top_up_reverted": alike by characters or by words (``likeness``).
    An answer like no label (a sentence) is left as it is, for the caller to judge.
    """
    by_squashed = {squash(label): label for label in labels}
    wanted = squash(answer)
    if wanted in by_squashed:
        return by_squashed[wanted]
    words = label_words(answer)
    scored = [(likeness(wanted, words, key), key) for key in by_squashed]
    best = max(scored, default=((0.0, 0.0), ""), key=lambda item: item[0])
    return by_squashed[best[1]] if best[0][0] >= SNAP_CUTOFF else answer


def label_words(text: str) -> frozenset[str]:
    """The words of ``text``, case-folded; underscores, hyphens and punctuation part them."""
    return frozenset(word.casefold() for word in _WORD.findall(text))


def likeness(answer: str, words: frozenset[str], label: str) -> tuple[float, float]:
    """How alike a squashed answer (with its ``words``) and a squashed label are, best first.

    The larger of difflib's character ratio and the words' Dice overlap (the same words in any
    order score 1); the character ratio again breaks ties.
    """
    chars = difflib.SequenceMatcher(None, label, answer).ratio()  # as get_close_matches
    theirs = label_words(label)
    overlap = 2 * len(words & theirs) / (len(words) + len(theirs)) if words and theirs else 0.0
    return max(chars, overlap), chars
