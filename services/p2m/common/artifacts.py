"""Content-addressed artifact store: files and folders written once under the data dir.

Layout: ``<root>/objects/<sha[:2]>/<sha>`` (the file or folder) beside ``<sha>.json`` (its
metadata), and ``<root>/keys/<key>.json`` mapping a stage's input hash to the artifact it made,
so a stage whose inputs were seen before is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from p2m.common.atomic import atomic_write_text
from p2m.common.errors import InvalidInput, NotFound

URI_PREFIX = "p2m-artifact://sha256/"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArtifactRef:
    """A stored file or folder, named by the sha256 of its content."""

    uri: str
    sha256: str
    size_bytes: int
    kind: str


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path) -> tuple[str, int]:
    """Hash a folder as the sorted manifest of (relative path, file sha256); return (hex, size).

    Raises:
        InvalidInput: The folder holds a symbolic link or something that is not a plain file.
    """
    lines = []
    total = 0
    for path in sorted(_walk(root)):
        rel = path.relative_to(root).as_posix()
        lines.append(f"{rel}\0{sha256_file(path)}\n")
        total += path.stat().st_size
    return hashlib.sha256("".join(lines).encode()).hexdigest(), total


def _walk(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_symlink():
            raise InvalidInput("path", f"symbolic links are not stored: {path}")
        if path.is_file():
            yield path
        elif not path.is_dir():
            raise InvalidInput("path", f"not a plain file: {path}")


class ArtifactStore:
    """Writes artifacts atomically (temp + rename) and never changes one once written."""

    def __init__(self, root: Path) -> None:
        """Use ``root`` (created if missing) as the store's folder."""
        self.root = root
        (root / "objects").mkdir(parents=True, exist_ok=True)
        (root / "keys").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def put_bytes(self, data: bytes, kind: str) -> ArtifactRef:
        """Store ``data`` as a file artifact of ``kind``."""
        _check_kind(kind)
        sha = hashlib.sha256(data).hexdigest()
        if not self.exists(sha):
            work = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
            with _removed_on_error(work):
                with (work / "file").open("wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                self._commit(work / "file", sha, kind, len(data))
        return self.ref(sha)

    def put_dir(self, path: Path, kind: str) -> ArtifactRef:
        """Copy a folder (plain files only) into the store."""
        _check_kind(kind)
        if not path.is_dir():
            raise InvalidInput("path", f"not a folder: {path}")
        sha, size = sha256_tree(path)
        if not self.exists(sha):
            work = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
            with _removed_on_error(work):
                shutil.copytree(path, work / "dir", symlinks=True)
                self._commit(work / "dir", sha, kind, size)
        return self.ref(sha)

    def exists(self, sha256: str) -> bool:
        """True when an artifact with this hash is stored."""
        return self._meta_path(_check_sha(sha256)).exists()

    def ref(self, sha256_or_uri: str) -> ArtifactRef:
        """The stored artifact's reference.

        Raises:
            InvalidInput: Not a sha256 or an artifact URI.
            NotFound: No such artifact.
        """
        sha = parse_uri(sha256_or_uri) if sha256_or_uri.startswith("p2m") else sha256_or_uri
        meta_path = self._meta_path(_check_sha(sha))
        if not meta_path.exists():
            raise NotFound(f"artifact {sha} is not in the store")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return ArtifactRef(URI_PREFIX + sha, sha, int(meta["size_bytes"]), str(meta["kind"]))

    def path(self, sha256_or_uri: str) -> Path:
        """Where the artifact's file or folder lies (read it, never write it)."""
        ref = self.ref(sha256_or_uri)
        return self._object_path(ref.sha256)

    def remember(self, key: str, ref: ArtifactRef) -> None:
        """Record that the inputs hashing to ``key`` produced ``ref``."""
        _check_sha(key)
        target = self.root / "keys" / f"{key}.json"
        atomic_write_text(target, json.dumps(asdict(ref)), self.root / "tmp")

    def recall(self, key: str) -> ArtifactRef | None:
        """The artifact that inputs hashing to ``key`` produced before, if it is still stored."""
        target = self.root / "keys" / f"{_check_sha(key)}.json"
        if not target.exists():
            return None
        ref = ArtifactRef(**json.loads(target.read_text(encoding="utf-8")))
        return ref if self.exists(ref.sha256) else None

    def _commit(self, tmp: Path, sha: str, kind: str, size: int) -> None:
        final = self._object_path(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
        meta = {"kind": kind, "size_bytes": size, "is_dir": final.is_dir()}
        atomic_write_text(self._meta_path(sha), json.dumps(meta), self.root / "tmp")

    def _object_path(self, sha: str) -> Path:
        return self.root / "objects" / sha[:2] / sha

    def _meta_path(self, sha: str) -> Path:
        return self.root / "objects" / sha[:2] / f"{sha}.json"


@contextlib.contextmanager
def _removed_on_error(work: Path) -> Iterator[None]:
    """Remove a half-written temp folder when writing fails (e.g. the disk is full)."""
    try:
        yield
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)  # emptied by the commit's rename


def parse_uri(uri: str) -> str:
    """Return the sha256 an artifact URI names.

    Raises:
        InvalidInput: The URI is not ``p2m-artifact://sha256/<64 hex>``.
    """
    if not uri.startswith(URI_PREFIX):
        raise InvalidInput("uri", f"not an artifact URI: {uri[:100]!r}")
    return _check_sha(uri[len(URI_PREFIX) :])


def _check_sha(sha: str) -> str:
    if not _SHA256.match(sha):
        raise InvalidInput("sha256", f"not a lower-case hex sha256: {sha[:100]!r}")
    return sha


def _check_kind(kind: str) -> None:
    if not _KIND.match(kind):
        raise InvalidInput("kind", f"must match {_KIND.pattern}, got {kind[:40]!r}")
