"""Training on the cluster: a KubeRay RayJob per training, watched until it ends.

The chart renders a complete RayJob (head and worker groups, the data volume, security context,
resources) into a file, ``settings.rayjob_template``. For each training ``build_rayjob`` copies
it and sets what belongs to that training: the name (``p2m-train-<key[:12]>``), namespace,
labels, the entrypoint (``p2m train-job --job <job file> --data-dir <data dir>``), the worker
group's replicas (``num_workers``, fixed: min = max = replicas), one GPU per worker when asked
for (none otherwise), and the image when ``settings.image`` is set. The data dir must be the
same volume at the same path in the trainer's pod and in every Ray pod: the job file, the
progress file, Ray Train's checkpoints and the artifact store all live there.

``RayJobRunner`` is the trainer's ``TrainRunner`` for that backend: it writes the job file,
creates the RayJob (or adopts the one an earlier trainer process left running), reads its
``status.jobDeploymentStatus`` / ``status.jobStatus`` every ``poll_s`` seconds, streams phase
changes and the job's progress lines as TrainEvents, and on success returns the model the job
stored under the training key. A failed RayJob raises Aborted with its message; ``cancel``
deletes the RayJob (Ray Train's checkpoints stay on the volume, so a retry resumes).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubernetes import client

from p2m.common.artifacts import ArtifactStore
from p2m.common.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    InvalidInput,
    NotFound,
    Unavailable,
)
from p2m.common.settings import Settings
from p2m.k8s.api import (
    LABEL_MANAGED_BY,
    LABEL_PREFIX,
    MANAGED_BY,
    RAYJOB,
    CustomObjects,
    fresh_copy,
    load_configuration,
    load_template,
)
from p2m.trainer.engine import TrainEvent, TrainJob, TrainOutcome, stored_report
from p2m.trainer.events import train_event_from_json
from p2m.trainer.jobfile import JobFile, ProgressTail, job_path, progress_path

log = logging.getLogger(__name__)

NAME_PREFIX = "p2m-train-"
LABEL_TRAINING_KEY = f"{LABEL_PREFIX}training-key"  # label value: the key's first 63 characters
ANNOTATION_TRAINING_KEY = f"{LABEL_PREFIX}training-key"  # annotation value: the whole key
LABEL_RUN_ID = f"{LABEL_PREFIX}run-id"
GPU_RESOURCE = "nvidia.com/gpu"  # unless the template's workers name another "<vendor>/gpu"
# KubeRay's phases (status.jobDeploymentStatus) and Ray's job states (status.jobStatus).
DEPLOYMENT_TERMINAL = ("Complete", "Failed", "ValidationFailed")
JOB_SUCCEEDED = "SUCCEEDED"
JOB_FAILED = ("FAILED", "STOPPED")
# How long the API server may stay unreachable while a RayJob is watched.
WATCH_PATIENCE_S = 300.0
# How long a RayJob being deleted (finalizers) may take before a new one of its name is created.
DELETE_WAIT_S = 120.0


def rayjob_name(key: str) -> str:
    """The RayJob of training ``key``: ``p2m-train-<key[:12]>`` (a DNS-1123 label)."""
    return f"{NAME_PREFIX}{key[:12]}"


def build_rayjob(
    template: Mapping[str, Any],
    *,
    key: str,
    namespace: str,
    job_file: Path,
    data_dir: Path,
    num_workers: int,
    use_gpu: bool,
    image: str = "",
    run_id: str = "",
) -> dict[str, Any]:
    """The RayJob of one training: a copy of ``template`` with the training's fields set.

    Raises:
        InvalidInput: The template has no worker group or no Ray container (field
            ``rayjob_template``).
    """
    manifest = fresh_copy(template)
    metadata = manifest["metadata"]
    metadata["name"] = rayjob_name(key)
    metadata["namespace"] = namespace
    metadata["labels"].update({LABEL_MANAGED_BY: MANAGED_BY, LABEL_TRAINING_KEY: key[:63]})
    if run_id:
        metadata["labels"][LABEL_RUN_ID] = _label_value(run_id)
    metadata["annotations"][ANNOTATION_TRAINING_KEY] = key
    spec = manifest["spec"]
    spec["entrypoint"] = shlex.join(
        ["p2m", "train-job", "--job", str(job_file), "--data-dir", str(data_dir)]
    )
    cluster = spec.get("rayClusterSpec")
    if not isinstance(cluster, dict):
        raise InvalidInput("rayjob_template", "has no spec.rayClusterSpec")
    groups = cluster.get("workerGroupSpecs")
    if not isinstance(groups, list) or not groups:
        raise InvalidInput("rayjob_template", "has no spec.rayClusterSpec.workerGroupSpecs")
    workers = groups[0]
    workers.update(replicas=num_workers, minReplicas=num_workers, maxReplicas=num_workers)
    worker = _ray_container(workers, "workerGroupSpecs[0]")
    resources = worker.setdefault("resources", {})
    gpu_names = [
        n
        for part in ("limits", "requests")
        for n in resources.get(part) or {}
        if n.endswith("/gpu")
    ]
    template_gpus = max(
        (
            _count(resources.get(part, {}).get(n))
            for part in ("limits", "requests")
            for n in gpu_names
        ),
        default=0,
    )
    if not use_gpu:
        for part in ("limits", "requests"):
            for gpu in gpu_names:
                resources.setdefault(part, {}).pop(gpu, None)
            if part in resources and not resources[part]:
                del resources[part]
    elif template_gpus < 1:  # the chart's count wins; else one per Ray Train worker
        resources.setdefault("limits", {})[gpu_names[0] if gpu_names else GPU_RESOURCE] = 1
    if image:
        head = cluster.get("headGroupSpec")
        if isinstance(head, dict):
            _ray_container(head, "headGroupSpec")["image"] = image
        for index, group in enumerate(groups):
            _ray_container(group, f"workerGroupSpecs[{index}]")["image"] = image
        submitter = spec.get("submitterPodTemplate")
        if isinstance(submitter, dict):  # runs `ray job submit`: the same Ray inside
            _ray_container(submitter, "submitterPodTemplate", pod=submitter)["image"] = image
    return manifest


def _ray_container(
    group: dict[str, Any], where: str, pod: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Ray container of a head or worker group (the first container of its pod).

    ``pod`` is the pod template itself when it is not the group's ``template``.
    """
    try:
        template = pod if pod is not None else group["template"]
        container = template["spec"]["containers"][0]
    except (KeyError, IndexError, TypeError):
        raise InvalidInput("rayjob_template", f"{where} has no pod template container") from None
    if not isinstance(container, dict):
        raise InvalidInput("rayjob_template", f"{where}'s first container is not an object")
    return container


