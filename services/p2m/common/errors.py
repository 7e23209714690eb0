"""Typed domain errors. One interceptor maps them to gRPC status codes (see grpc_errors)."""

from __future__ import annotations


class P2MError(Exception):
    """Base of every error p2m raises on purpose."""


class InvalidInput(P2MError):
    """A request or file is malformed; ``field`` names the offending part."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(P2MError):
    """A named thing (artifact, run, model) does not exist."""


class AlreadyExists(P2MError):
    """A thing that must be unique exists already."""


class FailedPrecondition(P2MError):
    """The system is not in a state where the request can run (e.g. a stage not built)."""


class Unavailable(P2MError):
    """A dependency (LLM endpoint, another service) cannot be reached."""


class BudgetExhausted(P2MError):
    """A request or token budget would be exceeded."""


class Cancelled(P2MError):
    """The work was stopped on request before it finished; what it had done is kept."""


class Aborted(P2MError):
    """The work failed part-way (e.g. a training worker died); a retry resumes from what it had."""


class LLMError(Unavailable):
    """The LLM endpoint failed after every retry; ``attempts`` says how often it was tried."""

    def __init__(self, message: str, attempts: int, last_status: int | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_status = last_status


class LLMOutputError(P2MError):
    """The LLM answered, but not in the form that was asked for (e.g. invalid JSON).

    ``result`` holds the answer (a ``ChatResult``) when one was received, for accounting.
    """

    result: object = None
