"""The disk filling up mid-write: a clear error, nothing half-written kept, nothing accepted lost.

A real 1 MiB tmpfs stands in for a full disk (mounting needs root; skipped otherwise).
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from p2m.common.artifacts import ArtifactStore
from p2m.common.grpc_errors import status_for
from p2m.common.types import Example
from p2m.generator.journal import Journal


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_no_half_artifact_and_answers_resource_exhausted(
    small_disk: Path,
) -> None:
    store = ArtifactStore(small_disk / "store")
    kept = store.put_bytes(b"a" * 500_000, "dataset")
    with pytest.raises(OSError) as caught:
        store.put_bytes(b"b" * 700_000, "dataset")
    assert caught.value.errno == errno.ENOSPC
    assert list((store.root / "tmp").iterdir()) == []  # the partial copy is gone
    assert store.path(kept.uri).read_bytes() == b"a" * 500_000
    folder = small_disk / "big"
    folder.mkdir()
    with pytest.raises(OSError):
        (folder / "x").write_bytes(b"c" * 600_000)
    code, message = status_for(caught.value)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "no space" in message
    (folder / "x").unlink()
    assert store.put_bytes(b"small", "report").size_bytes == 5  # works again once space is back


def test_the_journal_keeps_every_accepted_example_when_the_disk_fills(small_disk: Path) -> None:
    journal = Journal(small_disk / "gen")
    accepted = [Example(f"input {i} " + "x" * 200, f"output {i}") for i in range(40)]
    written = 0
    with pytest.raises(OSError):
        for number, example in enumerate(accepted):
            journal.accept(f"g{number}", example, 1.0)
            written += 1
            (small_disk / f"filler{number}").write_bytes(b"f" * 40_000)  # another writer
    journal.close()
    state = Journal(small_disk / "gen").replay()
    assert [e for _, e, _ in state.accepted] == accepted[: len(state.accepted)]
    assert len(state.accepted) >= written  # every append that returned is there
