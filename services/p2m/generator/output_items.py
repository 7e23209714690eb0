r"""Outputs made of keyed items ("last year == 1997 | July 1st == 2022-07-01"): learned, then held.

When every demonstration's output (bar the repeated ones such as "N/A") is one or more items, each
a key, the one literal every output holds ("=="), and a value, joined by a separator ("|"), two
more things are often true of them: every key is quoted from the input (the expression the task
extracts), and every value has one of a few shapes made of digits and punctuation (a date, a
time, an amount: ``\d{4}-\d{2}``). A small teacher breaks both: of the 80 Temporal examples
Qwen2.5-Coder-0.5B wrote, 8 had "budget deficit == 5 million", "Holiday trip == September" or a
key the input does not hold; all 273 items of the dev half keep both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from p2m.common.closed_set import squash
from p2m.generator.text_shape import SYMBOL, shape

MIN_VALUES = 3  # values a shape rule is learned from
MAX_SHAPES_SHARE = 1 / 2  # distinct shapes per value, at most: a few shapes, not one per value
_SHAPE_CHARS = re.compile(r"[^\w\s]|\d")  # what a value with a learnable shape is made of


@dataclass(frozen=True)
class ItemRules:
    """What the items of a keyed output keep (empty or False: no such rule)."""

    separator: str = ""  # between items; "": one item per output
    keys_in_input: bool = False
    value_shapes: tuple[str, ...] = ()  # regular expressions, one of which each value matches

    @property
    def empty(self) -> bool:
        """True when nothing is held."""
        return not self.keys_in_input and not self.value_shapes


def learn(pairs: Sequence[tuple[str, str]], literal: str) -> ItemRules:
    """The item rules every (input, output) of ``pairs`` keeps; ``literal`` splits key from value.

    ``pairs`` are the demonstrations whose output has the keyed form (not the fixed outputs).
    """
    separator = _separator([output for _, output in pairs], literal)
    if separator is None:
        return ItemRules()
    split = []
    for text, output in pairs:
        parts = items(output, literal, separator)
        if parts is None:
            return ItemRules()
        split.append((text, parts))
    if not split:
        return ItemRules()
    keys_in_input = all(squash(key) in squash(text) for text, parts in split for key, _ in parts)
    values = [value for _, parts in split for _, value in parts]
    return ItemRules(separator, keys_in_input, _value_shapes(values))


def items(output: str, literal: str, separator: str) -> list[tuple[str, str]] | None:
    """``output``'s (key, value) items; None when one lacks a key, the literal or a value."""
    pieces = output.split(f" {separator} ") if separator else [output]
    found = []
    for piece in pieces:
        key, sign, value = piece.partition(f" {literal} ")
        if not sign or not key.strip() or not value.strip() or f" {literal} " in value:
            return None
        found.append((key.strip(), value.strip()))
    return found


def violation(rules: ItemRules, input_text: str, output: str, literal: str) -> str | None:
    """The rule (``keys_in_input`` or ``value_shapes``) ``output`` breaks, or None.

    An output whose items cannot be read breaks the first rule held.
    """
    first = "keys_in_input" if rules.keys_in_input else "value_shapes"
    parts = items(output, literal, rules.separator)
    if parts is None:
        return first
    if rules.keys_in_input and any(squash(key) not in squash(input_text) for key, _ in parts):
        return "keys_in_input"
    shapes = [re.compile(pattern) for pattern in rules.value_shapes]
    if shapes and not all(any(s.fullmatch(value) for s in shapes) for _, value in parts):
        return "value_shapes"
    return None


def _value_shapes(values: Sequence[str]) -> tuple[str, ...]:
    """The values' shapes, when every value is digits and symbols and they share a few; or ()."""
    if len(values) < MIN_VALUES or not all(_SHAPE_CHARS.fullmatch(ch) for v in values for ch in v):
        return ()
    shapes = tuple(sorted(dict.fromkeys(shape(v) for v in values)))
    return shapes if len(shapes) <= len(values) * MAX_SHAPES_SHARE else ()


def _separator(outputs: Sequence[str], literal: str) -> str | None:
    """The symbol between items ("" where no output holds several; None: no symbol splits them)."""
    several = [o for o in outputs if o.count(f" {literal} ") > 1]
    if not several:
        return ""
    shared = set.intersection(*(set(SYMBOL.findall(o)) for o in several)) - {literal}
    for symbol in sorted(shared):
        if all(items(o, literal, symbol) is not None for o in outputs):
            return symbol
    return None
