"""Checkpoint folders a resume may trust: every file the manifest names, at its size."""

from __future__ import annotations

import json
from pathlib import Path

from p2m.trainer.checkpoints import is_complete, latest_complete, step_of, write_manifest


def checkpoint(run_dir: Path, step: int) -> Path:
    folder = run_dir / f"checkpoint-step-{step:07d}"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.safetensors").write_bytes(b"w" * 1000)
    (folder / "optimizer.pt").write_bytes(b"o" * 500)
    (folder / "state.json").write_text(json.dumps({"step": step, "epoch": 1}))
    write_manifest(folder)
    return folder


def test_a_written_checkpoint_is_complete_and_its_step_is_read(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, 20)
    assert is_complete(folder) and step_of(folder) == 20


def test_a_copy_cut_short_or_missing_a_file_is_not_complete(tmp_path: Path) -> None:
    truncated = checkpoint(tmp_path, 20)
    (truncated / "model" / "model.safetensors").write_bytes(b"w" * 10)
    missing = checkpoint(tmp_path, 30)
    (missing / "optimizer.pt").unlink()
    no_manifest = checkpoint(tmp_path, 40)
    (no_manifest / "p2m_manifest.json").unlink()
    assert not any(is_complete(f) for f in (truncated, missing, no_manifest))


def test_the_newest_complete_checkpoint_is_chosen(tmp_path: Path) -> None:
    assert latest_complete(tmp_path) is None
    older = checkpoint(tmp_path, 20)
    newer = checkpoint(tmp_path, 40)
    assert latest_complete(tmp_path) == newer
    (newer / "state.json").write_text("{}")  # rewritten after the manifest: not trusted
    assert latest_complete(tmp_path) == older
