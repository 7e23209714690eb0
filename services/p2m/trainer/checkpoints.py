"""Checkpoint folders that can be trusted after a crash: a manifest of sizes, checked on resume.

Ray Train records a reported checkpoint in its run snapshot a moment after the worker's
``ray.train.report`` returns. A process killed in that moment leaves the checkpoint on storage but
unknown to Ray, which would start the run again from step 0. The engine therefore also looks for
the newest complete checkpoint folder of the run itself: one whose every file the manifest names
is there with its size (a copy cut short fails the check).
"""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST_FILE = "p2m_manifest.json"
STATE_FILE = "state.json"
FOLDER_GLOB = "checkpoint-step-*"


def folder_name(step: int) -> str:
    """The name of the checkpoint folder of ``step`` (names sort by step)."""
    return f"checkpoint-step-{step:07d}"


def write_manifest(folder: Path) -> None:
    """Record the size of every file under ``folder`` (call it last, before reporting)."""
    sizes = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(sizes), encoding="utf-8")


def is_complete(folder: Path) -> bool:
    """Every file the manifest names is there with its size."""
    try:
        sizes = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return STATE_FILE in sizes and all(
            (folder / name).stat().st_size == size for name, size in sizes.items()
        )
    except (OSError, ValueError, AttributeError):
        return False


def latest_complete(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run (its step is in the folder's name)."""
    for folder in sorted(run_dir.glob(FOLDER_GLOB), reverse=True):
        if is_complete(folder):
            return folder
    return None


def step_of(folder: Path) -> int:
    """The step a checkpoint folder holds."""
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    return int(state.get("step", 0))
