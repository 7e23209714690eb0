"""Train a student with Ray Train: resolve inputs, run TorchTrainer, stream progress, store it.

The driver side of training. ``train`` blocks (run it in a thread); progress arrives through
``on_event`` from the rank-0 worker via the TrainControl actor, and setting ``cancel`` stops the
workers at their next step. A run is named by its training key, so a retry after a crash or a
cancellation finds Ray Train's snapshot of the same run and resumes from its last checkpoint.

With a ``TrainRunner`` (the ``rayjob`` backend: ``p2m.trainer.rayjob.RayJobRunner``) the run
happens elsewhere: the runner hands the job to the cluster, streams its progress, and returns
the model the cluster stored under the training key. The job there is this same code, driven by
``p2m train-job`` on the RayJob's Ray cluster.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.errors import Aborted, Cancelled, FailedPrecondition, InvalidInput
from p2m.common.model_store import ModelStore
from p2m.common.names import check_run_id
from p2m.common.settings import Settings
from p2m.common.types import TaskSpec
from p2m.trainer.base_model import BaseModel, resolve_base_model
from p2m.trainer.checkpoints import FOLDER_GLOB, STATE_FILE, latest_complete
from p2m.trainer.data import load_training_data
from p2m.trainer.events import (
    TrainEvent,
    WorkerCheckpointed,
    WorkerEvaluated,
    WorkerEvent,
    WorkerStarted,
    WorkerStepped,
    WorkerStopped,
)
from p2m.trainer.finalize import TRAINING_FILE, build_model_folder
from p2m.trainer.options import TrainOptions, training_key
from p2m.trainer.ray_runtime import cluster_cpus, cluster_gpus, ensure_ray, start_control
from p2m.trainer.worker import train_worker

log = logging.getLogger(__name__)

_POLL_S = 0.5


@dataclass(frozen=True)
class TrainJob:
    """What to train: datasets (artifact refs), base model, task and options."""

    datasets: tuple[ArtifactRef, ...]
    base_model: str
    task: TaskSpec
    options: TrainOptions = field(default_factory=TrainOptions)
    base_model_architecture: str = ""
    base_model_artifact: str = ""
    run_id: str = ""


@dataclass(frozen=True)
class TrainReport:
    """What a training did (see TrainReport in trainer.proto)."""

    steps: int
    epochs: float
    final_loss: float
    final_eval_loss: float | None
    train_seconds: float
    samples_per_second: float
    resumed_from_checkpoint: bool
    resumed_from_step: int
    backend: str
    train_examples: int
    validation_examples: int
    num_workers: int
    device: str
    ray_job_name: str = ""
    cached: bool = False
    precision: str = "fp32"
    best_step: int = 0
    best_eval_loss: float | None = None
    stopped_early: bool = False
    evaluations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class TrainOutcome:
    """The model artifact and the report."""

    model: ArtifactRef
    report: TrainReport


class TrainRunner(Protocol):
    """Runs a training somewhere else (e.g. a KubeRay RayJob) instead of in this process."""

    def run(
        self,
        key: str,
        job: TrainJob,
        emit: Callable[[TrainEvent], None],
        cancel: threading.Event,
    ) -> TrainOutcome:
        """Train ``job``, streaming progress to ``emit``; return the model stored under ``key``.

        Raises:
            Cancelled: ``cancel`` was set.
            Aborted: The training failed.
            Unavailable: The place it runs cannot be reached.
        """
        ...


class ModelTrainer:
    """Fine-tunes base models into students, on a local Ray (or the one ``RAY_ADDRESS`` names)."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        runner: TrainRunner | None = None,
        ray_job_name: str = "",
        path_roots: Sequence[Path] | None = None,
    ) -> ModelTrainer:
        """The trainer ``settings`` describe: their data dir's stores, their hub setting."""
        return cls(
            ArtifactStore(settings.artifacts_dir),
            ModelStore(settings.models_dir),
            settings.cache_dir("train"),
            hub_offline=settings.offline,
            runner=runner,
            ray_job_name=ray_job_name,
            path_roots=path_roots,
        )

    def __init__(
        self,
        store: ArtifactStore,
        models: ModelStore,
        work_root: Path,
        hub_offline: bool = True,
        *,
        runner: TrainRunner | None = None,
        ray_job_name: str = "",
        path_roots: Sequence[Path] | None = None,
    ) -> None:
        """Store models in ``store``; keep Ray runs (checkpoints) under ``work_root``.

        Args:
            store: The artifact store (datasets in, models out).
            models: The local model store base models are found in.
            work_root: Ray Train's storage path (checkpoints of unfinished runs).
            hub_offline: Never fetch a base model from the hub.
            runner: Run trainings there instead of on this process's Ray (several at once).
            ray_job_name: Set when this process is the entrypoint of that KubeRay RayJob; the
                stored report then says ``backend="rayjob"`` and names it.
            path_roots: The folders a base model folder may lie in; None: anywhere.
        """
        self._store = store
        self._models = models
        self._work_root = work_root.absolute()  # Ray Train takes no relative storage path
        self._hub_offline = hub_offline
        self._runner = runner
        self._ray_job_name = ray_job_name
        self._path_roots = path_roots
        self._one_at_a_time = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def train(
        self,
        job: TrainJob,
        on_event: Callable[[TrainEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TrainOutcome:
        """Train (or answer from the store); see the module docstring.

        Raises:
            InvalidInput: A bad request (the field named).
            NotFound: A dataset or the base model cannot be found.
            FailedPrecondition: GPUs were asked for and none can be had.
            Cancelled: ``cancel`` was set; the last checkpoint is kept for a retry.
            Aborted: A worker failed; a retry resumes from the last checkpoint.
        """
        options = job.options
        options.validate()
        check_run_id(job.run_id)
        if not options.omit_instruction and not job.task.instruction.strip():
            raise InvalidInput(
                "task.instruction", "is empty (set omit_instruction to train on bare inputs)"
            )
        base = resolve_base_model(
            job.base_model,
            job.base_model_architecture,
            job.base_model_artifact,
            self._store,
            self._models,
            self._hub_offline,
            self._path_roots,
        )
        datasets = tuple(self._dataset(i, ref) for i, ref in enumerate(job.datasets))
        data = load_training_data(self._store, datasets, options.seed)
        key = training_key(base.sha256, [d.sha256 for d in datasets], job.task.instruction, options)
        with self._exclusive(key):
            cached = self._store.recall(key)
            if cached is not None:
                report = stored_report(self._store, cached)
                return TrainOutcome(cached, replace(report, cached=True))
            emit = on_event or (lambda event: None)
            if self._runner is not None:
                return self._runner.run(key, job, emit, cancel or threading.Event())
            run = _RayRun(key, self._work_root, base, job, data, emit, cancel or threading.Event())
            checkpoint_dir, report = run.execute()
            if self._ray_job_name:
                report = replace(report, backend="rayjob", ray_job_name=self._ray_job_name)
            return self._store_model(key, run, checkpoint_dir, report, base, job, datasets)

    def _exclusive(self, key: str) -> threading.Lock:
        """The lock a training holds while it runs.

        Locally one Ray Train run at a time (a cancelled one finishes first); with a runner one
        run per training key, the cluster running the others beside it.
        """
        if self._runner is None:
            return self._one_at_a_time
        with self._one_at_a_time:
            return self._key_locks.setdefault(key, threading.Lock())

    def _dataset(self, index: int, ref: ArtifactRef) -> ArtifactRef:
        if not ref.uri:
            raise InvalidInput(f"datasets[{index}].uri", "is empty")
        try:
            return self._store.ref(ref.uri)
        except InvalidInput as error:
            raise InvalidInput(f"datasets[{index}].uri", error.problem) from None

    def _store_model(
        self,
        key: str,
        run: _RayRun,
        checkpoint_dir: Path,
        report: TrainReport,
        base: BaseModel,
        job: TrainJob,
        datasets: tuple[ArtifactRef, ...],
    ) -> TrainOutcome:
        options = job.options
        training = {
            "base_model": base.name,
            "base_model_sha256": base.sha256,
            "datasets": [d.uri for d in datasets],
            "instruction": job.task.instruction,
            "options": asdict(options),
            "report": asdict(report),
        }
        with tempfile.TemporaryDirectory(dir=self._store.root / "tmp") as tmp:
            build_model_folder(checkpoint_dir, Path(tmp), base, job.task, options, training)
            model = self._store.put_dir(Path(tmp), "model")
        self._store.remember(key, model)
        shutil.rmtree(run.run_dir, ignore_errors=True)
        log.info("training stored", extra={"model": model.uri, "steps": report.steps})
        return TrainOutcome(model, report)


def stored_report(store: ArtifactStore, model: ArtifactRef) -> TrainReport:
    """The report a stored model was trained with (from its ``p2m_training.json``).

    Raises:
        FailedPrecondition: The model folder has no readable training report.
    """
    import json

    path = store.path(model.uri) / TRAINING_FILE
    try:
        data = json.loads(path.read_text("utf-8"))["report"]
        return TrainReport(**{**data, "evaluations": tuple(data.get("evaluations", ()))})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FailedPrecondition(f"{path} holds no training report: {error}") from None


class _RayRun:
    """One TorchTrainer.fit, its progress pump, and the checkpoint it leaves."""

    def __init__(
        self,
        key: str,
        work_root: Path,
        base: BaseModel,
        job: TrainJob,
        data: Any,
        emit: Callable[[TrainEvent], None],
        cancel: threading.Event,
    ) -> None:
        self.name = f"train-{key[:24]}"
        self.work_root = work_root
        self.run_dir = work_root / self.name
        self.base = base
        self.job = job
        self.data = data
        self.emit = emit
        self.cancel = cancel
        self.resumed_from_step = 0
        self.total_steps = 0
        self.last_step: WorkerStepped | None = None
        self.stopped_at: int | None = None
        self.precision = "fp32"

    def execute(self) -> tuple[Path, TrainReport]:
        """Run to the end; return the last checkpoint's folder and the report."""
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        options = self.job.options
        ensure_ray()
        workers = options.num_workers
        if options.use_gpu and cluster_gpus() < workers:
            raise FailedPrecondition(
                f"{workers} GPU worker(s) asked for, Ray has {cluster_gpus():g} GPU(s)"
            )
        cpus_per_worker = _cpus_per_worker(cluster_cpus(), workers)
        resources = {"CPU": cpus_per_worker, **({"GPU": 1.0} if options.use_gpu else {})}
        control = start_control()
        config = {
            "options": asdict(options),
            "base_path": str(self.base.path),
            "architecture": self.base.architecture,
            "instruction": self.job.task.instruction,
            "train": [[e.input, e.output] for e in self.data.train],
            "validation": [[e.input, e.output] for e in self.data.validation],
            "control": control,
            "threads": max(1, math.floor(cpus_per_worker)),
            "resume_from": str(found) if (found := latest_complete(self.run_dir)) else None,
        }
        self.work_root.mkdir(parents=True, exist_ok=True)
        trainer = TorchTrainer(
            train_worker,
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=options.use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=self.name,
                storage_path=str(self.work_root),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                failure_config=FailureConfig(max_failures=0),
            ),
        )
        outcome: dict[str, Any] = {}
        started = time.monotonic()

        def fit() -> None:
            try:
                outcome["result"] = trainer.fit()
            except BaseException as error:  # re-raised in the caller's thread
                outcome["error"] = error

        thread = threading.Thread(target=fit, name=f"ray-fit-{self.name}", daemon=True)
        thread.start()
        stop_sent = False
        while thread.is_alive():
            thread.join(_POLL_S)
            self._pump(control)
            if self.cancel.is_set() and not stop_sent:
                control.stop.remote()
                stop_sent = True
        self._pump(control)
        seconds = time.monotonic() - started
        if "error" in outcome:
            raise Aborted(f"training failed: {_short(outcome['error'])}") from None
        if stop_sent or self.stopped_at is not None:
            step = self.stopped_at or (self.last_step.step if self.last_step else 0)
            raise Cancelled(
                f"training cancelled at step {step}; a retry resumes from the last checkpoint"
            )
        result = outcome["result"]
        if result.checkpoint is None:
            raise Aborted("training ended without a checkpoint")
        folder = Path(result.checkpoint.path)
        return folder, self._report(result.metrics or {}, seconds, _saved_state(folder))

    def _pump(self, control: Any) -> None:
        import ray

        for event in ray.get(control.drain.remote()):
            self._on_event(event)

    def _on_event(self, event: WorkerEvent) -> None:
        match event:
            case WorkerStarted():
                self.resumed_from_step = start = event.resumed_from_step
                self.total_steps = event.total_steps
                self.precision = event.precision
                message = f"resumed from step {start}" if start else "started"
                self.emit(TrainEvent(start, event.total_steps, 0.0, message=message))
            case WorkerStepped():
                self.last_step = event
                self.emit(
                    TrainEvent(
                        step=event.step,
                        total_steps=event.total_steps,
                        epoch=event.epoch,
                        loss=event.loss,
                        learning_rate=event.learning_rate,
                        samples_per_second=event.samples_per_second,
                        eta_s=event.eta_s,
                    )
                )
            case WorkerEvaluated():
                self.emit(self._evaluated_event(event))
            case WorkerCheckpointed():
                self.emit(self._checkpoint_event(event))
            case WorkerStopped():
                self.stopped_at = event.step

    def _evaluated_event(self, event: WorkerEvaluated) -> TrainEvent:
        done = event.evaluation
        best = "best so far" if event.best_step == done.step else f"best at step {event.best_step}"
        return self._event(
            step=done.step,
            epoch=done.epoch,
            loss=done.loss,
            eval_loss=done.eval_loss,
            eval_exact_match=done.exact_match,
            eval_chrf=done.chrf,
            message=f"validated ({best})",
        )

    def _checkpoint_event(self, event: WorkerCheckpointed) -> TrainEvent:
        folder = self._latest_checkpoint()
        ref = None
        if folder is not None:
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            ref = ArtifactRef(f"file://{folder}", "", size, "checkpoint")
        return self._event(
            step=event.step,
            epoch=event.epoch,
            loss=event.loss,
            eval_loss=event.eval_loss,
            checkpoint=ref,
            message="checkpoint saved",
        )

    def _event(self, **fields: Any) -> TrainEvent:
        """An event between steps: the latest step's rate, speed and ETA beside ``fields``."""
        last = self.last_step
        return TrainEvent(
            total_steps=self.total_steps,
            learning_rate=last.learning_rate if last else 0.0,
            samples_per_second=last.samples_per_second if last else 0.0,
            eta_s=last.eta_s if last else None,
            **fields,
        )

    def _latest_checkpoint(self) -> Path | None:
        found = sorted(self.run_dir.glob(FOLDER_GLOB))
        return found[-1] if found else None

    def _report(
        self, metrics: dict[str, Any], seconds: float, state: dict[str, Any]
    ) -> TrainReport:
        options = self.job.options
        last = self.last_step
        steps = int(metrics.get("step", last.step if last else 0))
        busy_s = last.busy_s if last else 0.0
        samples = float(last.samples) if last else 0.0
        eval_loss = metrics.get("eval_loss")
        best = state.get("best") or {}
        return TrainReport(
            steps=steps,
            epochs=float(metrics.get("epoch", 0.0)),
            final_loss=float(metrics.get("loss", math.nan)),
            final_eval_loss=None if eval_loss is None or math.isnan(eval_loss) else eval_loss,
            train_seconds=seconds,
            samples_per_second=samples / busy_s if busy_s else 0.0,
            resumed_from_checkpoint=self.resumed_from_step > 0,
            resumed_from_step=self.resumed_from_step,
            backend="local-ray",
            train_examples=len(self.data.train),
            validation_examples=len(self.data.validation),
            num_workers=options.num_workers,
            device="cuda" if options.use_gpu else "cpu",
            precision=self.precision,
            best_step=int(best.get("step", 0)),
            best_eval_loss=best.get("eval_loss"),
            stopped_early=bool(state.get("stopped_early", False)),
            evaluations=tuple(best.get("history", ())),
        )


def _saved_state(checkpoint: Path) -> dict[str, Any]:
    """Where the checkpoint's training stood: position, best validation, the validations."""
    import json

    try:
        return json.loads((checkpoint / STATE_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _cpus_per_worker(cpus: float, workers: int) -> float:
    """Whole CPUs per worker when there are enough; a fair fraction otherwise."""
    if cpus >= workers:
        return float(int(cpus // workers))
    return round(cpus / workers, 2)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    tail = [line for line in text if line.strip()][-3:]
    return " | ".join(tail)[:600] or type(error).__name__
