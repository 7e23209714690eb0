"""Range checks for options dataclasses: each names the field by its path in the request.

The one convention: an options dataclass owns every check of its values (``validate`` or
``__post_init__`` calling ``check_ranges``); a service's ``options_from_pb`` only maps proto
fields to it, a zero or unset field to the default and anything else as given, so a negative
value reaches the check instead of hiding behind "zero means default".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2m.common.errors import InvalidInput


@dataclass(frozen=True)
class Within:
    """``value`` must lie within ``low``..``high`` (``low`` itself excluded when ``above``).

    ``unit`` follows each number in the message ("s" for a duration in seconds).
    """

    field: str
    value: float
    low: float
    high: float
    above: bool = False
    unit: str = ""

    @property
    def ok(self) -> bool:
        """True when the value is in range."""
        low_ok = self.value > self.low if self.above else self.value >= self.low
        return low_ok and self.value <= self.high

    @property
    def rule(self) -> str:
        """The range in words."""
        low, high = f"{self.low:g}{self.unit}", f"{self.high:g}{self.unit}"
        if self.above:
            return f"must be more than {low} and at most {high}"
        return f"must be within {low}..{high}"


def check_ranges(checks: Iterable[Within]) -> None:
    """Raise InvalidInput naming the first field out of its range.

    Raises:
        InvalidInput: ``field`` with the rule and the value it got.
    """
    for check in checks:
        if not check.ok:
            got = f"{check.value:g}{check.unit}" if check.unit else repr(check.value)
            raise InvalidInput(check.field, f"{check.rule}, got {got}")
