"""The trainer's RayJob backend and the deployer's KServe backend against a fake API server.

No Kubernetes API server can run here, so these tests talk to ``FakeKubeApiServer``, a stand-in
on 127.0.0.1 that serves the custom-object REST paths the ``kubernetes`` client uses and records
what it is sent. Every object it accepts passes the real CRD schemas (``tests.k8s.schemas``);
KubeRay's and KServe's controllers are played by the tests, which move each object's status
through its phases. The RayJob and InferenceService templates are the chart's, as ``helm
template`` renders them (the ``render`` fixture of tests/k8s/conftest.py).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    Unavailable,
)
from p2m.common.grpc_errors import status_for
from p2m.common.model_store import ModelStore
from p2m.common.settings import Settings
from p2m.common.student import StudentSpec
from p2m.common.types import TaskSpec
from p2m.deployer.cluster import ClusterDeployments
from p2m.deployer.core import KIND_INFERENCESERVICE, DeployOptions, DeploySpec
from p2m.k8s.api import (
    INFERENCESERVICE,
    RAYJOB,
    CustomObjects,
    load_configuration,
    load_template,
)
from p2m.trainer.data import store_dataset
from p2m.trainer.engine import ModelTrainer, TrainEvent, TrainJob, TrainReport
from p2m.trainer.finalize import TRAINING_FILE
from p2m.trainer.jobfile import JobFile, ProgressWriter, job_path, progress_path
from p2m.trainer.options import TrainOptions
from p2m.trainer.rayjob import ANNOTATION_TRAINING_KEY, RayJobRunner, build_rayjob
from tests.k8s.chart import Rendered
from tests.k8s.fake_kube_api import FakeKubeApiServer
from tests.k8s.schemas import SchemaError, validate

NAMESPACE = "p2m-test"
IMAGE = "registry.example.com/prompt2model/p2m:1.0.0"
POLL_S = 0.02


@pytest.fixture(scope="module")
def templates(render: Callable[..., Rendered]) -> dict[str, dict[str, Any]]:
    """The chart's RayJob and InferenceService templates (its workload-templates ConfigMap)."""
    rayjob, inferenceservice = render().workload_templates()
    return {"rayjob": rayjob, "inferenceservice": inferenceservice}


def runtime_template(inferenceservice: dict[str, Any]) -> str:
    """The chart's InferenceService with a KServe runtime predictor instead of the project's."""
    template = copy.deepcopy(inferenceservice)
    predictor = template["spec"]["predictor"]
    for key in ("containers", "volumes"):
        predictor.pop(key, None)
    predictor["model"] = {
        "modelFormat": {"name": "huggingface"},
        "storageUri": "pvc://placeholder/model",
        "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
    }
    return yaml.safe_dump(template)


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what or condition}")


@pytest.fixture(scope="module")
def fake_api() -> Iterator[FakeKubeApiServer]:
    """The stand-in API server, refusing (422) what the real CRD schemas refuse."""
    with FakeKubeApiServer(validator=validate) as fake:
        yield fake


@pytest.fixture
def fake(fake_api: FakeKubeApiServer) -> FakeKubeApiServer:
    fake_api.reset()
    return fake_api


@pytest.fixture
def objects(fake: FakeKubeApiServer) -> Iterator[CustomObjects]:
    api = CustomObjects(load_configuration(fake.configuration()), NAMESPACE)
    yield api
    api.close()


# --- the trainer: a RayJob per training --------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> ArtifactStore:
    return ArtifactStore(data_dir / "artifacts")


@pytest.fixture
def rayjob_template(tmp_path: Path, templates: dict[str, dict[str, Any]]) -> Path:
    path = tmp_path / "rayjob.yaml"
    path.write_text(yaml.safe_dump(templates["rayjob"]), encoding="utf-8")
    return path


@pytest.fixture
def isvc_template(templates: dict[str, dict[str, Any]]) -> str:
    return yaml.safe_dump(templates["inferenceservice"])


