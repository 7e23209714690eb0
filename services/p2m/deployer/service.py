"""gRPC servicer of the deployer: checks and converts messages, calls a ``Deployments``."""

from __future__ import annotations

import logging

from google.protobuf import duration_pb2, timestamp_pb2
from grpc import aio

from p2m.common.artifacts import ArtifactStore
from p2m.common.convert import artifact_ref_from_pb, artifact_ref_to_pb, task_spec_from_pb
from p2m.common.errors import InvalidInput
from p2m.common.log import run_id_var
from p2m.common.names import check_deployment_name, check_run_id
from p2m.common.server import ServiceBinding
from p2m.common.settings import Settings
from p2m.deployer.core import (
    DEFAULT_MAX_LATENCY_MS,
    DEFAULT_READY_TIMEOUT_S,
    Deployments,
    DeployOptions,
    DeploySpec,
    Endpoint,
)
from p2m.deployer.local import LocalDeployments
from prompt2model.v1 import common_pb2, deployer_pb2, deployer_pb2_grpc

log = logging.getLogger(__name__)


def duration_seconds(value: duration_pb2.Duration, field: str) -> float:
    """A Duration as seconds.

    Raises:
        InvalidInput: Negative, or seconds and nanos of different signs or out of range.
    """
    if not 0 <= value.nanos < 1_000_000_000 or value.seconds < 0:
        raise InvalidInput(field, f"must not be negative, got {value.seconds}s {value.nanos}ns")
    return value.seconds + value.nanos / 1e9


def options_from_pb(
    message: deployer_pb2.DeployOptions,
    default_ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    defaults: DeployOptions | None = None,
) -> DeployOptions:
    """Proto options -> dataclass (zero or unset fields: the defaults), checked by it.

    ``defaults`` gives the runtime an empty field takes, and the precision an empty one
    becomes where llama.cpp serves.

    Raises:
        InvalidInput: A field out of its range (named), or a malformed duration.
    """
    min_replicas = message.min_replicas if message.HasField("min_replicas") else 1
    latency_s = duration_seconds(message.batching.max_latency, "options.batching.max_latency")
    ready_s = duration_seconds(message.ready_timeout, "options.ready_timeout")
    return DeployOptions(
        min_replicas=min_replicas,
        max_replicas=message.max_replicas or max(min_replicas, 1),
        concurrency_target=message.concurrency_target,
        skip_demo=message.skip_demo,
        max_batch_size=message.batching.max_batch_size,
        max_latency_ms=latency_s * 1000 or DEFAULT_MAX_LATENCY_MS,
        ready_timeout_s=ready_s or default_ready_timeout_s,
        runtime=message.runtime or (defaults or DeployOptions()).runtime,
        precision=message.precision,
        default_precision=(defaults or DeployOptions()).default_precision,
    )


def spec_from_pb(
    request: deployer_pb2.DeployRequest,
    default_ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    defaults: DeployOptions | None = None,
) -> DeploySpec:
    """A checked DeploySpec from a Deploy request.

    Raises:
        InvalidInput: A malformed field (named by its path in the request).
    """
    check_run_id(request.run_id)
    check_deployment_name(request.name)
    model = artifact_ref_from_pb(request.model, "model")
    options = options_from_pb(request.options, default_ready_timeout_s, defaults)
    task = task_spec_from_pb(request.task) if request.HasField("task") else None
    metrics = dict(request.metrics.values) if request.HasField("metrics") else None
    return DeploySpec(request.name, model, options, task, metrics or None, request.run_id)


def endpoint_to_pb(endpoint: Endpoint) -> common_pb2.Endpoint:
    """Endpoint dataclass -> proto."""
    update_time = timestamp_pb2.Timestamp()
    update_time.FromDatetime(endpoint.update_time)
    return common_pb2.Endpoint(
        name=endpoint.name,
        base_url=endpoint.base_url,
        v1_predict_url=endpoint.v1_predict_url,
        v2_infer_url=endpoint.v2_infer_url,
        grpc_address=endpoint.grpc_address,
        demo_url=endpoint.demo_url,
        kind=endpoint.kind,
        ready=endpoint.ready,
        message=endpoint.message,
        model=artifact_ref_to_pb(endpoint.model),
        update_time=update_time,
        k8s_namespace=endpoint.k8s_namespace,
        runtime=endpoint.runtime,
    )


