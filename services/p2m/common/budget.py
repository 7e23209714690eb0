"""A request and token budget that concurrent LLM calls share and never exceed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from p2m.common.errors import BudgetExhausted

# Per-message overhead of chat templates (role markers, separators), in tokens.
_MESSAGE_OVERHEAD_TOKENS = 8


def prompt_token_bound(messages: Sequence[Mapping[str, str]]) -> int:
    """An upper bound of the prompt's tokens: byte-level tokenizers never exceed one per byte."""
    return sum(
        len(m.get("content", "").encode("utf-8")) + _MESSAGE_OVERHEAD_TOKENS for m in messages
    )


@dataclass
class Reservation:
    """Tokens held for one request until its real usage is known."""

    tokens: int
    settled: bool = False


class Budget:
    """Counts requests and tokens; refuses a request that could overrun either limit.

    A request reserves its worst case (prompt bound + ``max_tokens``) before it is sent and
    settles to what the endpoint reports afterwards, so concurrent requests cannot overrun.
    A limit of 0 means unlimited.
    """

    def __init__(self, max_requests: int = 0, max_tokens: int = 0) -> None:
        """Allow at most ``max_requests`` requests and ``max_tokens`` tokens (0: no limit)."""
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.requests = 0
        self.tokens = 0
        self._reserved = 0

    def reserve(self, prompt_tokens_bound: int, max_completion_tokens: int) -> Reservation:
        """Count one request and hold its worst-case tokens.

        Raises:
            BudgetExhausted: The request could exceed the request or token limit.
        """
        if self.max_requests and self.requests >= self.max_requests:
            raise BudgetExhausted(f"request budget of {self.max_requests} spent")
        worst = prompt_tokens_bound + max_completion_tokens
        if self.max_tokens and self.tokens + self._reserved + worst > self.max_tokens:
            raise BudgetExhausted(
                f"token budget of {self.max_tokens} cannot cover another request "
                f"(used {self.tokens}, held {self._reserved}, this one up to {worst})"
            )
        self.requests += 1
        self._reserved += worst
        return Reservation(worst)

    def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Release a reservation and count the tokens the request really used."""
        if reservation.settled:
            return
        reservation.settled = True
        self._reserved -= reservation.tokens
        self.tokens += min(used_tokens, reservation.tokens)