@pytest.fixture
def train_job(tmp_path: Path, store: ArtifactStore) -> TrainJob:
    """Two GPU workers on a tiny dataset; the base model is a folder (only its config is read
    before the job is handed to the cluster)."""
    rows = tmp_path / "rows"
    rows.mkdir()
    lines = [
        {"input": f"review {i}", "output": "positive" if i % 2 else "negative"} for i in range(6)
    ]
    (rows / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    dataset = store_dataset(store, rows)
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return TrainJob(
        datasets=(dataset,),
        base_model=str(base),
        task=TaskSpec("Classify the sentiment of the review."),
        options=TrainOptions(epochs=1, num_workers=2, use_gpu=True, max_steps=4),
        run_id="run-abc123",
    )


@pytest.fixture
def cpu_train_job(train_job: TrainJob) -> TrainJob:
    """The same job on CPUs: its memory is the machine's, so LoRA may be chosen for it."""
    return replace(train_job, options=replace(train_job.options, use_gpu=False))


def make_trainer(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    template: Path,
    train_memory_gb: float = 0.0,
) -> ModelTrainer:
    """A trainer process with the rayjob backend (built as the service builds it)."""
    settings = Settings.load(
        {
            "data_dir": data_dir,
            "trainer_backend": "rayjob",
            "k8s_namespace": NAMESPACE,
            "rayjob_template": template,
            "image": IMAGE,
            "k8s_poll_s": POLL_S,
            "train_memory_gb": train_memory_gb,
        },
        environ={},
    )
    runner = RayJobRunner.from_settings(settings, store, fake.configuration())
    return ModelTrainer(
        store,
        ModelStore(data_dir / "models"),
        data_dir / "cache" / "train",
        train_memory_gb=settings.train_memory_gb,
        runner=runner,
    )


class Training:
    """A ``ModelTrainer.train`` running in a thread, its events collected."""

    def __init__(
        self,
        trainer: ModelTrainer,
        job: TrainJob,
        on_event: Callable[[TrainEvent], None] | None = None,
    ) -> None:
        self.events: list[TrainEvent] = []
        self.cancel = threading.Event()
        self._pool = ThreadPoolExecutor(1)

        def emit(event: TrainEvent) -> None:
            self.events.append(event)
            if on_event is not None:
                on_event(event)

        self.future: Future[Any] = self._pool.submit(trainer.train, job, emit, self.cancel)

    def messages(self) -> list[str]:
        return [e.message for e in self.events if e.message]

    def saw(self, text: str) -> bool:
        return any(text in m for m in self.messages())

    def result(self, timeout_s: float = 10.0) -> Any:
        try:
            return self.future.result(timeout_s)
        finally:
            self._pool.shutdown()


def set_phase(
    fake: FakeKubeApiServer,
    name: str,
    deployment: str,
    job: str = "",
    message: str = "",
    reason: str = "",
) -> None:
    status: dict[str, Any] = {"jobDeploymentStatus": deployment, "rayClusterName": f"{name}-rc"}
    if job:
        status["jobStatus"] = job
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    fake.set_status("rayjobs", NAMESPACE, name, status)


def store_model_as_the_job_would(store: ArtifactStore, key: str, tmp_path: Path) -> ArtifactRef:
    """A model folder under the training key, with the report the job writes."""
    folder = tmp_path / "trained"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    StudentSpec("decoder-only", "Classify the sentiment of the review.").save(folder)
    report = TrainReport(
        steps=4,
        epochs=1.0,
        final_loss=0.25,
        final_eval_loss=None,
        train_seconds=12.0,
        samples_per_second=2.0,
        resumed_from_checkpoint=False,
        resumed_from_step=0,
        backend="rayjob",
        train_examples=6,
        validation_examples=0,
        num_workers=2,
        device="cuda",
        ray_job_name=f"p2m-train-{key[:12]}",
    )
    (folder / TRAINING_FILE).write_text(json.dumps({"report": asdict(report)}))
    model = store.put_dir(folder, "model")
    store.remember(key, model)
    return model


def step(n: int, loss: float) -> TrainEvent:
    return TrainEvent(
        step=n,
        total_steps=4,
        epoch=n / 4,
        loss=loss,
        learning_rate=5e-5,
        samples_per_second=2.0,
        eta_s=(4 - n) * 3.0,
    )


def test_the_trainer_submits_a_valid_rayjob_and_streams_it_to_the_end(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    train_job: TrainJob,
    tmp_path: Path,
) -> None:
    training = Training(make_trainer(fake, store, data_dir, rayjob_template), train_job)
    rayjob = fake.wait_for("rayjobs")
    name = rayjob["metadata"]["name"]
    key = rayjob["metadata"]["annotations"][ANNOTATION_TRAINING_KEY]

    # What was sent: one POST, a RayJob the real CRD accepts, with this training's fields.
    (post,) = fake.requests("POST", "rayjobs")
    assert post.path == f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayjobs"
    validate(post.body)
    assert name == f"p2m-train-{key[:12]}" and len(key) == 64
    labels = post.body["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "prompt2model"
    assert labels["prompt2model/training-key"] == key[:63]
    assert labels["app.kubernetes.io/component"] == "training"  # the template's are kept
    assert post.body["metadata"]["namespace"] == NAMESPACE
    job_file = job_path(data_dir.absolute(), key)
    assert post.body["spec"]["entrypoint"] == (
        f"p2m train-job --job {job_file} --data-dir {data_dir.absolute()}"
    )
    cluster = post.body["spec"]["rayClusterSpec"]
    workers = cluster["workerGroupSpecs"][0]
    assert (workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == (2, 2, 2)
    worker = workers["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"] == IMAGE
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == IMAGE and "nvidia.com/gpu" not in head["resources"]["limits"]
    # The job file holds the job, for `p2m train-job` in the RayJob.
    handed = JobFile.read(job_file)
    # The job goes with its learning rate set (the base folder holds no weights: 5e-5) and the
    # adapter choice settled (the memory is unknown here: every weight, as asked).
    settled = replace(train_job.options, learning_rate=5e-5, lora_auto=False)
    resolved = replace(train_job, options=settled)
    assert (handed.key, handed.ray_job_name, handed.job) == (key, name, resolved)

    # KubeRay brings the cluster up, the job runs and appends progress, then completes.
    set_phase(fake, name, "Initializing")
    wait_until(lambda: training.saw("Initializing"), what="the Initializing phase")
    set_phase(fake, name, "Running", "RUNNING")
    progress = ProgressWriter(progress_path(job_file))
    progress.event(TrainEvent(0, 4, 0.0, message="started"))
    progress.event(step(1, 0.9))
    progress.event(step(2, 0.6))
    wait_until(lambda: any(e.step == 2 and e.loss for e in training.events), what="step 2")
    model = store_model_as_the_job_would(store, key, tmp_path)
    progress.event(step(4, 0.25))
    progress.done(model)
    set_phase(fake, name, "Complete", "SUCCEEDED")
    outcome = training.result()

    assert outcome.model == model
    report = outcome.report
    assert (report.backend, report.ray_job_name, report.cached) == ("rayjob", name, False)
    assert report.steps == 4 and report.num_workers == 2
    messages = training.messages()
    assert messages[0] == f"submitted RayJob {name}"
    assert f"RayJob {name}: Initializing" in messages
    assert f"RayJob {name}: Running, job RUNNING" in messages
    assert messages[-1] == f"RayJob {name}: Complete, job SUCCEEDED"
    steps = [(e.step, e.loss) for e in training.events if e.loss is not None]
    assert steps == [(1, 0.9), (2, 0.6), (4, 0.25)]
    # Phase messages carry the last step, so a progress bar does not jump back.
    assert training.events[-1].step == 4
    # Polled, never written again; the same request again answers from the store.
    assert [r.method for r in fake.requests(plural="rayjobs")].count("POST") == 1
    again = make_trainer(fake, store, data_dir, rayjob_template).train(train_job)
    assert again.model == model and again.report.cached


def test_a_failed_rayjob_aborts_with_its_message(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    train_job: TrainJob,
) -> None:
    training = Training(make_trainer(fake, store, data_dir, rayjob_template), train_job)
    rayjob = fake.wait_for("rayjobs")
    name = rayjob["metadata"]["name"]
    key = rayjob["metadata"]["annotations"][ANNOTATION_TRAINING_KEY]
    set_phase(fake, name, "Running", "RUNNING")
    ProgressWriter(progress_path(job_path(data_dir.absolute(), key))).error(
        "training failed: CUDA out of memory"
    )
    set_phase(
        fake,
        name,
        "Failed",
        "FAILED",
        reason="AppFailed",
        message="Job entrypoint command failed with exit code 1",
    )
    with pytest.raises(Aborted) as info:
        training.result()
    text = str(info.value)
    assert f"RayJob {name} failed (Failed, job FAILED)" in text
    assert "AppFailed: Job entrypoint command failed with exit code 1" in text
    assert "CUDA out of memory" in text
    assert status_for(info.value)[0] == grpc.StatusCode.ABORTED


def test_cancel_deletes_the_rayjob(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    train_job: TrainJob,
) -> None:
    training = Training(make_trainer(fake, store, data_dir, rayjob_template), train_job)
    name = fake.wait_for("rayjobs")["metadata"]["name"]
    set_phase(fake, name, "Running", "RUNNING")
    wait_until(lambda: training.saw("Running"), what="the Running phase")
    training.cancel.set()
    with pytest.raises(Cancelled, match="a retry resumes from the last checkpoint"):
        training.result()
    (delete,) = fake.requests("DELETE", "rayjobs")
    assert delete.path == f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayjobs/{name}"
    assert fake.objects("rayjobs") == []


def test_a_rayjob_whose_workers_lack_the_memory_for_every_weight_trains_adapters(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    cpu_train_job: TrainJob,
) -> None:
    """The worker's memory (the chart's P2M_TRAIN_MEMORY_GB) is under 1 GiB of activations."""
    trainer = make_trainer(fake, store, data_dir, rayjob_template, train_memory_gb=0.5)
    key, training = submitted(fake, trainer, cpu_train_job)
    handed = JobFile.read(job_path(data_dir.absolute(), key)).job
    assert handed.options.lora and not handed.options.lora_auto  # the entrypoint keeps it
    assert "0.5 GB is available: LoRA adapters trained instead" in handed.lora_reason
    assert training.saw("0.5 GB is available: LoRA adapters trained instead")


def submitted(
    fake: FakeKubeApiServer, trainer: ModelTrainer, job: TrainJob
) -> tuple[str, Training]:
    """The key of the RayJob ``trainer`` submits for ``job``, and the (cancelled) training."""
    training = Training(trainer, job)
    key = str(fake.wait_for("rayjobs")["metadata"]["annotations"][ANNOTATION_TRAINING_KEY])
    training.cancel.set()
    with pytest.raises(Cancelled):
        training.result()
    return key, training


def test_rayjob_workers_each_have_their_pods_memory(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    cpu_train_job: TrainJob,
) -> None:
    """1.5 GB a pod: one worker's full fine-tuning fits (1 GiB here), two sharing it would not."""
    assert cpu_train_job.options.num_workers == 2
    trainer = make_trainer(fake, store, data_dir, rayjob_template, train_memory_gb=1.5)
    key, _ = submitted(fake, trainer, cpu_train_job)
    handed = JobFile.read(job_path(data_dir.absolute(), key))
    assert not handed.job.options.lora and not handed.job.lora_reason


def test_a_model_trained_in_full_is_reused_whatever_the_memory_now(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    cpu_train_job: TrainJob,
    tmp_path: Path,
) -> None:
    full = make_trainer(fake, store, data_dir, rayjob_template)
    full_key, _ = submitted(fake, full, cpu_train_job)
    model = store_model_as_the_job_would(store, full_key, tmp_path)
    short = Training(
        make_trainer(fake, store, data_dir, rayjob_template, train_memory_gb=0.5), cpu_train_job
    )
    try:
        outcome = short.future.result(10.0)  # a new RayJob would wait for the cluster instead
    finally:
        short.cancel.set()
        short.result()
    assert outcome.model == model and outcome.report.cached and not outcome.report.lora_reason
    assert len(fake.requests("POST", "rayjobs")) == 1  # nothing trained again


def test_a_stored_adapter_model_answers_an_open_choice_with_its_reason(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    cpu_train_job: TrainJob,
    tmp_path: Path,
) -> None:
    """Trained as asked for (``--lora``, no reason stored), then found by a call that chose it."""
    short = make_trainer(fake, store, data_dir, rayjob_template, train_memory_gb=0.5)
    lora_key, _ = submitted(fake, short, cpu_train_job)
    model = store_model_as_the_job_would(store, lora_key, tmp_path)
    outcome = short.train(cpu_train_job)
    assert outcome.model == model and outcome.report.cached
    assert "0.5 GB is available: LoRA adapters trained instead" in outcome.report.lora_reason


class _TrainerDied(Exception):
    pass


def test_a_restarted_trainer_adopts_the_running_rayjob(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    train_job: TrainJob,
    tmp_path: Path,
) -> None:
    def die_after_submitting(event: TrainEvent) -> None:
        if event.message.startswith("submitted"):
            raise _TrainerDied

    first = Training(
        make_trainer(fake, store, data_dir, rayjob_template), train_job, die_after_submitting
    )
    with pytest.raises(_TrainerDied):
        first.result()
    rayjob = fake.wait_for("rayjobs")
    name = rayjob["metadata"]["name"]
    key = rayjob["metadata"]["annotations"][ANNOTATION_TRAINING_KEY]
    set_phase(fake, name, "Running", "RUNNING")
    progress = ProgressWriter(progress_path(job_path(data_dir.absolute(), key)))
    progress.event(step(1, 0.8))

    second = Training(make_trainer(fake, store, data_dir, rayjob_template), train_job)
    wait_until(lambda: any(e.step == 1 for e in second.events), what="the earlier progress")
    model = store_model_as_the_job_would(store, key, tmp_path)
    set_phase(fake, name, "Complete", "SUCCEEDED")
    outcome = second.result()

    assert outcome.model == model and outcome.report.ray_job_name == name
    assert second.messages()[0] == f"adopted RayJob {name} (Running, job RUNNING)"
    assert len(fake.requests("POST", "rayjobs")) == 1  # no second RayJob
    assert fake.requests("DELETE", "rayjobs") == []


def test_a_rayjob_that_failed_earlier_is_replaced_on_retry(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    train_job: TrainJob,
) -> None:
    first = Training(make_trainer(fake, store, data_dir, rayjob_template), train_job)
    name = fake.wait_for("rayjobs")["metadata"]["name"]
    set_phase(fake, name, "Failed", "FAILED", message="node lost")
    with pytest.raises(Aborted, match="node lost"):
        first.result()

    retry = Training(make_trainer(fake, store, data_dir, rayjob_template), train_job)
    wait_until(lambda: len(fake.requests("POST", "rayjobs")) == 2, what="a new RayJob")
    assert [r.method for r in fake.requests(plural="rayjobs") if r.method != "GET"] == [
        "POST",
        "DELETE",
        "POST",
    ]
    assert "status" not in fake.objects("rayjobs")[0]
    retry.cancel.set()
    with pytest.raises(Cancelled):
        retry.result()


def test_a_rayjob_of_another_training_under_the_name_is_not_touched(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    train_job: TrainJob,
) -> None:
    first = Training(make_trainer(fake, store, data_dir, rayjob_template), train_job)
    rayjob = fake.wait_for("rayjobs")
    first.cancel.set()
    with pytest.raises(Cancelled):
        first.result()
    rayjob["metadata"]["annotations"][ANNOTATION_TRAINING_KEY] = "0" * 64
    fake.put(rayjob, "rayjobs")
    with pytest.raises(AlreadyExists, match="is not training"):
        make_trainer(fake, store, data_dir, rayjob_template).train(train_job)


def test_rayjob_gpus_follow_the_training_and_a_broken_template_is_named(
    templates: dict[str, dict[str, Any]],
) -> None:
    template = copy.deepcopy(templates["rayjob"])
    container = template["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"][
        "containers"
    ][0]
    container["resources"]["limits"]["amd.com/gpu"] = 2  # the chart's gpu.resourceName
    container["resources"]["requests"]["amd.com/gpu"] = 2

    def worker(use_gpu: bool) -> dict[str, Any]:
        manifest = build_rayjob(
            template,
            key="ab" * 32,
            namespace="ns",
            job_file=Path("/data/jobs/k.json"),
            data_dir=Path("/data"),
            num_workers=3,
            use_gpu=use_gpu,
        )
        validate(manifest)
        workers = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        assert workers["replicas"] == 3
        return dict(workers["template"]["spec"]["containers"][0])

    cpu = worker(use_gpu=False)
    assert not any(n.endswith("/gpu") for part in cpu["resources"].values() for n in part)
    assert cpu["image"] == container["image"]  # no image setting: the template's
    gpu = worker(use_gpu=True)
    assert gpu["resources"]["limits"]["amd.com/gpu"] == 2  # the chart's count per worker wins
    assert gpu["resources"]["requests"]["amd.com/gpu"] == 2
    assert template["metadata"]["name"] == "placeholder"  # the template is left as it was
    del template["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    with pytest.raises(InvalidInput) as info:
        build_rayjob(
            template,
            key="ab" * 32,
            namespace="ns",
            job_file=Path("/j"),
            data_dir=Path("/data"),
            num_workers=1,
            use_gpu=False,
        )
    assert info.value.field == "rayjob_template"


def test_templates_are_checked_at_start(tmp_path: Path, rayjob_template: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        load_template(tmp_path / "absent.yaml", RAYJOB, "rayjob_template")
    assert info.value.field == "rayjob_template"
    with pytest.raises(InvalidInput, match=r"not serving\.kserve\.io/v1beta1/InferenceService"):
        load_template(rayjob_template, INFERENCESERVICE, "inferenceservice_template")


# --- the deployer: an InferenceService per deployment --------------------------------------------


@pytest.fixture
def model(store: ArtifactStore, tmp_path: Path) -> ArtifactRef:
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    StudentSpec("decoder-only", "Classify the sentiment of the review.").save(folder)
    return store.put_dir(folder, "model")


def deployments_for(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    template: str,
    tmp_path: Path,
    **settings: Any,
) -> ClusterDeployments:
    path = tmp_path / "inferenceservice.yaml"
    path.write_text(template, encoding="utf-8")
    loaded = Settings.load(
        {
            "data_dir": data_dir,
            "deployer_backend": "kserve",
            "k8s_namespace": NAMESPACE,
            "inferenceservice_template": path,
            "image": IMAGE,
            "k8s_poll_s": POLL_S,
            **settings,
        },
        environ={},
    )
    return ClusterDeployments.from_settings(loaded, store, fake.configuration())


async def wait_for_object(fake: FakeKubeApiServer, plural: str, name: str) -> dict[str, Any]:
    for _ in range(1000):
        obj = fake.get(plural, NAMESPACE, name)
        if obj is not None:
            return obj
        await asyncio.sleep(0.01)
    raise TimeoutError(name)


def ready_status(name: str, generation: int = 1) -> dict[str, Any]:
    return {
        "url": f"http://{name}.{NAMESPACE}.example.com",
        "observedGeneration": generation,
        "conditions": [
            {"type": "PredictorReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    }


async def test_the_deployer_creates_rolls_lists_and_deletes_an_inferenceservice(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    model: ArtifactRef,
    tmp_path: Path,
    isvc_template: str,
) -> None:
    deployments = deployments_for(fake, store, data_dir, isvc_template, tmp_path)
    await deployments.start()
    options = DeployOptions(
        min_replicas=1, max_replicas=4, concurrency_target=8, max_batch_size=16, ready_timeout_s=10
    )
    spec = DeploySpec("sentiment", model, options, run_id="run-abc123")
    deploying = asyncio.create_task(deployments.deploy(spec))
    isvc = await wait_for_object(fake, "inferenceservices", "sentiment")
    await asyncio.sleep(5 * POLL_S)
    assert not deploying.done()  # waits for Ready

    (post,) = fake.requests("POST", "inferenceservices")
    assert post.path == f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices"
    validate(post.body)
    meta = post.body["metadata"]
    assert (meta["name"], meta["namespace"]) == ("sentiment", NAMESPACE)
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "prompt2model"
    assert meta["labels"]["prompt2model/deployment"] == "sentiment"
    predictor = post.body["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 8)
    container = predictor["containers"][0]
    assert container["image"] == IMAGE and container["command"] == ["p2m"]
    folder = store.path(model.uri).absolute()
    assert str(folder).endswith(f"artifacts/objects/{model.sha256[:2]}/{model.sha256}")
    assert container["args"] == [
        "serve-model",
        "--model",
        str(folder),
        "--name",
        "sentiment",
        "--host",
        "0.0.0.0",
        "--http-port",
        "8080",
        "--grpc-port",
        "8081",
        "--max-batch-size",
        "16",
        "--max-latency-ms",
        "20",
        # auto resolved by the deployer: this folder has no tokenizer or weights to export.
        "--runtime",
        "transformers",
        "--precision",
        "f32",
    ]
    assert meta["annotations"]["prompt2model/runtime"] == "transformers f32"
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]

    # KServe reports Ready: the endpoint is the InferenceService's URL.
    fake.set_status("inferenceservices", NAMESPACE, "sentiment", ready_status("sentiment"))
    outcome = await asyncio.wait_for(deploying, 10)
    endpoint = outcome.endpoint
    base = "http://sentiment.p2m-test.example.com"
    assert (endpoint.ready, endpoint.message, outcome.replaced) == (True, "", False)
    assert endpoint.base_url == base and endpoint.kind == KIND_INFERENCESERVICE
    assert endpoint.v1_predict_url == f"{base}/v1/models/sentiment:predict"
    assert endpoint.v2_infer_url == f"{base}/v2/models/sentiment/infer"
    assert endpoint.k8s_namespace == NAMESPACE and endpoint.model == model
    assert endpoint.runtime == "transformers f32"

    # The same again writes nothing; other options roll it (a PUT of the new spec).
    again = await deployments.deploy(spec)
    assert again.endpoint.ready and not again.replaced
    assert [r.method for r in fake.requests(plural="inferenceservices")].count("PUT") == 0
    wider = replace(spec, options=replace(options, max_replicas=8, concurrency_target=2))
    rolling = asyncio.create_task(deployments.deploy(wider))
    put = await asyncio.to_thread(wait_until, lambda: fake.requests("PUT", "inferenceservices"))
    validate(put[0].body)
    rolled = fake.get("inferenceservices", NAMESPACE, "sentiment")
    assert rolled is not None and rolled["metadata"]["generation"] == 2
    assert rolled["spec"]["predictor"]["maxReplicas"] == 8
    await asyncio.sleep(5 * POLL_S)
    assert not rolling.done()  # Ready is still the old generation's
    fake.set_status("inferenceservices", NAMESPACE, "sentiment", ready_status("sentiment", 2))
    outcome = await asyncio.wait_for(rolling, 10)
    assert outcome.replaced and outcome.endpoint.ready

    page = await deployments.list()
    assert [e.name for e in page.endpoints] == ["sentiment"] and page.next_page_token == ""
    (listed,) = fake.requests("GET", "inferenceservices")[-1:]
    assert listed.query["labelSelector"] == ["app.kubernetes.io/managed-by=prompt2model"]

    removed = await deployments.undeploy("sentiment")
    assert removed is not None and removed.name == "sentiment"
    (delete,) = fake.requests("DELETE", "inferenceservices")
    assert delete.path.endswith("/inferenceservices/sentiment")
    assert fake.objects("inferenceservices") == []
    assert await deployments.undeploy("sentiment", allow_missing=True) is None
    with pytest.raises(NotFound):
        await deployments.undeploy("sentiment")
    assert isvc["metadata"]["generation"] == 1
    await deployments.close()


async def test_a_deployment_not_ready_in_time_says_why(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    model: ArtifactRef,
    tmp_path: Path,
    isvc_template: str,
) -> None:
    deployments = deployments_for(fake, store, data_dir, isvc_template, tmp_path)
    deploying = asyncio.create_task(
        deployments.deploy(DeploySpec("slow", model, DeployOptions(ready_timeout_s=0.5)))
    )
    await wait_for_object(fake, "inferenceservices", "slow")
    fake.set_status(
        "inferenceservices",
        NAMESPACE,
        "slow",
        {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "RevisionMissing",
                    "message": "Revision slow-predictor-00001 failed to pull the image",
                }
            ],
        },
    )
    outcome = await asyncio.wait_for(deploying, 10)
    assert not outcome.endpoint.ready and outcome.endpoint.base_url == ""
    assert outcome.endpoint.message == (
        "not ready after 0.5s: not ready: RevisionMissing: Revision slow-predictor-00001 "
        "failed to pull the image"
    )
    await deployments.close()


async def test_a_runtime_template_serves_the_artifact_from_the_pvc(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    model: ArtifactRef,
    tmp_path: Path,
    templates: dict[str, dict[str, Any]],
) -> None:
    runtime = runtime_template(templates["inferenceservice"])
    with pytest.raises(InvalidInput) as info:
        deployments_for(fake, store, data_dir, runtime, tmp_path)
    assert info.value.field == "artifacts_pvc"
    deployments = deployments_for(
        fake, store, data_dir, runtime, tmp_path, artifacts_pvc="p2m-data"
    )
    deploying = asyncio.create_task(
        deployments.deploy(DeploySpec("hf", model, DeployOptions(0, 2, 5, ready_timeout_s=5)))
    )
    await wait_for_object(fake, "inferenceservices", "hf")
    fake.set_status("inferenceservices", NAMESPACE, "hf", ready_status("hf"))
    assert (await asyncio.wait_for(deploying, 10)).endpoint.ready
    (post,) = fake.requests("POST", "inferenceservices")
    validate(post.body)
    predictor = post.body["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == (
        f"pvc://p2m-data/artifacts/objects/{model.sha256[:2]}/{model.sha256}"
    )
    assert predictor["model"]["modelFormat"] == {"name": "huggingface"}
    assert "containers" not in predictor
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleTarget"]) == (
        0,
        2,
        5,
    )
    await deployments.close()


async def test_an_inferenceservice_p2m_did_not_create_is_left_alone(
    fake: FakeKubeApiServer,
    store: ArtifactStore,
    data_dir: Path,
    model: ArtifactRef,
    tmp_path: Path,
    isvc_template: str,
) -> None:
    foreign = yaml.safe_load(isvc_template)
    foreign["metadata"].update(name="theirs", namespace=NAMESPACE)
    fake.put(foreign, "inferenceservices")
    deployments = deployments_for(fake, store, data_dir, isvc_template, tmp_path)
    with pytest.raises(AlreadyExists, match="not created by prompt2model"):
        await deployments.deploy(DeploySpec("theirs", model))
    with pytest.raises(NotFound):
        await deployments.undeploy("theirs")
    assert (await deployments.list()).endpoints == ()
    assert fake.requests("DELETE") == [] and fake.requests("PUT") == []
    await deployments.close()


def test_the_fake_refuses_what_the_crd_refuses(objects: CustomObjects, isvc_template: str) -> None:
    bad = yaml.safe_load(isvc_template)
    bad["metadata"]["name"] = "bad"
    bad["spec"]["predictor"]["scaleMetric"] = "latency"  # not in the CRD's enum
    with pytest.raises(SchemaError):
        validate(bad)
    with pytest.raises(InvalidInput, match="the cluster refused it \\(422\\)"):
        objects.create(INFERENCESERVICE, bad)


# --- an unreachable cluster ----------------------------------------------------------------------


def test_an_unreachable_cluster_is_unavailable(
    store: ArtifactStore,
    data_dir: Path,
    rayjob_template: Path,
    train_job: TrainJob,
    model: ArtifactRef,
    tmp_path: Path,
    isvc_template: str,
) -> None:
    gone = FakeKubeApiServer().start()
    gone.stop()  # the port is closed now
    trainer = make_trainer(gone, store, data_dir, rayjob_template)
    with pytest.raises(Unavailable, match="the cluster cannot be reached") as info:
        trainer.train(train_job)
    assert status_for(info.value)[0] == grpc.StatusCode.UNAVAILABLE

    deployments = deployments_for(gone, store, data_dir, isvc_template, tmp_path)
    with pytest.raises(Unavailable, match="the cluster cannot be reached") as deploy_info:
        asyncio.run(deployments.deploy(DeploySpec("sentiment", model)))
    assert status_for(deploy_info.value)[0] == grpc.StatusCode.UNAVAILABLE


# --- settings and start-up -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"P2M_TRAINER_BACKEND": "slurm"}, "trainer_backend"),
        ({"P2M_DEPLOYER_BACKEND": "docker"}, "deployer_backend"),
        ({"P2M_K8S_NAMESPACE": "Not_A_Namespace"}, "k8s_namespace"),
        ({"P2M_ARTIFACTS_PVC": "-claim"}, "artifacts_pvc"),
        ({"P2M_K8S_POLL_S": "0"}, "k8s_poll_s"),
    ],
)
def test_bad_cluster_settings_name_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Settings.load(environ=env)
    assert info.value.field == field


def test_the_services_refuse_to_start_without_a_template_or_a_cluster_config(
    tmp_path: Path, rayjob_template: Path, isvc_template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2m.deployer import service as deployer_service
    from p2m.trainer import service as trainer_service

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    missing = Settings.load(
        {
            "data_dir": tmp_path / "data",
            "trainer_backend": "rayjob",
            "rayjob_template": tmp_path / "absent.yaml",
        },
        environ={},
    )
    with pytest.raises(InvalidInput) as info:
        trainer_service.build(missing)
    assert info.value.field == "rayjob_template"
    (tmp_path / "isvc.yaml").write_text(isvc_template)
    for build, settings in (
        (trainer_service.build, {"trainer_backend": "rayjob", "rayjob_template": rayjob_template}),
        (
            deployer_service.build,
            {"deployer_backend": "kserve", "inferenceservice_template": tmp_path / "isvc.yaml"},
        ),
    ):
        loaded = Settings.load({"data_dir": tmp_path / "data", **settings}, environ={})
        with pytest.raises(FailedPrecondition, match="no Kubernetes configuration"):
            build(loaded)
