"""The append-only record of a generation, so an interrupted one resumes where it stopped.

Two JSONL files in the generation's work folder, each line flushed and fsynced as written:
``examples.jsonl`` holds every accepted example ``{id, input, output, agreement}`` and
``journal.jsonl`` every request before it is sent (``req``), how it ended (``res``, ``bad``,
``fail``, ``unsent``, with attempts and tokens; ``bad`` also with why the answer ended and an
excerpt of it), what it gave (``gen``, ``sc``, ``hints``),
every drop (``drop``) and round (``round``), and each demonstration moved last for copies
(``move``). Request ids are never reused, so no request is sent
twice across restarts, and the budget counts what earlier attempts spent.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from p2m.common.types import Example

_GEN_ID = re.compile(r"^g(\d+)$")
_SC_ID = re.compile(r"^s(\d+)\.(\d+)$")
_JUDGE_ID = re.compile(r"^j(\d+)\.(\d+)$")


@dataclass
class Candidate:
    """A generated example whose output is still being voted on."""

    gen_id: str
    input: str
    output: str
    samples: list[str] = field(default_factory=list)
    next_sample: int = 0
    judge_score: int | None = None
    next_judge: int = 0


@dataclass
class JournalState:
    """What a journal says was done before."""

    accepted: list[tuple[str, Example, float]] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    pending: dict[str, Candidate] = field(default_factory=dict)
    next_gen: int = 0
    requests: int = 0
    tokens: int = 0
    rounds: int = 0
    push: float = 0.0
    hints: list[str] | None = None
    hint_requests: int = 0
    moved: list[int] = field(default_factory=list)  # demonstrations moved last, in order


class Journal:
    """Appends events durably; ``replay`` rebuilds the state after a restart."""

    def __init__(self, folder: Path) -> None:
        """Use (and create) ``folder`` for the two files."""
        folder.mkdir(parents=True, exist_ok=True)
        self.examples_path = folder / "examples.jsonl"
        self.journal_path = folder / "journal.jsonl"
        self._examples: IO[str] | None = None
        self._journal: IO[str] | None = None

    def replay(self) -> JournalState:
        """Read both files (a torn last line is ignored) into a JournalState."""
        state = JournalState()
        decided: set[str] = set()
        for record in _read(self.examples_path):
            example = Example(record["input"], record["output"])
            state.accepted.append((record["id"], example, float(record.get("agreement", 1.0))))
            decided.add(record["id"])
        unanswered: set[str] = set()
        for record in _read(self.journal_path):
            kind, rid = record.get("e"), str(record.get("id", ""))
            if kind == "req":
                unanswered.add(rid)
                if rid.startswith("h"):
                    state.hint_requests += 1
                elif match := _GEN_ID.match(rid):
                    state.next_gen = max(state.next_gen, int(match.group(1)) + 1)
                elif (match := _SC_ID.match(rid)) and f"g{match.group(1)}" in state.pending:
                    candidate = state.pending[f"g{match.group(1)}"]
                    candidate.next_sample = max(candidate.next_sample, int(match.group(2)) + 1)
                elif (match := _JUDGE_ID.match(rid)) and f"g{match.group(1)}" in state.pending:
                    candidate = state.pending[f"g{match.group(1)}"]
                    candidate.next_judge = max(candidate.next_judge, int(match.group(2)) + 1)
            elif kind in ("res", "bad", "fail", "unsent"):
                unanswered.discard(rid)
                state.requests += int(record.get("attempts", 0))
                state.tokens += int(record.get("tokens", 0))
            elif kind == "gen" and rid not in decided:
                state.pending[rid] = Candidate(rid, record["input"], record["output"])
            elif kind == "sc":
                gen_id = "g" + rid[1:].split(".")[0]
                if gen_id in state.pending:
                    state.pending[gen_id].samples.append(record["output"])
            elif kind == "drop":
                state.dropped[record["reason"]] += 1
                decided.add(rid)
            elif kind == "round":
                state.rounds += 1
                state.push = float(record.get("push", 0.0))
            elif kind == "judge" and (match := _JUDGE_ID.match(rid)):
                if (gen_id := f"g{match.group(1)}") in state.pending:
                    state.pending[gen_id].judge_score = int(record["score"])
            elif kind == "move" and rid[1:].isdigit():
                state.moved.append(int(rid[1:]))
            elif kind == "hints":
                state.hints = [str(topic) for topic in record.get("topics", [])]
        # Sent but never answered (the process died meanwhile): assume each cost one request.
        state.requests += len(unanswered)
        for rid in decided:
            state.pending.pop(rid, None)
        return state

    def record(self, event: str, rid: str, **fields: Any) -> None:
        """Append one event line to the journal."""
        self._journal = self._journal or _open_append(self.journal_path)
        _append(self._journal, {"e": event, "id": rid, **fields})

    def accept(self, rid: str, example: Example, agreement: float) -> None:
        """Append one accepted example."""
        self._examples = self._examples or _open_append(self.examples_path)
        line = {"id": rid, "input": example.input, "output": example.output, "agreement": agreement}
        _append(self._examples, line)

    def close(self) -> None:
        """Close the files."""
        for handle in (self._examples, self._journal):
            if handle is not None:
                handle.close()
        self._examples = self._journal = None


def _open_append(path: Path) -> IO[str]:
    """Open for appending, first ending a line torn by a kill so the next record stands alone."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
        if torn:
            with path.open("a", encoding="utf-8") as fh:
                fh.write("\n")
    return path.open("a", encoding="utf-8")


def _append(handle: IO[str], record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write
    return records
