"""The files a training on the cluster is handed over and reports back through.

The trainer writes the job, ``<data_dir>/cache/train/jobs/<key>.json`` (the TrainJob, its
training key and the RayJob's name), on the volume every p2m pod mounts at the data dir; the
RayJob's entrypoint, ``p2m train-job``, reads it and appends one JSON line per progress event to
``<key>.progress.jsonl`` beside it, which the trainer tails. Lines:
``{"type": "event", "event": {TrainEvent}}``, ``{"type": "error", "message": ...}`` and, last,
``{"type": "done", "model": <artifact URI>}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2m.common.artifacts import ArtifactRef
from p2m.common.atomic import atomic_write_text
from p2m.common.errors import InvalidInput
from p2m.common.types import TaskSpec
from p2m.trainer.engine import TrainJob
from p2m.trainer.events import TrainEvent, train_event_to_json
from p2m.trainer.options import TrainOptions

JOB_FILE_VERSION = 1


def jobs_dir(data_dir: Path) -> Path:
    """Where job files lie: ``<data_dir>/cache/train/jobs``."""
    return data_dir / "cache" / "train" / "jobs"


def job_path(data_dir: Path, key: str) -> Path:
    """The job file of the training ``key``."""
    return jobs_dir(data_dir) / f"{key}.json"


def progress_path(job_file: Path) -> Path:
    """The progress file beside a job file."""
    return job_file.with_name(f"{job_file.stem}.progress.jsonl")


@dataclass(frozen=True)
class JobFile:
    """A training handed to the cluster: the job, the key it must be stored under, the RayJob."""

    key: str
    ray_job_name: str
    job: TrainJob

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON view (the file's content)."""
        job = self.job
        return {
            "version": JOB_FILE_VERSION,
            "key": self.key,
            "ray_job_name": self.ray_job_name,
            "job": {
                "datasets": [asdict(d) for d in job.datasets],
                "base_model": job.base_model,
                "task": job.task.to_json(),
                "options": asdict(job.options),
                "base_model_architecture": job.base_model_architecture,
                "base_model_artifact": job.base_model_artifact,
                "run_id": job.run_id,
                "lora_reason": job.lora_reason,
                "shown_demonstrations": job.shown_demonstrations,
            },
        }

    def write(self, path: Path) -> None:
        """Write the file atomically (temporary file, fsync, rename)."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def read(cls, path: Path) -> JobFile:
        """Read a job file.

        Raises:
            InvalidInput: Unreadable, or a field is missing or of the wrong type (named).
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise InvalidInput("job", f"cannot read {path}: {error.strerror}") from None
        except ValueError as error:
            raise InvalidInput("job", f"{path} is not JSON: {error}") from None
        if not isinstance(data, dict) or data.get("version") != JOB_FILE_VERSION:
            raise InvalidInput("job.version", f"expected {JOB_FILE_VERSION}")
        try:
            raw = data["job"]
            job = TrainJob(
                datasets=tuple(ArtifactRef(**d) for d in raw["datasets"]),
                base_model=str(raw["base_model"]),
                task=TaskSpec.from_json(raw["task"], "job.task"),
                options=TrainOptions(**raw["options"]),
                base_model_architecture=str(raw.get("base_model_architecture", "")),
                base_model_artifact=str(raw.get("base_model_artifact", "")),
                run_id=str(raw.get("run_id", "")),
                lora_reason=str(raw.get("lora_reason", "")),
                shown_demonstrations=int(raw.get("shown_demonstrations", 0)),
            )
            return cls(str(data["key"]), str(data["ray_job_name"]), job)
        except KeyError as error:
            raise InvalidInput(f"job.{error.args[0]}", "is missing") from None
        except (TypeError, ValueError) as error:
            raise InvalidInput("job", f"malformed: {error}") from None


class ProgressWriter:
    """Appends progress lines to a progress file (one ``write`` per line, flushed)."""

    def __init__(self, path: Path) -> None:
        """Append to ``path`` (created with its folder when missing)."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def event(self, event: TrainEvent) -> None:
        """Record a training event."""
        self._append({"type": "event", "event": train_event_to_json(event)})

    def error(self, message: str) -> None:
        """Record why the job failed."""
        self._append({"type": "error", "message": message})

    def done(self, model: ArtifactRef) -> None:
        """Record the stored model."""
        self._append({"type": "done", "model": model.uri})

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, allow_nan=True) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


class ProgressTail:
    """Reads the lines appended to a progress file since the last read (whole lines only)."""

    def __init__(self, path: Path) -> None:
        """Follow ``path`` from its start (it need not exist yet)."""
        self.path = path
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        """The records of the complete lines written since the last call."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self._offset:  # truncated: a new attempt started the file again
            self._offset = 0
        if size == self._offset:
            return []
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read(size - self._offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        records = []
        for line in chunk[: end + 1].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn line from a writer that died mid-write
            if isinstance(record, dict):
                records.append(record)
        return records
