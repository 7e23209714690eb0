"""The model a worker trains, seen through Ray Train's DDP wrapper."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def unwrapped(model: Any) -> Any:
    """The model inside a DDP wrapper (the model itself when it has none)."""
    return getattr(model, "module", model)


@contextmanager
def evaluating(model: Any) -> Iterator[Any]:
    """The unwrapped model in evaluation mode, back in training mode afterwards."""
    inner = unwrapped(model)
    inner.eval()
    try:
        yield inner
    finally:
        inner.train()
