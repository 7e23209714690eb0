"""One Ray Train run: its TorchTrainer, the progress pump, and the report of what it did."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from p2m.common.artifacts import ArtifactRef
from p2m.common.errors import Aborted, Cancelled, FailedPrecondition
from p2m.trainer.base_model import BaseModel
from p2m.trainer.batching import steps_per_epoch
from p2m.trainer.checkpoints import FOLDER_GLOB, STATE_FILE, latest_complete
from p2m.trainer.events import (
    TrainEvent,
    WorkerCheckpointed,
    WorkerEvaluated,
    WorkerEvent,
    WorkerStarted,
    WorkerStepped,
    WorkerStopped,
)
from p2m.trainer.options import TrainOptions, planned_epochs
from p2m.trainer.ray_runtime import cluster_cpus, cluster_gpus, ensure_ray, start_control
from p2m.trainer.run_types import TrainJob, TrainReport
from p2m.trainer.worker import train_worker

_POLL_S = 0.5
# Ray's memory monitor, killing workers: "Memory on the node (IP: ..., ID: ...) was 22.65GB used
# / 23.54GB limit (0.962382)", then "Top 10 memory users:" as PID, GB and command per line.
_OUT_OF_MEMORY = re.compile(r"Memory on the node \([^)]*\) was ([\d.]+)GB used / ([\d.]+)GB limit")
_MEMORY_USER = re.compile(r"^\d+\t([\d.]+)\t(\S+)", re.MULTILINE)


class RayRun:
    """One TorchTrainer.fit, its progress pump, and the checkpoint it leaves."""

    def __init__(
        self,
        name: str,
        work_root: Path,
        base: BaseModel,
        job: TrainJob,
        data: Any,
        emit: Callable[[TrainEvent], None],
        cancel: threading.Event,
    ) -> None:
        """A run named ``name`` (its folder under ``work_root``: a rerun resumes from it)."""
        self.name = name
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
        self.memory_tight = False

    def folders(self) -> list[Path]:
        """What the run leaves on disk (removed once its model is stored)."""
        return [self.run_dir]

    def trained_options(self) -> TrainOptions:
        """The options the model was trained with."""
        return self.job.options

    def spec(self, control: Any) -> dict[str, Any]:
        """What ``torch_trainer`` builds this run's TorchTrainer from (picklable)."""
        options = self.job.options
        resources = worker_resources(options)
        return {
            "name": self.name,
            "storage_path": str(self.work_root),
            "workers": options.num_workers,
            "use_gpu": options.use_gpu,
            "resources": resources,
            "config": {
                "options": asdict(options),
                "base_path": str(self.base.path),
                "architecture": self.base.architecture,
                "instruction": self.job.task.instruction,
                "train": [[e.input, e.output] for e in self.data.train],
                "validation": [[e.input, e.output] for e in self.data.validation],
                "control": control,
                "threads": max(1, math.floor(resources["CPU"])),
                "resume_from": str(found) if (found := latest_complete(self.run_dir)) else None,
            },
        }

    def execute(self) -> tuple[Path, TrainReport]:
        """Run to the end; return the last checkpoint's folder and the report.

        Raises:
            FailedPrecondition: GPUs were asked for and Ray has too few.
            Cancelled: ``cancel`` was set; the last checkpoint is kept for a retry.
            Aborted: A worker failed.
        """
        ensure_ray()
        check_gpus(self.job.options.num_workers, self.job.options.use_gpu)
        control = start_control()
        self.work_root.mkdir(parents=True, exist_ok=True)
        trainer = torch_trainer(self.spec(control))
        started = time.monotonic()
        result, stop_sent = fit_watched(trainer.fit, self.name, [(self, control)], self.cancel)
        seconds = time.monotonic() - started
        if stop_sent or self.stopped_at is not None:
            raise self.cancelled()
        if result.checkpoint is None:
            raise Aborted("training ended without a checkpoint")
        folder = Path(result.checkpoint.path)
        return folder, self.report(result.metrics or {}, seconds, saved_state(folder))

    def cancelled(self) -> Cancelled:
        """The error of a run stopped on request."""
        step = self.stopped_at or (self.last_step.step if self.last_step else 0)
        return Cancelled(
            f"training cancelled at step {step}; a retry resumes from the last checkpoint"
        )

    def pump(self, control: Any) -> None:
        """Pass on what the workers pushed to ``control`` since the last call."""
        import ray

        for event in ray.get(control.drain.remote()):
            self._on_event(event)

    def _on_event(self, event: WorkerEvent) -> None:
        match event:
            case WorkerStarted():
                self.resumed_from_step = start = event.resumed_from_step
                self.total_steps = event.total_steps
                self.precision = event.precision
                self.memory_tight = self.memory_tight or event.memory_tight
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

    def report(self, metrics: dict[str, Any], seconds: float, state: dict[str, Any]) -> TrainReport:
        """What the run did, from its last report's ``metrics`` and checkpoint ``state``."""
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
            validation_demonstrations=self.data.demonstrations,
            prompt_demonstrations=self.job.shown_demonstrations,
            num_workers=options.num_workers,
            device="cuda" if options.use_gpu else "cpu",
            precision=self.precision,
            memory_tight=self.memory_tight,
            best_step=int(best.get("step", 0)),
            best_eval_loss=best.get("eval_loss"),
            stopped_early=bool(state.get("stopped_early", False)),
            evaluations=tuple(best.get("history", ())),
            planned_epochs=planned_epochs(
                options,
                steps_per_epoch(len(self.data.train), options.batch_size, options.num_workers),
                validated=bool(self.data.validation),
            ),
        )


