"""The best weights so far, kept on disk, not in memory.

A copy of a student's weights in memory is as large as the model (2.5 GB for Qwen2.5-Coder-0.5B
in float32), beside the model, its gradients and AdamW's two moments: the copy was what took a
Qwen training on SQuAD past the machine's memory. Instead the worker saves the best weights once,
when a validation finds them, to a folder of its own, and each checkpoint whose own weights are
not the best links those files in (hard links: no copy where both lie on one filesystem).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from p2m.trainer.wrapped import unwrapped


class BestWeights:
    """A folder holding the best weights so far (``save_pretrained``'s files), or none yet."""

    def __init__(self, root: Path) -> None:
        """Keep them under ``root``; anything an interrupted run left there is removed."""
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        self.root = root
        self.folder: Path | None = None

    def save(self, model: Any, step: int) -> None:
        """The weights of ``model`` (the LoRA adapters where it has them) are now the best."""
        folder = self._fresh(step)
        unwrapped(model).save_pretrained(folder)
        self._replace(folder)

    def adopt(self, source: Path, step: int) -> None:
        """The weights saved in ``source`` (a checkpoint's) are the best: resuming."""
        folder = self._fresh(step)
        link_tree(source, folder)
        self._replace(folder)

    def link_into(self, target: Path) -> None:
        """Put the best weights' files in ``target`` (a checkpoint's ``best_model``)."""
        if self.folder is None:
            raise RuntimeError("no best weights saved yet")
        link_tree(self.folder, target)

    def discard(self) -> None:
        """Remove the folder: the checkpoints hold what is kept."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.folder = None

    def _fresh(self, step: int) -> Path:
        folder = self.root / f"step-{step:07d}"
        shutil.rmtree(folder, ignore_errors=True)
        return folder

    def _replace(self, folder: Path) -> None:
        old, self.folder = self.folder, folder
        if old is not None and old != folder:
            shutil.rmtree(old, ignore_errors=True)


def link_tree(source: Path, target: Path) -> None:
    """Hard-link every file under ``source`` into ``target``; copy where links cannot be made."""
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:  # another filesystem, or one without hard links
            shutil.copy2(path, destination)