def _label_value(text: str) -> str:
    """``text`` as a label value: at most 63 of [-_.A-Za-z0-9], alphanumeric at both ends."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:63]
    return cleaned.strip("-_.")


@dataclass(frozen=True)
class _Phase:
    """What the RayJob's status says."""

    deployment: str
    job: str
    message: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> _Phase:
        """The phase of a RayJob object."""
        status = obj.get("status") or {}
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or "")
        return cls(
            deployment=str(status.get("jobDeploymentStatus") or ""),
            job=str(status.get("jobStatus") or ""),
            message=f"{reason}: {message}" if reason and message else (message or reason),
        )

    @property
    def succeeded(self) -> bool:
        """Ray says the entrypoint succeeded (or KubeRay completed it without a job state)."""
        return self.job == JOB_SUCCEEDED or (self.deployment == "Complete" and not self.job)

    @property
    def failed(self) -> bool:
        """The job failed or was stopped, or KubeRay gave up on it (e.g. ValidationFailed)."""
        if self.succeeded:
            return False
        return self.job in JOB_FAILED or self.deployment in DEPLOYMENT_TERMINAL

    @property
    def terminal(self) -> bool:
        """Nothing more will happen to this RayJob."""
        return self.succeeded or self.failed

    def describe(self) -> str:
        """E.g. "Running, job RUNNING"."""
        deployment = self.deployment or "New"
        return f"{deployment}, job {self.job}" if self.job else deployment


