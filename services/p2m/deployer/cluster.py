"""Deployments on the cluster: a KServe InferenceService per name (``deployer_backend=kserve``).

Deploy builds the InferenceService from the chart's template (see ``p2m.deployer.inferenceservice``
for the two ways it serves), creates it, or replaces the existing one when the model or the
options changed (KServe rolls it: the old revision serves until the new one is ready), then
waits up to the ready timeout for its ``Ready`` condition. The cluster holds all the state: the
InferenceServices labelled ``app.kubernetes.io/managed-by=prompt2model`` are the deployments,
so a restarted deployer (or a second replica) sees the same ones. No Gradio demo runs per
deployment here (``demo_url`` is empty).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.errors import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    P2MError,
)
from p2m.common.names import is_deployment_name
from p2m.common.settings import Settings
from p2m.deployer.core import (
    DEFAULT_PAGE_SIZE,
    KIND_INFERENCESERVICE,
    MAX_PAGE_SIZE,
    DeployOutcome,
    DeploySpec,
    Endpoint,
    NameLocks,
    Page,
    PageTokens,
    serving_identity,
    student_model,
)
from p2m.deployer.inferenceservice import (
    ANNOTATION_RUNTIME,
    ANNOTATION_SERVED_AS,
    ANNOTATION_UPDATE_TIME,
    MODE_RUNTIME,
    build_inferenceservice,
    model_of,
    predictor_gpus,
    predictor_mode,
    readiness,
    storage_uri,
)
from p2m.k8s.api import (
    INFERENCESERVICE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    AsyncCustomObjects,
    CustomObjects,
    is_managed,
    load_configuration,
    load_template,
)

log = logging.getLogger(__name__)

REPLACE_ATTEMPTS = 3  # a replace that lost a race with KServe's own writes is tried again


class ClusterDeployments:
    """``Deployments`` as KServe InferenceServices in one namespace."""

    def __init__(
        self,
        objects: AsyncCustomObjects,
        store: ArtifactStore,
        template: Mapping[str, Any],
        data_dir: Path,
        *,
        image: str = "",
        artifacts_pvc: str = "",
        poll_s: float = 2.0,
    ) -> None:
        """Serve artifacts of ``store`` as InferenceServices built from ``template``.

        Args:
            objects: The custom-objects API, in the namespace deployments go to.
            store: Where model artifacts are (on the data volume).
            template: The InferenceService manifest the chart rendered.
            data_dir: The data dir: where the predictor pods mount the data volume.
            image: The project predictor's image; empty: the template's.
            artifacts_pvc: The claim of the data volume (needed by a runtime template).
            poll_s: Seconds between two reads of an InferenceService's status.

        Raises:
            InvalidInput: A runtime template without ``artifacts_pvc``.
        """
        if predictor_mode(template) == MODE_RUNTIME and not artifacts_pvc:
            raise InvalidInput(
                "artifacts_pvc", "is needed: the InferenceService template uses a KServe runtime"
            )
        self._objects = objects
        self._store = store
        self._template = template
        self._data_dir = data_dir.absolute()
        self._image = image
        self._pvc = artifacts_pvc
        self._poll_s = poll_s
        self._lock = NameLocks()
        self._tokens = PageTokens()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: ArtifactStore,
        configuration: client.Configuration | None = None,
    ) -> ClusterDeployments:
        """The deployments ``settings`` describe.

        Raises:
            InvalidInput: The template cannot be read, is not an InferenceService, or needs
                ``artifacts_pvc``.
            FailedPrecondition: No Kubernetes configuration can be loaded.
        """
        template = load_template(
            settings.inferenceservice_template, INFERENCESERVICE, "inferenceservice_template"
        )
        objects = CustomObjects(load_configuration(configuration), settings.k8s_namespace)
        return cls(
            AsyncCustomObjects(objects),
            store,
            template,
            settings.data_dir,
            image=settings.image,
            artifacts_pvc=settings.artifacts_pvc,
            poll_s=settings.k8s_poll_s,
        )

    # -- the Deployments protocol ---------------------------------------------------------

    async def start(self) -> None:
        """Nothing to adopt (the cluster keeps the deployments); log what is there."""
        try:
            found = await self._managed()
        except P2MError as exc:  # the service still starts; calls answer the error
            log.warning("cannot list InferenceServices: %s", exc)
            return
        where = {"count": len(found), "namespace": self._objects.namespace}
        log.info("deployments on the cluster", extra=where)

    async def close(self) -> None:
        """Release the API client; the InferenceServices keep serving."""
        self._objects.close()

    async def deploy(self, spec: DeploySpec) -> DeployOutcome:
        """Create or roll the InferenceService ``spec.name`` and wait for it to be ready.

        The same model with the same options again writes nothing. When the ready timeout
        passes first, the endpoint says not ready and why (KServe keeps rolling; during a roll
        the previous model serves meanwhile).

        Raises:
            NotFound: The model artifact is not in the store.
            InvalidInput: The artifact is not a student model, or the cluster refused the
                manifest.
            AlreadyExists: An InferenceService of that name exists that p2m did not create.
            Unavailable: The cluster cannot be reached.
        """
        model, folder = student_model(self._store, spec.model)
        on_gpu = "a GPU predictor (the llama.cpp wheel is CPU-only)"
        on_gpu = on_gpu if predictor_gpus(self._template) > 0 else ""
        spec = replace(spec, options=spec.options.served_on(folder, on_gpu))
        served_as = serving_identity(spec, model.sha256, self._image)
        async with self._lock(spec.name):
            current = await self._objects.find(INFERENCESERVICE, spec.name)
            if current is not None and not is_managed(current):
                raise AlreadyExists(
                    f"InferenceService {self._objects.namespace}/{spec.name} exists and was not "
                    "created by prompt2model"
                )
            replaced = False
            if current is None:
                manifest = self._manifest(spec, model, folder, served_as)
                obj = await self._objects.create(INFERENCESERVICE, manifest)
                log.info("created InferenceService", extra=_log_fields(obj, spec.run_id))
            elif _annotation(current, ANNOTATION_SERVED_AS) == served_as:
                obj = current
            else:
                obj = await self._replace(spec, model, folder, served_as)
                replaced = True
                log.info("rolled InferenceService", extra=_log_fields(obj, spec.run_id))
            obj, ready, why = await self._wait_ready(spec.name, obj, spec.options.ready_timeout_s)
            return DeployOutcome(self._endpoint(obj, ready, why), replaced)

    async def undeploy(self, name: str, allow_missing: bool = False) -> Endpoint | None:
        """Delete the InferenceService ``name``; return it as it was.

        Raises:
            NotFound: There is none (that p2m created) and ``allow_missing`` is false.
        """
        obj = None
        if is_deployment_name(name):
            async with self._lock(name):
                obj = await self._objects.find(INFERENCESERVICE, name)
                if obj is not None and is_managed(obj):
                    ready, why = readiness(obj)
                    try:
                        await self._objects.delete(INFERENCESERVICE, name)
                    except NotFound:
                        obj = None
                    else:
                        log.info("deleted InferenceService", extra=_log_fields(obj, ""))
                        return self._endpoint(obj, ready, why)
        if allow_missing:
            return None
        raise NotFound(f"no deployment named {name[:60]!r}")

    async def list(self, page_size: int = 0, page_token: str = "") -> Page:
        """One page of the InferenceServices p2m created, ordered by name.

        Raises:
            InvalidInput: ``page_size`` out of 0..1000, or a malformed page token.
        """
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidInput("page_size", f"must be within 0..{MAX_PAGE_SIZE}, got {page_size}")
        after = self._tokens.name_of(page_token) if page_token else ""
        found = sorted(await self._managed(), key=_name)
        found = [obj for obj in found if _name(obj) > after]
        size = page_size or DEFAULT_PAGE_SIZE
        page, more = found[:size], len(found) > size
        endpoints = tuple(self._endpoint(obj, *readiness(obj)) for obj in page)
        return Page(endpoints, self._tokens.token(_name(page[-1])) if more else "")

    # -- helpers ----------------------------------------------------------------------------

    def _manifest(
        self, spec: DeploySpec, model: ArtifactRef, folder: Path, served_as: str
    ) -> dict[str, Any]:
        folder = folder.absolute()
        try:
            relative = folder.relative_to(self._data_dir).as_posix()
        except ValueError:
            relative = f"artifacts/objects/{model.sha256[:2]}/{model.sha256}"
        return build_inferenceservice(
            self._template,
            name=spec.name,
            namespace=self._objects.namespace,
            model=model,
            model_path=folder,
            model_uri=storage_uri(self._pvc, relative) if self._pvc else "",
            options=spec.options,
            image=self._image,
            served_as=served_as,
            update_time=datetime.now(UTC).isoformat(),
            run_id=spec.run_id,
        )

    async def _replace(
        self, spec: DeploySpec, model: ArtifactRef, folder: Path, served_as: str
    ) -> dict[str, Any]:
        """PUT the new manifest over the current object (again when it changed meanwhile)."""
        for attempt in range(1, REPLACE_ATTEMPTS + 1):
            current = await self._objects.get(INFERENCESERVICE, spec.name)
            manifest = self._manifest(spec, model, folder, served_as)
            manifest["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            try:
                return await self._objects.replace(INFERENCESERVICE, spec.name, manifest)
            except AlreadyExists:
                if attempt == REPLACE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait_ready(
        self, name: str, obj: dict[str, Any], timeout_s: float
    ) -> tuple[dict[str, Any], bool, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            ready, why = readiness(obj)
            if ready:
                return obj, True, ""
            if loop.time() >= deadline:
                return obj, False, f"not ready after {timeout_s:g}s: {why}"
            await asyncio.sleep(min(self._poll_s, max(0.0, deadline - loop.time())))
            obj = await self._objects.get(INFERENCESERVICE, name)

    async def _managed(self) -> builtins.list[dict[str, Any]]:
        return await self._objects.list(INFERENCESERVICE, f"{LABEL_MANAGED_BY}={MANAGED_BY}")

    def _endpoint(self, obj: Mapping[str, Any], ready: bool, why: str) -> Endpoint:
        name = _name(obj)
        base = str((obj.get("status") or {}).get("url") or "").rstrip("/")
        model = model_of(obj) or ArtifactRef("", "", 0, "model")
        stamp = _annotation(obj, ANNOTATION_UPDATE_TIME)
        try:
            update_time = datetime.fromisoformat(stamp) if stamp else _created(obj)
        except ValueError:
            update_time = _created(obj)
        return Endpoint(
            name=name,
            base_url=base,
            v1_predict_url=f"{base}/v1/models/{name}:predict" if base else "",
            v2_infer_url=f"{base}/v2/models/{name}/infer" if base else "",
            grpc_address="",
            demo_url="",
            kind=KIND_INFERENCESERVICE,
            ready=ready,
            message="" if ready else why,
            model=model,
            update_time=update_time,
            k8s_namespace=self._objects.namespace,
            runtime=_annotation(obj, ANNOTATION_RUNTIME),
        )


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _annotation(obj: Mapping[str, Any], key: str) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(key, ""))


def _created(obj: Mapping[str, Any]) -> datetime:
    stamp = str((obj.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


def _log_fields(obj: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    model = model_of(obj)
    return {"deployment": _name(obj), "model_uri": model.uri if model else "", "run_id": run_id}
