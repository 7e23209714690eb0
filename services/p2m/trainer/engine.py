"""Train a student with Ray Train: resolve inputs, run TorchTrainer, stream progress, store it.

The driver side of training. ``train`` blocks (run it in a thread); progress arrives through
``on_event`` from the rank-0 worker via the TrainControl actor, and setting ``cancel`` stops the
workers at their next step. A run is named by its training key, so a retry after a crash or a
cancellation finds Ray Train's snapshot of the same run and resumes from its last checkpoint.
With ``options.search_trials`` the run is a Ray Tune search of several such runs
(``p2m.trainer.search``), and the model is the best trial's.

With a ``TrainRunner`` (the ``rayjob`` backend: ``p2m.trainer.rayjob.RayJobRunner``) the run
happens elsewhere: the runner hands the job to the cluster, streams its progress, and returns
the model the cluster stored under the training key. The job there is this same code, driven by
``p2m train-job`` on the RayJob's Ray cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Protocol

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.errors import FailedPrecondition, InvalidInput
from p2m.common.model_store import ModelStore
from p2m.common.names import check_run_id
from p2m.common.output_form import OutputForm, infer_output_form
from p2m.common.settings import Settings
from p2m.trainer.adapter_choice import choose_adapters, training_memory
from p2m.trainer.base_model import BaseModel, resolve_base_model
from p2m.trainer.data import (
    TrainingData,
    load_training_data,
    with_demonstrations,
)
from p2m.trainer.disk_space import check_free_space, parameter_count
from p2m.trainer.events import TrainEvent
from p2m.trainer.finalize import TRAINING_FILE, build_model_folder
from p2m.trainer.options import TrainOptions, training_key
from p2m.trainer.ray_run import RayRun
from p2m.trainer.run_types import TrainJob, TrainOutcome, TrainReport
from p2m.trainer.search import SearchRun
from p2m.trainer.shown_demonstrations import show_demonstrations

__all__ = ["ModelTrainer", "TrainEvent", "TrainJob", "TrainOutcome", "TrainReport", "TrainRunner"]

log = logging.getLogger(__name__)


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
            train_memory_gb=settings.train_memory_gb,
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
        train_memory_gb: float = 0.0,
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
            train_memory_gb: Memory one machine gives a training's workers (0: measured where
                Ray is local, else unknown); full fine-tuning beyond it trains LoRA adapters.
            runner: Run trainings there instead of on this process's Ray (several at once).
            ray_job_name: Set when this process is the entrypoint of that KubeRay RayJob; the
                stored report then says ``backend="rayjob"`` and names it.
            path_roots: The folders a base model folder may lie in; None: anywhere.
        """
        self._store = store
        self._models = models
        self._work_root = work_root.absolute()  # Ray Train takes no relative storage path
        self._hub_offline = hub_offline
        self._train_memory_gb = train_memory_gb
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
        emit = on_event or (lambda event: None)
        base = resolve_base_model(
            job.base_model,
            job.base_model_architecture,
            job.base_model_artifact,
            self._store,
            self._models,
            self._hub_offline,
            self._path_roots,
            lambda line: emit(TrainEvent(0, 0, 0.0, message=line)),
        )
        parameters = parameter_count(base.path)  # sets the rate, sizes the checkpoints
        job = with_shown_demonstrations(job, base)  # before the key: it names them
        options = job.options
        datasets = tuple(self._dataset(i, ref) for i, ref in enumerate(job.datasets))
        data = self._data(datasets, job)  # the same whichever weights train
        with self._local_turn():  # a local training's memory is measured once it has the machine
            # The model of the options as asked (every weight, where the choice is open) is
            # reused whatever the memory is now.
            as_asked = replace(options, lora_auto=False).with_learning_rate_for(parameters)
            cached = self._recall(self._key(base, datasets, replace(job, options=as_asked), data))
            if cached is not None:
                return cached
            choice = choose_adapters(
                options, parameters, self._training_memory(), self._workers_per_machine(options)
            )
            if choice.reason:
                log.warning("LoRA adapters chosen", extra={"reason": choice.reason})
                emit(TrainEvent(0, 0, 0.0, message=choice.reason))
            settled = choice.options.with_learning_rate_for(parameters)
            reason = choice.reason or job.lora_reason  # settled upstream: a RayJob's entrypoint
            job = replace(job, options=settled, lora_reason=reason)
            key = self._key(base, datasets, job, data)
            with self._exclusive(key):
                cached = self._recall(key)
                if cached is not None:  # the reason is this call's choice, whoever trained it
                    return replace(cached, report=replace(cached.report, lora_reason=reason))
                if self._runner is not None:
                    outcome = self._runner.run(key, job, emit, cancel or threading.Event())
                    report = replace(outcome.report, lora_reason=reason)
                    return replace(outcome, report=report)
                run = self._run(key, base, parameters, job, data, emit, cancel or threading.Event())
                checkpoint_dir, report = run.execute()
                report = replace(report, lora_reason=reason)
                if self._ray_job_name:
                    report = replace(report, backend="rayjob", ray_job_name=self._ray_job_name)
                form = training_output_form(data, job)
                return self._store_model(
                    key, run, checkpoint_dir, report, base, job, datasets, form
                )

    def _data(self, datasets: tuple[ArtifactRef, ...], job: TrainJob) -> TrainingData:
        """The training data: the datasets, and the demonstrations where they validate.

        Those every prompt shows (``job.shown_demonstrations``) do not: each would be its own
        answer's clue.
        """
        data = load_training_data(self._store, datasets, job.options.seed)
        if job.options.validate_on_demonstrations:
            data = with_demonstrations(data, job.task.demonstrations[job.shown_demonstrations :])
        return data

    def _key(
        self,
        base: BaseModel,
        datasets: tuple[ArtifactRef, ...],
        job: TrainJob,
        data: TrainingData,
    ) -> str:
        """The training key of ``job`` (its learning rate already set)."""
        return training_key(
            base.sha256,
            [d.sha256 for d in datasets],
            job.task.instruction,
            job.options,
            data.validation[: data.demonstrations],
        )

    def _recall(self, key: str) -> TrainOutcome | None:
        """The model stored under ``key``, if one is."""
        cached = self._store.recall(key)
        if cached is None:
            return None
        report = stored_report(self._store, cached)
        return TrainOutcome(cached, replace(report, cached=True))

    def _local_turn(self) -> AbstractContextManager[object]:
        """Held while a local training is set up and runs: one at a time on this machine."""
        return self._one_at_a_time if self._runner is None else contextlib.nullcontext()

    def _workers_per_machine(self, options: TrainOptions) -> int:
        """How many of the training's workers share one machine's memory: one per RayJob pod."""
        return 1 if self._runner is not None else options.num_workers

    def _training_memory(self) -> int | None:
        """The memory a training's workers on one machine have (None: unknown)."""
        ray_is_local = self._runner is None and not os.environ.get("RAY_ADDRESS")
        return training_memory(self._train_memory_gb, ray_is_local)

    def _run(
        self,
        key: str,
        base: BaseModel,
        parameters: int,
        job: TrainJob,
        data: TrainingData,
        emit: Callable[[TrainEvent], None],
        cancel: threading.Event,
    ) -> RayRun | SearchRun:
        """One Ray Train run, or a search of ``options.search_trials`` of them.

        ``parameters`` is the base model's count (sizes the checkpoints' free-space check).

        Raises:
            InvalidInput: A search without validation data to choose by.
            FailedPrecondition: Too little free disk for the run's checkpoints.
        """
        name = f"{'search' if job.options.search_trials else 'train'}-{key[:24]}"
        check_free_space(parameters, job.options.lora, self._work_root / name)
        if not job.options.search_trials:
            return RayRun(name, self._work_root, base, job, data, emit, cancel)
        if not data.validation:
            raise InvalidInput(
                "options.search_trials",
                "needs validation data to choose by (a validation.jsonl beside train.jsonl)",
            )
        return SearchRun(name, self._work_root, base, job, data, emit, cancel)

    def _exclusive(self, key: str) -> AbstractContextManager[object]:
        """The lock a training holds while it runs.

        Locally none beyond ``_local_turn`` (one Ray Train run at a time; a cancelled one
        finishes first); with a runner one run per training key, the cluster running the others
        beside it.
        """
        if self._runner is None:
            return contextlib.nullcontext()
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
        run: RayRun | SearchRun,
        checkpoint_dir: Path,
        report: TrainReport,
        base: BaseModel,
        job: TrainJob,
        datasets: tuple[ArtifactRef, ...],
        form: OutputForm,
    ) -> TrainOutcome:
        options = run.trained_options()
        training = {
            "base_model": base.name,
            "base_model_sha256": base.sha256,
            "datasets": [d.uri for d in datasets],
            "instruction": job.task.instruction,
            "options": asdict(options),
            "report": asdict(report),
        }
        with tempfile.TemporaryDirectory(dir=self._store.root / "tmp") as tmp:
            build_model_folder(checkpoint_dir, Path(tmp), base, job.task, options, training, form)
            model = self._store.put_dir(Path(tmp), "model")
        self._store.remember(key, model)
        for folder in run.folders():
            shutil.rmtree(folder, ignore_errors=True)
        log.info("training stored", extra={"model": model.uri, "steps": report.steps})
        return TrainOutcome(model, report)