class RayJobRunner:
    """Runs trainings as KubeRay RayJobs (the ``TrainRunner`` of the ``rayjob`` backend)."""

    def __init__(
        self,
        objects: CustomObjects,
        store: ArtifactStore,
        template: Mapping[str, Any],
        data_dir: Path,
        *,
        image: str = "",
        poll_s: float = 2.0,
        watch_patience_s: float = WATCH_PATIENCE_S,
    ) -> None:
        """Create RayJobs from ``template`` through ``objects``.

        Args:
            objects: The custom-objects API, in the namespace RayJobs go to.
            store: The artifact store (the job stores the model there; it is on the volume).
            template: The RayJob manifest the chart rendered.
            data_dir: The data dir, the same path in the Ray pods (an absolute path).
            image: The Ray pods' image; empty: the template's.
            poll_s: Seconds between two reads of the RayJob's status.
            watch_patience_s: How long the API server may be unreachable while watching.
        """
        self._objects = objects
        self._store = store
        self._template = template
        self._data_dir = data_dir.absolute()
        self._image = image
        self._poll_s = poll_s
        self._patience_s = watch_patience_s

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: ArtifactStore,
        configuration: client.Configuration | None = None,
    ) -> RayJobRunner:
        """The runner ``settings`` describe (template, namespace, image, poll interval).

        Raises:
            InvalidInput: The template cannot be read or is not a RayJob.
            FailedPrecondition: No Kubernetes configuration can be loaded.
        """
        template = load_template(settings.rayjob_template, RAYJOB, "rayjob_template")
        objects = CustomObjects(load_configuration(configuration), settings.k8s_namespace)
        return cls(
            objects,
            store,
            template,
            settings.data_dir,
            image=settings.image,
            poll_s=settings.k8s_poll_s,
        )

    def close(self) -> None:
        """Release the API client."""
        self._objects.close()

    def run(
        self,
        key: str,
        job: TrainJob,
        emit: Callable[[TrainEvent], None],
        cancel: threading.Event,
    ) -> TrainOutcome:
        """Train ``job`` in a RayJob; see the module docstring.

        Raises:
            Cancelled: ``cancel`` was set; the RayJob is deleted.
            Aborted: The RayJob failed, was deleted by someone else, or stored no model.
            AlreadyExists: A RayJob of the same name belongs to another training.
            Unavailable: The cluster cannot be reached (for longer than the patience while
                watching).
        """
        name = rayjob_name(key)
        job_file = job_path(self._data_dir, key)
        existing = self._existing(name, key)
        if existing is None:
            existing = self._submit(name, key, job, job_file)
        if existing is None:
            emit(TrainEvent(0, 0, 0.0, message=f"submitted RayJob {name}"))
        else:
            state = _Phase.of(existing).describe()
            emit(TrainEvent(0, 0, 0.0, message=f"adopted RayJob {name} ({state})"))
            log.info("adopted RayJob", extra={"ray_job": name, "state": state})
        return self._watch(name, key, progress_path(job_file), emit, cancel)

    # -- submit -----------------------------------------------------------------------------

    def _existing(self, name: str, key: str) -> dict[str, Any] | None:
        """The RayJob an earlier attempt left running, or None (a finished one is removed)."""
        obj = self._objects.find(RAYJOB, name)
        if obj is None:
            return None
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if annotations.get(ANNOTATION_TRAINING_KEY) != key:
            raise AlreadyExists(
                f"RayJob {self._objects.namespace}/{name} exists and is not training {key[:12]}"
                "...; delete it or use another namespace"
            )
        phase = _Phase.of(obj)
        if not phase.terminal:
            return obj
        # Finished earlier (failed, or succeeded but its model is gone): start it again.
        log.info("removing finished RayJob", extra={"ray_job": name, "state": phase.describe()})
        self._delete_and_wait(name)
        return None

    def _submit(self, name: str, key: str, job: TrainJob, job_file: Path) -> dict[str, Any] | None:
        """Write the job file and create the RayJob; return the RayJob when one won the race."""
        JobFile(key, name, job).write(job_file)
        progress = progress_path(job_file)
        progress.unlink(missing_ok=True)  # progress of an earlier attempt
        manifest = build_rayjob(
            self._template,
            key=key,
            namespace=self._objects.namespace,
            job_file=job_file,
            data_dir=self._data_dir,
            num_workers=job.options.num_workers,
            use_gpu=job.options.use_gpu,
            image=self._image,
            run_id=job.run_id,
        )
        try:
            self._objects.create(RAYJOB, manifest)
        except AlreadyExists:  # another trainer submitted it in the meantime
            return self._objects.get(RAYJOB, name)
        log.info("submitted RayJob", extra={"ray_job": name, "run_id": job.run_id})
        return None

    def _delete_and_wait(self, name: str) -> None:
        """Delete the RayJob and wait until it is gone (KubeRay's finalizer stops the job)."""
        try:
            self._objects.delete(RAYJOB, name)
        except NotFound:
            return
        deadline = time.monotonic() + DELETE_WAIT_S
        while self._objects.find(RAYJOB, name) is not None:
            if time.monotonic() > deadline:
                raise Unavailable(f"RayJob {name} is still being deleted after {DELETE_WAIT_S:g}s")
            time.sleep(self._poll_s)

    # -- watch ------------------------------------------------------------------------------

    def _watch(
        self,
        name: str,
        key: str,
        progress: Path,
        emit: Callable[[TrainEvent], None],
        cancel: threading.Event,
    ) -> TrainOutcome:
        tail = ProgressTail(progress)
        last = TrainEvent(0, 0, 0.0)
        seen: _Phase | None = None
        errors: list[str] = []
        unreachable_since: float | None = None
        started = time.monotonic()

        def pump() -> None:
            nonlocal last
            for record in tail.read():
                kind = record.get("type")
                if kind == "event" and isinstance(record.get("event"), dict):
                    try:
                        last = train_event_from_json(record["event"])
                    except TypeError:
                        continue
                    emit(last)
                elif kind == "error":
                    errors.append(str(record.get("message", "")))

        while True:
            pump()
            if cancel.is_set():
                self._cancel(name)
                raise Cancelled(
                    f"training cancelled at step {last.step}; RayJob {name} deleted, a retry "
                    "resumes from the last checkpoint"
                )
            try:
                obj = self._objects.get(RAYJOB, name)
                unreachable_since = None
            except NotFound:
                raise Aborted(f"RayJob {name} was deleted before it finished") from None
            except Unavailable:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self._patience_s:
                    raise
                log.warning("cluster unreachable while watching", extra={"ray_job": name})
                cancel.wait(self._poll_s)
                continue
            phase = _Phase.of(obj)
            if seen is None or (phase.deployment, phase.job) != (seen.deployment, seen.job):
                seen = phase
                emit(
                    replace(
                        last,
                        checkpoint=None,
                        loss=None,
                        eval_loss=None,
                        eta_s=None,
                        message=f"RayJob {name}: {phase.describe()}",
                    )
                )
            if phase.terminal:
                pump()
                if phase.succeeded:
                    return self._outcome(key, name, time.monotonic() - started)
                said = f"; the job said: {errors[-1]}" if errors else ""
                raise Aborted(
                    f"RayJob {name} failed ({phase.describe()}): "
                    f"{phase.message or 'no message'}{said}"
                )
            cancel.wait(self._poll_s)

    def _cancel(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            self._objects.delete(RAYJOB, name)
        log.info("cancelled RayJob", extra={"ray_job": name})

    def _outcome(self, key: str, name: str, seconds: float) -> TrainOutcome:
        model = self._store.recall(key)
        if model is None:
            raise Aborted(
                f"RayJob {name} succeeded but no model is stored under training key {key[:12]}..."
                f"; is {self._data_dir} the same volume in the Ray pods?"
            )
        report = stored_report(self._store, model)
        log.info(
            "RayJob finished",
            extra={"ray_job": name, "model": model.uri, "watched_s": round(seconds, 1)},
        )
        return TrainOutcome(
            model, replace(report, backend="rayjob", ray_job_name=name, cached=False)
        )


def _count(value: object) -> int:
    """A resource quantity of GPUs (an int or a digit string) as an int; 0 otherwise."""
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0
