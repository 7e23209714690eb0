"""Writing a text file so that readers see the old content or the new, never a part."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(target: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Write ``text`` to ``target`` through a synced temporary file and a rename.

    The temporary file lies in ``tmp_dir`` (same file system as ``target``), by default beside
    ``target`` as a hidden file; it is removed when the write fails (a full disk, say).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = tmp_dir or target.parent
    prefix = f".{target.name}." if tmp_dir is None else None
    with tempfile.NamedTemporaryFile(
        "w", dir=folder, prefix=prefix, delete=False, encoding="utf-8"
    ) as tmp:
        try:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, target)