def with_shown_demonstrations(job: TrainJob, base: BaseModel) -> TrainJob:
    """``job`` with the demonstrations its prompts show (``options.prompt_demonstrations``)."""
    if not job.options.prompt_demonstrations or not job.task.demonstrations:
        return job
    from transformers import AutoTokenizer

    return show_demonstrations(job, AutoTokenizer.from_pretrained(base.path))


def training_output_form(data: TrainingData, job: TrainJob) -> OutputForm:
    """The form the model's answers are held to: the one its training outputs take.

    The task's own labels come first; free text where ``constrain_outputs`` is off.
    """
    if not job.options.constrain_outputs:
        return OutputForm()
    inputs, outputs = [e.input for e in data.train], [e.output for e in data.train]
    return infer_output_form(inputs, outputs, job.task)


def stored_report(store: ArtifactStore, model: ArtifactRef) -> TrainReport:
    """The report a stored model was trained with (from its ``p2m_training.json``).

    Raises:
        FailedPrecondition: The model folder has no readable training report.
    """
    import json

    path = store.path(model.uri) / TRAINING_FILE
    try:
        data = json.loads(path.read_text("utf-8"))["report"]
        return TrainReport(
            **{
                **data,
                "evaluations": tuple(data.get("evaluations", ())),
                "search_trials": tuple(data.get("search_trials", ())),
            }
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FailedPrecondition(f"{path} holds no training report: {error}") from None