def saved_state(checkpoint: Path) -> dict[str, Any]:
    """Where the checkpoint's training stood: position, best validation, the validations."""
    import json

    try:
        return json.loads((checkpoint / STATE_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def worker_resources(options: TrainOptions) -> dict[str, float]:
    """What each worker reserves: its share of the cluster's CPUs, a GPU where asked for."""
    cpus = _cpus_per_worker(cluster_cpus(), options.num_workers)
    return {"CPU": cpus, **({"GPU": 1.0} if options.use_gpu else {})}


def check_gpus(workers: int, use_gpu: bool) -> None:
    """Raise FailedPrecondition when GPU workers are asked for and Ray has too few GPUs."""
    if use_gpu and cluster_gpus() < workers:
        raise FailedPrecondition(
            f"{workers} GPU worker(s) asked for, Ray has {cluster_gpus():g} GPU(s)"
        )


def torch_trainer(spec: dict[str, Any], callbacks: Sequence[Any] = ()) -> Any:
    """The TorchTrainer ``RayRun.spec`` describes (built where it is fitted)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_worker,
        train_loop_config=spec["config"],
        scaling_config=ScalingConfig(
            num_workers=spec["workers"],
            use_gpu=spec["use_gpu"],
            resources_per_worker=spec["resources"],
        ),
        run_config=RunConfig(
            name=spec["name"],
            storage_path=spec["storage_path"],
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
            callbacks=list(callbacks),
        ),
    )


def fit_watched(
    fit: Callable[[], Any],
    name: str,
    runs: Sequence[tuple[RayRun, Any]],
    cancel: threading.Event,
) -> tuple[Any, bool]:
    """``fit()`` in a thread, its runs' progress pumped; the result and whether it was cancelled.

    Each run's control is drained every half second and once after ``fit`` ends; once ``cancel``
    is set every control is told to stop (the workers stop at their next step).

    Raises:
        Aborted: ``fit`` raised.
    """
    outcome: dict[str, Any] = {}
    stop_sent = False

    def run() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    def tick() -> None:
        nonlocal stop_sent
        for watched, control in runs:
            watched.pump(control)
        if cancel.is_set() and not stop_sent:
            for _, control in runs:
                control.stop.remote()
            stop_sent = True

    thread = threading.Thread(target=run, name=f"ray-fit-{name}", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_POLL_S)
        tick()
    tick()
    if "error" in outcome:
        raise Aborted(f"training failed: {short_error(outcome['error'])}") from None
    return outcome["result"], stop_sent


def _cpus_per_worker(cpus: float, workers: int) -> float:
    """Whole CPUs per worker when there are enough; a fair fraction otherwise."""
    if cpus >= workers:
        return float(int(cpus // workers))
    return round(cpus / workers, 2)


def short_error(error: BaseException) -> str:
    """The last lines of ``error``'s text (Ray's errors carry whole tracebacks).

    A worker Ray killed for memory is said so, with the node's memory and its largest user:
    the last lines of Ray's text are the tail of a process table.
    """
    said = str(error)
    if (memory := _OUT_OF_MEMORY.search(said)) is not None:
        used, limit = memory.groups()
        largest = _MEMORY_USER.search(said)
        who = f"; the largest user: {largest.group(2)}, {largest.group(1)} GB" if largest else ""
        return (
            f"out of memory: Ray stopped the training with the node at {used} of {limit} GB{who}. "
            "A smaller student, LoRA adapters or fewer processes beside it need less; a re-run "
            "resumes from the newest checkpoint"
        )
    text = said.strip().splitlines()
    tail = [line for line in text if line.strip()][-3:]
    return " | ".join(tail)[:600] or type(error).__name__
