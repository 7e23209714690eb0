"""What every way of serving a model shares: the request, the endpoint, and the seam.

``Deployments`` is the one interface the deployer's gRPC servicer talks to. ``LocalDeployments``
(``p2m.deployer.local``) runs a KServe ModelServer process per deployment on loopback; a cluster
implementation (a KServe InferenceService per deployment) plugs in behind the same protocol.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.errors import FailedPrecondition, InvalidInput
from p2m.common.names import check_deployment_name, check_run_id
from p2m.common.ranges import Within, check_ranges
from p2m.common.student import StudentSpec
from p2m.common.types import TaskSpec
from p2m.llamacpp.runtime import AUTO, DEFAULT_PRECISION, PRECISIONS, UNSET, check_choice, resolve

MAX_REPLICAS = 100
MAX_CONCURRENCY_TARGET = 1_000
MAX_BATCH_SIZE = 1_024
MAX_LATENCY_MS = 10_000.0
MAX_READY_TIMEOUT_S = 3_600.0
MAX_PAGE_SIZE = 1_000
DEFAULT_PAGE_SIZE = 100
# Used when batching is on and no max_latency is given: long enough for concurrent callers to
# meet, short enough not to be felt next to a generation step.
DEFAULT_MAX_LATENCY_MS = 20.0
DEFAULT_READY_TIMEOUT_S = 120.0
KIND_LOCAL = "local-modelserver"
KIND_INFERENCESERVICE = "inferenceservice"


def student_model(store: ArtifactStore, ref: ArtifactRef) -> tuple[ArtifactRef, Path]:
    """The stored artifact ``ref`` names and its folder, checked to be a student model.

    Raises:
        NotFound: No such artifact.
        InvalidInput: It is not a model, or not one a student can be served from.
    """
    stored = store.ref(ref.uri)
    if stored.kind != "model":
        raise InvalidInput("model.uri", f"is a {stored.kind!r} artifact, not a model")
    folder = store.path(stored.uri)
    try:
        StudentSpec.load(folder)
    except FailedPrecondition as exc:
        raise InvalidInput("model.uri", f"is not a student model: {exc}") from exc
    return stored, folder


@dataclass(frozen=True)
class DeployOptions:
    """How to serve one deployment, with the proto's defaults applied.

    Attributes:
        min_replicas: Fewest replicas (0: scale to zero, cluster only). Locally one process runs.
        max_replicas: Most replicas (cluster only).
        concurrency_target: Requests in flight per replica the autoscaler aims at; 0: default.
        skip_demo: Serve no Gradio demo.
        max_batch_size: Most requests answered in one batch; 0 or 1: no batching.
        max_latency_ms: Longest a request waits for its batch to fill.
        ready_timeout_s: How long Deploy waits for the endpoint to answer.
        runtime: What decodes: "auto", "llama.cpp" or "transformers" (``p2m.llamacpp.runtime``).
        precision: llama.cpp's weights: "f32", "f16", "bf16", "q8_0", "q5_0" or "q4_0";
            unset (""): ``default_precision`` where llama.cpp serves, f32 where transformers does.
        default_precision: What an unset precision is where llama.cpp serves (the deployer's
            ``P2M_SERVING_PRECISION``).
    """

    min_replicas: int = 1
    max_replicas: int = 1
    concurrency_target: int = 0
    skip_demo: bool = False
    max_batch_size: int = 0
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    runtime: str = AUTO
    precision: str = UNSET
    default_precision: str = DEFAULT_PRECISION

    def __post_init__(self) -> None:
        """Check every range and name (the proto's field paths name the culprit)."""
        check_choice(self.runtime, self.precision)
        if self.default_precision not in PRECISIONS:
            raise InvalidInput("default_precision", f"must be one of {list(PRECISIONS)}")
        check_ranges(
            [
                Within("options.min_replicas", self.min_replicas, 0, MAX_REPLICAS),
                Within("options.max_replicas", self.max_replicas, 0, MAX_REPLICAS),
                Within("options.min_replicas", self.min_replicas, 0, self.max_replicas),
                Within(
                    "options.concurrency_target", self.concurrency_target, 0, MAX_CONCURRENCY_TARGET
                ),
                Within("options.batching.max_batch_size", self.max_batch_size, 0, MAX_BATCH_SIZE),
                Within(
                    "options.batching.max_latency",
                    self.max_latency_ms / 1000,
                    0,
                    MAX_LATENCY_MS / 1000,
                    unit="s",
                ),
                Within(
                    "options.ready_timeout",
                    self.ready_timeout_s,
                    0,
                    MAX_READY_TIMEOUT_S,
                    above=True,
                    unit="s",
                ),
            ]
        )

    @property
    def batching(self) -> bool:
        """True when requests are batched."""
        return self.max_batch_size > 1

    def served_as(self) -> dict[str, Any]:
        """What decides how the model is served (all but how long Deploy waits)."""
        values = asdict(self)
        values.pop("ready_timeout_s")
        values.pop("default_precision")  # served_on has set the precision
        return values

    def served_on(self, folder: Path, transformers_because: str = "") -> DeployOptions:
        """These options with the runtime resolved for the student in ``folder``.

        ``transformers_because``: a reason for ``auto`` to take transformers (a GPU predictor).

        Raises:
            InvalidInput: llama.cpp (or a precision only it has) asked for a student it cannot
                serve, naming ``options.runtime`` or ``options.precision``.
        """
        chosen = resolve(
            folder,
            self.runtime,
            self.precision,
            default_precision=self.default_precision,
            transformers_because=transformers_because,
        )
        return replace(self, runtime=chosen.runtime, precision=chosen.precision)


def serve_model_args(
    model_path: str, name: str, host: str, http_port: int, grpc_port: int, options: DeployOptions
) -> list[str]:
    """The ``p2m serve-model`` arguments that serve a model as ``options`` say (both backends)."""
    return [
        "serve-model",
        "--model",
        model_path,
        "--name",
        name,
        "--host",
        host,
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--max-batch-size",
        str(options.max_batch_size),
        "--max-latency-ms",
        f"{options.max_latency_ms:g}",
        "--runtime",
        options.runtime,
        "--precision",
        options.precision,
    ]


@dataclass(frozen=True)
class DeploySpec:
    """A checked Deploy request.

    Attributes:
        name: Deployment name (a DNS-1123 label), also the model name in the inference URLs.
        model: The model artifact to serve.
        options: How to serve it.
        task: The task, for the demo's description and examples; None when unset.
        metrics: The model's scores by metric name, shown in the demo; None when unset.
        run_id: The run this belongs to, for logs only.
    """

    name: str
    model: ArtifactRef
    options: DeployOptions = field(default_factory=DeployOptions)
    task: TaskSpec | None = None
    metrics: dict[str, float] | None = None
    run_id: str = ""

    def __post_init__(self) -> None:
        """Check the name and the run id."""
        check_deployment_name(self.name)
        check_run_id(self.run_id)


@dataclass(frozen=True)
class Endpoint:
    """Where a deployment is served and whether it answers (mirrors the proto's Endpoint)."""

    name: str
    base_url: str
    v1_predict_url: str
    v2_infer_url: str
    grpc_address: str
    demo_url: str
    kind: str
    ready: bool
    message: str
    model: ArtifactRef
    update_time: datetime
    k8s_namespace: str = ""
    runtime: str = ""


@dataclass(frozen=True)
class DeployOutcome:
    """What Deploy did: the endpoint, and whether an existing deployment was rolled."""

    endpoint: Endpoint
    replaced: bool


@dataclass(frozen=True)
class Page:
    """One page of deployments, ordered by name; ``next_page_token`` is empty on the last."""

    endpoints: tuple[Endpoint, ...]
    next_page_token: str


class Deployments(Protocol):
    """Serves model artifacts under names: the seam between the servicer and a platform."""

    async def start(self) -> None:
        """Take over what an earlier run left (adopt live deployments, restart dead ones)."""

    async def close(self) -> None:
        """Release the deployer's own resources; deployments keep serving."""

    async def deploy(self, spec: DeploySpec) -> DeployOutcome:
        """Serve ``spec.model`` as ``spec.name``; roll an existing deployment to it.

        Raises:
            NotFound: The model artifact does not exist.
            InvalidInput: The artifact is not a model.
            Unavailable: The platform cannot be reached.
        """
        ...

    async def undeploy(self, name: str, allow_missing: bool = False) -> Endpoint | None:
        """Stop serving ``name``; return it as it was, or None when missing and allowed.

        Raises:
            NotFound: No such deployment and ``allow_missing`` is false.
        """
        ...

    async def list(self, page_size: int = 0, page_token: str = "") -> Page:
        """One page of deployments ordered by name.

        Raises:
            InvalidInput: ``page_token`` was not given out by this deployer.
        """
        ...


# -- what both backends share --------------------------------------------------------------


def serving_identity(spec: DeploySpec, model_sha256: str, image: str = "") -> str:
    """Hash of what decides how a deployment serves: the same hash means nothing to change.

    The model, the serving options, the task and figures the demo shows, and (on a cluster)
    the image the predictor runs.
    """
    identity = {
        "model": model_sha256,
        "options": spec.options.served_as(),
        "task": spec.task.to_json() if spec.task is not None else None,
        "metrics": spec.metrics,
        "image": image,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class NameLocks:
    """One asyncio lock per deployment name: changes to one deployment happen one at a time."""

    def __init__(self) -> None:
        """No lock yet."""
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, name: str) -> asyncio.Lock:
        """The lock of ``name``."""
        return self._locks.setdefault(name, asyncio.Lock())


class PageTokens:
    """Page tokens naming where the next page starts, signed so that only given ones are taken.

    The key lives as long as the process: a token outlives neither it nor a restart.
    """

    def __init__(self) -> None:
        """A fresh signing key."""
        self._key = secrets.token_bytes(32)

    def token(self, name: str) -> str:
        """The token of a page that ends at ``name``."""
        payload = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
        return f"{payload}.{self._mac(payload)}"

    def name_of(self, token: str) -> str:
        """The name a token carries.

        Raises:
            InvalidInput: Not a token this process gave out.
        """
        payload, _, mac = token.partition(".")
        if not mac or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise InvalidInput("page_token", "is not a page token this deployer gave out")
        try:
            return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput("page_token", "is not a page token this deployer gave out") from exc

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()[:32]
