"""Runs, their events and their answered choices, persisted in SQLite in the data dir.

A run is stored as its serialized ``Run`` message (the whole state a restart needs), events as
``RunEvent`` messages numbered per run. Writes are committed before they are announced, so a
watcher never sees an event that a crash could lose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from p2m.common.errors import AlreadyExists, InvalidInput
from prompt2model.v1 import gateway_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    request_sha TEXT NOT NULL,
    state INTEGER NOT NULL,
    create_time REAL NOT NULL,
    prompt TEXT NOT NULL,
    run BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_request ON runs(request_id) WHERE request_id != '';
CREATE INDEX IF NOT EXISTS runs_newest ON runs(create_time DESC, run_id DESC);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (run_id, sequence)
);
CREATE TABLE IF NOT EXISTS choices (
    run_id TEXT NOT NULL,
    choice_id TEXT NOT NULL,
    answer TEXT NOT NULL,
    PRIMARY KEY (run_id, choice_id)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

UNFINISHED = (
    gateway_pb2.RUN_STATE_QUEUED,
    gateway_pb2.RUN_STATE_RUNNING,
    gateway_pb2.RUN_STATE_WAITING_FOR_INPUT,
)


class RunStore:
    """SQLite-backed runs; safe to use from several threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._secret = self._page_secret()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def create(
        self, run: gateway_pb2.Run, request_sha: str, prompt: str
    ) -> tuple[gateway_pb2.Run, bool]:
        """Store a new run; with a known ``request_id``, return that run instead.

        Returns:
            The stored run and whether it is new.

        Raises:
            AlreadyExists: The request id was used with another prompt or other options.
        """
        with self._lock:
            if run.request_id:
                row = self._db.execute(
                    "SELECT request_sha, run FROM runs WHERE request_id = ?", (run.request_id,)
                ).fetchone()
                if row is not None:
                    if row[0] != request_sha:
                        raise AlreadyExists(
                            f"request_id {run.request_id!r} was used with another prompt or "
                            "other options"
                        )
                    return _run(row[1]), False
            self._db.execute(
                "INSERT INTO runs (run_id, request_id, request_sha, state, create_time, prompt, "
                "run) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.request_id,
                    request_sha,
                    run.state,
                    run.create_time.ToNanoseconds() / 1e9,
                    prompt,
                    run.SerializeToString(),
                ),
            )
        return run, True

    def save(self, run: gateway_pb2.Run) -> None:
        """Replace the stored run with ``run``."""
        with self._lock:
            self._db.execute(
                "UPDATE runs SET state = ?, run = ? WHERE run_id = ?",
                (run.state, run.SerializeToString(), run.run_id),
            )

    def get(self, run_id: str) -> gateway_pb2.Run | None:
        """The run, or None."""
        with self._lock:
            row = self._db.execute("SELECT run FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run(row[0]) if row else None

    def prompt(self, run_id: str) -> str:
        """The prompt the run was created with ("" for an unknown run)."""
        with self._lock:
            row = self._db.execute("SELECT prompt FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return str(row[0]) if row else ""

    def unfinished(self) -> list[gateway_pb2.Run]:
        """Runs queued, running or waiting, oldest first (to resume after a restart)."""
        marks = ",".join("?" * len(UNFINISHED))
        with self._lock:
            rows = self._db.execute(
                f"SELECT run FROM runs WHERE state IN ({marks}) ORDER BY create_time, run_id",
                UNFINISHED,
            ).fetchall()
        return [_run(row[0]) for row in rows]

    def list_runs(
        self, states: Sequence[int], page_size: int, page_token: str
    ) -> tuple[list[gateway_pb2.Run], str]:
        """A page of runs, newest first, optionally only in ``states``; and the next page's token.

        Raises:
            InvalidInput: ``page_token`` is not one this store gave out for the same filter.
        """
        filter_key = ",".join(str(s) for s in sorted(states))
        where: list[str] = []
        params: list[object] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        if page_token:
            after_time, after_id = self._read_token(page_token, filter_key)
            where.append("(create_time < ? OR (create_time = ? AND run_id < ?))")
            params.extend([after_time, after_time, after_id])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT create_time, run_id, run FROM runs {clause} "
                "ORDER BY create_time DESC, run_id DESC LIMIT ?",
                (*params, page_size + 1),
            ).fetchall()
        runs = [_run(row[2]) for row in rows[:page_size]]
        token = ""
        if len(rows) > page_size:
            last = rows[page_size - 1]
            token = self._make_token(last[0], last[1], filter_key)
        return runs, token

    def last_sequence(self, run_id: str) -> int:
        """The highest stored event sequence of the run (0 without events)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
        return int(row[0])

    def add_event(self, event: gateway_pb2.RunEvent) -> None:
        """Store a numbered event."""
        with self._lock:
            self._db.execute(
                "INSERT INTO events (run_id, sequence, event) VALUES (?, ?, ?)",
                (event.run_id, event.sequence, event.SerializeToString()),
            )

    def events(self, run_id: str, after: int) -> list[gateway_pb2.RunEvent]:
        """The run's stored events with a sequence above ``after``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence",
                (run_id, after),
            ).fetchall()
        return [gateway_pb2.RunEvent.FromString(row[0]) for row in rows]

    def save_answer(self, run_id: str, choice_id: str, values: Iterable[str]) -> None:
        """Record the answer to a choice, so a resumed run does not ask again."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO choices (run_id, choice_id, answer) VALUES (?, ?, ?)",
                (run_id, choice_id, json.dumps(list(values))),
            )

    def answer(self, run_id: str, choice_id: str) -> list[str] | None:
        """The recorded answer to a choice, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT answer FROM choices WHERE run_id = ? AND choice_id = ?",
                (run_id, choice_id),
            ).fetchone()
        return list(json.loads(row[0])) if row else None

    def _page_secret(self) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'page_secret'").fetchone()
            if row:
                return bytes.fromhex(row[0])
            secret = secrets.token_bytes(32)
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('page_secret', ?)", (secret.hex(),)
            )
            return secret

    def _make_token(self, create_time: float, run_id: str, filter_key: str) -> str:
        body = json.dumps([create_time, run_id, filter_key]).encode()
        mac = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def _read_token(self, token: str, filter_key: str) -> tuple[float, str]:
        bad = InvalidInput("page_token", "not a page token this server gave out for this filter")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise bad from None
        body, mac = raw[:-16], raw[-16:]
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        if len(raw) <= 16 or not hmac.compare_digest(mac, expected):
            raise bad
        create_time, run_id, key = json.loads(body)
        if key != filter_key:
            raise bad
        return float(create_time), str(run_id)


def _run(blob: bytes) -> gateway_pb2.Run:
    return gateway_pb2.Run.FromString(blob)
