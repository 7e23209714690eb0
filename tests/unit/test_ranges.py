"""Range checks name the field, the rule and the value."""

from __future__ import annotations

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.ranges import Within, check_ranges


def test_the_first_field_out_of_range_is_named_with_its_rule_and_value():
    with pytest.raises(InvalidInput) as caught:
        check_ranges([Within("options.a", 5, 0, 10), Within("options.b", -1, 0, 10)])
    assert caught.value.field == "options.b"
    assert caught.value.problem == "must be within 0..10, got -1"


def test_bounds_are_inclusive_unless_above_and_units_are_written():
    check_ranges([Within("x", 0, 0, 1), Within("x", 1, 0, 1), Within("x", 0.5, 0, 1, above=True)])
    with pytest.raises(InvalidInput, match=r"more than 0 and at most 1, got 0$"):
        check_ranges([Within("x", 0, 0, 1, above=True)])
    with pytest.raises(InvalidInput, match=r"within 0s\.\.10s, got 12.5s$"):
        check_ranges([Within("x", 12.5, 0, 10, unit="s")])
