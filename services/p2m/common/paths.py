"""Which local paths a request may name: only those inside the folders a service may read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from p2m.common.errors import InvalidInput


def is_inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (links resolved) lies in one of ``roots``."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def readable_path(raw: str, roots: Sequence[Path] | None, field: str) -> Path:
    """``raw`` as an absolute path a request may read.

    Args:
        raw: The path the request names.
        roots: The folders it may lie in; None lets any path through (a person's own CLI).
        field: The request field, named in the error.

    Raises:
        InvalidInput: The path is relative, or lies outside every root.
    """
    path = Path(raw)
    if "\x00" in raw or not path.is_absolute():
        raise InvalidInput(field, f"not an absolute path: {raw[:80]!r}")
    if roots is not None and not is_inside(path, roots):
        raise InvalidInput(
            field,
            f"{raw[:80]!r} is outside the folders this service may read (the data dir, the "
            "datasets and catalog folders, and P2M_PATH_ROOTS)",
        )
    return path
