"""A thin wrapper over the Kubernetes custom-objects API that speaks p2m's errors.

``CustomObjects`` creates, reads, replaces, patches, deletes and lists namespaced custom objects
(RayJobs, InferenceServices) in one namespace. The ``kubernetes`` client is synchronous:
``CustomObjects`` is for code already in a worker thread (the trainer), ``AsyncCustomObjects``
runs each call in a worker thread for asyncio code (the deployer). Every failure becomes a p2m
error: 404 NotFound, 409 AlreadyExists, 400/422 InvalidInput, 401/403 FailedPrecondition, 5xx
and an unreachable API server Unavailable ("the cluster cannot be reached").
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config

from p2m.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    P2MError,
    Unavailable,
)

log = logging.getLogger(__name__)

# Labels and annotations on every object p2m creates.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "prompt2model"
LABEL_PREFIX = "prompt2model/"
# Seconds to connect to the API server, and to wait for its answer.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Resource:
    """A kind of custom object, as its REST paths name it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` of its manifests, e.g. ``ray.io/v1``."""
        return f"{self.group}/{self.version}"


RAYJOB = Resource("ray.io", "v1", "rayjobs", "RayJob")
INFERENCESERVICE = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")


def load_configuration(
    configuration: client.Configuration | None = None,
    environ: Mapping[str, str] | None = None,
) -> client.Configuration:
    """The client configuration: ``configuration`` when given (tests), else the pod's own.

    In a pod (``KUBERNETES_SERVICE_HOST`` set) the service account's token and CA are used;
    elsewhere the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``, current context).

    Raises:
        FailedPrecondition: Neither can be loaded.
    """
    if configuration is not None:
        return configuration
    env = os.environ if environ is None else environ
    loaded = client.Configuration()
    try:
        if env.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=loaded)
        else:
            config.load_kube_config(client_configuration=loaded)
    except (config.ConfigException, OSError, TypeError, ValueError) as error:
        raise FailedPrecondition(f"no Kubernetes configuration could be loaded: {error}") from None
    return loaded


def load_template(path: Path, resource: Resource, setting: str) -> dict[str, Any]:
    """Read a manifest template (one YAML document of ``resource``'s kind).

    Raises:
        InvalidInput: The file is missing, not YAML, or not a ``resource`` manifest
            (``setting`` names the setting that points to it).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidInput(setting, f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InvalidInput(setting, f"{path} is not YAML: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        raise InvalidInput(setting, f"{path} is not a manifest with a spec")
    if data.get("apiVersion") != resource.api_version or data.get("kind") != resource.kind:
        raise InvalidInput(
            setting,
            f"{path} holds {data.get('apiVersion')}/{data.get('kind')}, "
            f"not {resource.api_version}/{resource.kind}",
        )
    return data


def fresh_copy(template: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a manifest without what the API server sets (uid, status, ...)."""
    manifest = copy.deepcopy(dict(template))
    manifest.pop("status", None)
    metadata = manifest.setdefault("metadata", {}) or {}
    for key in (
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "generateName",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "ownerReferences",
    ):
        metadata.pop(key, None)
    metadata["labels"] = dict(metadata.get("labels") or {})
    metadata["annotations"] = dict(metadata.get("annotations") or {})
    manifest["metadata"] = metadata
    return manifest


def is_managed(obj: Mapping[str, Any]) -> bool:
    """True when p2m created ``obj`` (it carries the managed-by label)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY


class CustomObjects:
    """Namespaced custom objects in one namespace (synchronous; call from a worker thread)."""

    def __init__(
        self,
        configuration: client.Configuration,
        namespace: str,
        *,
        timeout_s: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    ) -> None:
        """Talk to the API server ``configuration`` describes, in ``namespace``."""
        self.namespace = namespace
        self.host = configuration.host
        self._client = client.ApiClient(configuration)
        self._api = client.CustomObjectsApi(self._client)
        self._timeout = timeout_s

    def create(self, resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``body``; return the object as stored.

        Raises:
            AlreadyExists: An object of that name exists.
        """
        name = str((body.get("metadata") or {}).get("name", ""))
        return self._call(
            "create",
            resource,
            name,
            self._api.create_namespaced_custom_object,
            resource.group,
            resource.version,
            self.namespace,
            resource.plural,
            dict(body),
        )

    def get(self, resource: Resource, name: str) -> dict[str, Any]:
        """The object named ``name``.

        Raises:
            NotFound: There is none.
        """
        return self._call(
            "get",
            resource,
            name,
            self._api.get_namespaced_custom_object,
            resource.group,
            resource.version,
            self.namespace,
            resource.plural,
            name,
        )

    def find(self, resource: Resource, name: str) -> dict[str, Any] | None:
        """The object named ``name``, or None when there is none."""
        try:
            return self.get(resource, name)
        except NotFound:
            return None

    def replace(self, resource: Resource, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the object (its ``metadata.resourceVersion`` guards against lost updates).

        Raises:
            NotFound: There is none.
            AlreadyExists: It changed since ``body``'s resourceVersion was read.
        """
        return self._call(
            "replace",
            resource,
            name,
            self._api.replace_namespaced_custom_object,
            resource.group,
            resource.version,
            self.namespace,
            resource.plural,
            name,
            dict(body),
        )

    def patch(self, resource: Resource, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7386) to the object.

        Raises:
            NotFound: There is none.
        """
        return self._call(
            "patch",
            resource,
            name,
            self._api.patch_namespaced_custom_object,
            resource.group,
            resource.version,
            self.namespace,
            resource.plural,
            name,
            dict(patch),
        )

    def delete(self, resource: Resource, name: str) -> None:
        """Delete the object; its dependents (pods, services) are removed in the background.

        Raises:
            NotFound: There is none.
        """
        self._call(
            "delete",
            resource,
            name,
            self._api.delete_namespaced_custom_object,
            resource.group,
            resource.version,
            self.namespace,
            resource.plural,
            name,
            propagation_policy="Background",
        )

    def list(self, resource: Resource, label_selector: str = "") -> list[dict[str, Any]]:
        """The objects matching ``label_selector`` (e.g. ``a=b,c=d``), in the API's order."""
        answer = self._call(
            "list",
            resource,
            "",
            self._api.list_namespaced_custom_object,
            resource.group,
            resource.version,
            self.namespace,
            resource.plural,
            label_selector=label_selector or None,
        )
        return list(answer.get("items") or [])

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def _call(
        self, verb: str, resource: Resource, name: str, method: Any, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        what = f"{resource.kind} {self.namespace}/{name}" if name else f"{resource.kind}s"
        try:
            answer = method(*args, _request_timeout=self._timeout, **kwargs)
        except client.ApiException as error:
            raise api_error(verb, what, error.status, error.reason, error.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unavailable(
                f"the cluster cannot be reached ({self.host}) to {verb} {what}: {error}"
            ) from None
        return answer if isinstance(answer, dict) else {}


def api_error(
    verb: str, what: str, status: int | None, reason: str | None, body: str | bytes | None
) -> P2MError:
    """The p2m error for an API server's error answer (status code and Status body)."""
    message = _status_message(body) or reason or "no message"
    text = f"{verb} {what}: {message}"
    if status == 404:
        return NotFound(f"{what} not found")
    if status == 409:
        return AlreadyExists(f"{verb} {what}: {message}")
    if status in (400, 422):
        return InvalidInput(what, f"the cluster refused it ({status}): {message}")
    if status in (401, 403):
        return FailedPrecondition(
            f"the cluster does not allow this (HTTP {status}; check the service account's "
            f"RBAC): {text}"
        )
    if status is None or status == 429 or status >= 500:
        return Unavailable(f"the cluster answered HTTP {status}: {text}")
    return FailedPrecondition(f"the cluster answered HTTP {status}: {text}")


def _status_message(body: str | bytes | None) -> str:
    """The ``message`` of a Kubernetes Status body, or the body's start."""
    if not body:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    return str(data.get("message", ""))[:600] if isinstance(data, dict) else text[:300]


class AsyncCustomObjects:
    """``CustomObjects`` for asyncio code: each call runs in a worker thread."""

    def __init__(self, objects: CustomObjects) -> None:
        """Wrap ``objects``."""
        self.sync = objects
        self.namespace = objects.namespace

    async def create(self, resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """See ``CustomObjects.create``."""
        return await asyncio.to_thread(self.sync.create, resource, body)

    async def get(self, resource: Resource, name: str) -> dict[str, Any]:
        """See ``CustomObjects.get``."""
        return await asyncio.to_thread(self.sync.get, resource, name)

    async def find(self, resource: Resource, name: str) -> dict[str, Any] | None:
        """See ``CustomObjects.find``."""
        return await asyncio.to_thread(self.sync.find, resource, name)

    async def replace(
        self, resource: Resource, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """See ``CustomObjects.replace``."""
        return await asyncio.to_thread(self.sync.replace, resource, name, body)

    async def patch(
        self, resource: Resource, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """See ``CustomObjects.patch``."""
        return await asyncio.to_thread(self.sync.patch, resource, name, patch)

    async def delete(self, resource: Resource, name: str) -> None:
        """See ``CustomObjects.delete``."""
        await asyncio.to_thread(self.sync.delete, resource, name)

    async def list(self, resource: Resource, label_selector: str = "") -> list[dict[str, Any]]:
        """See ``CustomObjects.list``."""
        return await asyncio.to_thread(self.sync.list, resource, label_selector)

    def close(self) -> None:
        """See ``CustomObjects.close``."""
        self.sync.close()