class DeployerServicer(deployer_pb2_grpc.DeployerServicer):
    """Serves ``prompt2model.v1.Deployer`` over any ``Deployments``."""

    def __init__(
        self,
        deployments: Deployments,
        default_ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        defaults: DeployOptions | None = None,
    ) -> None:
        """Deploy with ``deployments``; Deploy waits ``default_ready_timeout_s`` unless told.

        ``defaults`` gives the runtime and precision of a request that leaves them empty.
        """
        self._deployments = deployments
        self._default_ready_timeout_s = default_ready_timeout_s
        self._defaults = defaults or DeployOptions()

    async def Deploy(  # noqa: N802 (gRPC method name)
        self, request: deployer_pb2.DeployRequest, context: aio.ServicerContext
    ) -> deployer_pb2.DeployResponse:
        """Serve a model (and its demo) under a name; roll the name to a new model."""
        spec = spec_from_pb(request, self._default_ready_timeout_s, self._defaults)
        run_id_var.set(spec.run_id)
        outcome = await self._deployments.deploy(spec)
        return deployer_pb2.DeployResponse(
            endpoint=endpoint_to_pb(outcome.endpoint), replaced=outcome.replaced
        )

    async def Undeploy(  # noqa: N802 (gRPC method name)
        self, request: deployer_pb2.UndeployRequest, context: aio.ServicerContext
    ) -> deployer_pb2.UndeployResponse:
        """Stop a deployment and its demo."""
        if not request.name:
            raise InvalidInput("name", "is empty")
        endpoint = await self._deployments.undeploy(request.name, request.allow_missing)
        if endpoint is None:
            return deployer_pb2.UndeployResponse(removed=False)
        return deployer_pb2.UndeployResponse(removed=True, endpoint=endpoint_to_pb(endpoint))

    async def ListDeployments(  # noqa: N802 (gRPC method name)
        self, request: deployer_pb2.ListDeploymentsRequest, context: aio.ServicerContext
    ) -> deployer_pb2.ListDeploymentsResponse:
        """One page of deployments, ordered by name."""
        page = await self._deployments.list(request.page_size, request.page_token)
        return deployer_pb2.ListDeploymentsResponse(
            endpoints=[endpoint_to_pb(e) for e in page.endpoints],
            next_page_token=page.next_page_token,
        )


def build(settings: Settings) -> ServiceBinding:
    """The deployer's binding: local processes, or InferenceServices on the cluster.

    ``deployer_backend="local"`` keeps its registry under ``<data_dir>/deployments``;
    ``"kserve"`` creates a KServe InferenceService per deployment.

    Raises:
        InvalidInput: With ``kserve``, the InferenceService template is unusable.
        FailedPrecondition: With ``kserve``, no Kubernetes configuration can be loaded.
    """
    store = ArtifactStore(settings.artifacts_dir)
    deployments: Deployments
    if settings.deployer_backend == "kserve":
        from p2m.deployer.cluster import ClusterDeployments

        deployments = ClusterDeployments.from_settings(settings, store)
    else:
        deployments = LocalDeployments(store, settings.deployments_dir)
    defaults = DeployOptions(
        runtime=settings.serving_runtime, default_precision=settings.serving_precision
    )
    servicer = DeployerServicer(deployments, defaults=defaults)
    return ServiceBinding(
        full_name=deployer_pb2.DESCRIPTOR.services_by_name["Deployer"].full_name,
        register=lambda server: deployer_pb2_grpc.add_DeployerServicer_to_server(servicer, server),
        start=deployments.start,
        stop=deployments.close,
    )
