from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from p2m.common.artifacts import URI_PREFIX, ArtifactStore, parse_uri
from p2m.common.errors import InvalidInput, NotFound


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def test_bytes_are_named_by_their_hash_and_stored_once(store: ArtifactStore):
    ref = store.put_bytes(b"hello", "report")
    assert ref.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert ref.uri == URI_PREFIX + ref.sha256
    assert ref.size_bytes == 5
    assert store.put_bytes(b"hello", "report") == ref
    assert store.path(ref.uri).read_bytes() == b"hello"
    assert list((store.root / "tmp").iterdir()) == []


def test_folder_hash_depends_on_content_not_on_time_or_order(tmp_path: Path, store: ArtifactStore):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, order in ((first, ["x.txt", "sub/y.txt"]), (second, ["sub/y.txt", "x.txt"])):
        for name in order:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(name)
    os.utime(second / "x.txt", (1, 1))
    ref_a, ref_b = store.put_dir(first, "dataset"), store.put_dir(second, "dataset")
    assert ref_a == ref_b
    (second / "x.txt").write_text("changed")
    assert store.put_dir(second, "dataset").sha256 != ref_a.sha256
    assert (store.path(ref_a.sha256) / "sub" / "y.txt").read_text() == "sub/y.txt"


def test_symlinks_are_refused(tmp_path: Path, store: ArtifactStore):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "link").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput):
        store.put_dir(folder, "dataset")


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "p2m-artifact://sha256/../../x", "ABC", "0" * 63, "p2m-artifact://md5/x"],
)
def test_malformed_names_never_reach_the_filesystem(store: ArtifactStore, bad: str):
    with pytest.raises(InvalidInput):
        store.path(bad)


def test_absent_artifact_is_not_found(store: ArtifactStore):
    with pytest.raises(NotFound):
        store.path("0" * 64)


def test_bad_kind_is_rejected(store: ArtifactStore):
    with pytest.raises(InvalidInput):
        store.put_bytes(b"x", "../evil")


def test_remember_and_recall_by_input_key(store: ArtifactStore):
    key = hashlib.sha256(b"inputs").hexdigest()
    assert store.recall(key) is None
    ref = store.put_bytes(b"result", "dataset")
    store.remember(key, ref)
    assert store.recall(key) == ref
    assert ArtifactStore(store.root).recall(key) == ref


def test_parse_uri_round_trip():
    sha = "a" * 64
    assert parse_uri(URI_PREFIX + sha) == sha
