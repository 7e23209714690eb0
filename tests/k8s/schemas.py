"""Schema validators for every Kubernetes object the project renders or builds.

No cluster runs here, so objects are checked against the real schemas instead:

- built-in kinds (Deployment, Service, Role, ...) against the strict OpenAPI schemas that
  PyPI ``kubernetes-validate`` bundles (unknown fields rejected), for each Kubernetes version
  the chart supports (``K8S_VERSIONS``: the oldest supported and the newest the package knows);
- custom resources (KubeRay ``RayJob``/``RayCluster``, KServe ``InferenceService``,
  ``ServingRuntime``, ``ClusterServingRuntime``) against the ``openAPIV3Schema`` of their real
  CRDs in ``$P2M_SHARED_DATA/k8s/crds`` read as the API server reads a structural schema:
  unknown fields rejected except under ``x-kubernetes-preserve-unknown-fields: true``,
  ``x-kubernetes-int-or-string`` accepting both, ``nullable`` honoured; their ``metadata`` is
  checked against the built-in ``ObjectMeta``. CEL rules (``x-kubernetes-validations``) are not
  evaluated;
- ``skaffold.yaml`` against the skaffold JSON schema in ``$P2M_SHARED_DATA/k8s/schemas``.

Each validator raises ``SchemaError`` whose message lists every problem with its path, e.g.
``Deployment/p2m-parser [k8s 1.30]: spec.template.spec.containers[0].imagePullPolicy: ...``.

Usage::

    from tests.k8s.schemas import SchemaError, validate, validate_all, validate_skaffold

    validate(rayjob_dict)              # one object (a plain dict, as YAML/JSON would load)
    validate_all(load_documents(text))  # every document of a multi-document YAML stream
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from packaging.version import Version
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
NEWEST_K8S = kv.major_minor(kv.latest_version())
# The chart supports Kubernetes 1.30 and later; objects are checked against both ends.
K8S_VERSIONS: tuple[str, ...] = ("1.30", NEWEST_K8S)

# kind -> CRD file (under <shared data>/k8s/crds/)
CRD_FILES = {
    "RayJob": "ray.io_rayjobs.yaml.gz",
    "RayCluster": "ray.io_rayclusters.yaml.gz",
    "InferenceService": "serving.kserve.io_inferenceservices.yaml.gz",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml.gz",
    "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml.gz",
}
SKAFFOLD_SCHEMA = "skaffold-v4beta14.json.gz"
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_MAX_MESSAGE = 300


class SchemaError(Exception):
    """One or more objects do not match their schema; ``problems`` lists each one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} schema problem(s):\n  " + "\n  ".join(problems))


def shared_data_dir() -> Path:
    """The real data folder: ``$P2M_SHARED_DATA`` (set by the Makefile), else ../shared/data."""
    return Path(os.environ.get("P2M_SHARED_DATA") or REPO.parent / "shared" / "data")


def load_documents(text: str) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML stream (e.g. ``helm template`` output)."""
    return [doc for doc in yaml.load_all(text, Loader=_loader()) if doc]


def validate(obj: dict[str, Any], k8s_versions: Iterable[str] = K8S_VERSIONS) -> None:
    """Validate one Kubernetes object (a plain dict) against its schema.

    Args:
        obj: The object, as loaded from YAML or JSON (camelCase keys).
        k8s_versions: Kubernetes versions ("1.30") a built-in kind is checked against; custom
            resources are checked once, against their CRD.

    Raises:
        SchemaError: Every problem found, each with the object and the field's path.
    """
    problems = list(_problems(obj, tuple(k8s_versions)))
    if problems:
        raise SchemaError(problems)


def validate_all(
    objs: Iterable[dict[str, Any]], k8s_versions: Iterable[str] = K8S_VERSIONS
) -> None:
    """Validate several objects, reporting the problems of all of them at once.

    Raises:
        SchemaError: Every problem of every object.
    """
    versions = tuple(k8s_versions)
    problems = [problem for obj in objs for problem in _problems(obj, versions)]
    if problems:
        raise SchemaError(problems)


def validate_skaffold(doc: dict[str, Any]) -> None:
    """Validate a ``skaffold.yaml`` document against the skaffold/v4beta14 JSON schema.

    Raises:
        SchemaError: Every problem, with its path.
    """
    errors = _skaffold_validator().iter_errors(doc)
    problems = [f"skaffold.yaml: {_where(e)}: {_message(e)}" for e in errors]
    if problems:
        raise SchemaError(sorted(problems))


def _problems(obj: Any, versions: tuple[str, ...]) -> Iterator[str]:
    if not isinstance(obj, dict):
        yield f"not an object: {type(obj).__name__}"
        return
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    label = f"{kind}/{name or '?'}"
    if not isinstance(kind, str) or not isinstance(api_version, str):
        yield f"{label}: apiVersion and kind must be strings"
        return
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        yield f"{label}: metadata.name is required"
    if kind in CRD_FILES:
        yield from _custom_resource_problems(obj, label)
        return
    for version in versions:
        validator = _builtin_validator(kind, api_version, version)
        if validator is None:
            yield f"{label} [k8s {version}]: no schema for kind {kind} in {api_version}"
            continue
        for error in validator.iter_errors(obj):
            yield f"{label} [k8s {version}]: {_where(error)}: {_message(error)}"


def _custom_resource_problems(obj: dict[str, Any], label: str) -> Iterator[str]:
    group, kind, versions = _crd(obj["kind"])
    api_group, _, api_version = obj["apiVersion"].rpartition("/")
    if api_group != group or api_version not in versions:
        yield f"{label}: apiVersion {obj['apiVersion']!r} is not served by the {kind} CRD"
        return
    for error in versions[api_version].iter_errors(obj):
        yield f"{label} [CRD {obj['apiVersion']}]: {_where(error)}: {_message(error)}"
    if isinstance(obj.get("metadata"), dict):
        for error in _object_meta_validator().iter_errors(obj["metadata"]):
            yield f"{label} [ObjectMeta]: {_where(error, 'metadata')}: {_message(error)}"


# --- built-in kinds: kubernetes-validate's bundled strict schemas -------------------------------


def _schema_dir(version: str) -> str:
    """kubernetes-validate's strict schema folder for the newest release not after ``version``."""
    wanted = Version(kv.major_minor(version.removeprefix("v")))
    known = [v for v in kv.all_versions() if Version(kv.major_minor(v)) <= wanted]
    if not known or wanted > Version(NEWEST_K8S):
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return f"v{known[-1]}-local-strict"


@functools.cache
def _definitions(schema_dir: str) -> Resource[Any]:
    contents = kv.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", "")
    return Resource.from_contents(contents)


@functools.cache
def _builtin_validator(kind: str, api_version: str, version: str) -> Any:
    """The strict validator kubernetes-validate uses, kept to list every error (or None)."""
    schema_dir = _schema_dir(version)
    # rbac.authorization.k8s.io/v1 -> rbac-v1, apps/v1 -> apps-v1, v1 -> v1
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv.schema_contents(
            f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json", version
        )
    except FileNotFoundError:
        return None
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = _definitions(schema_dir) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _object_meta_validator() -> Any:
    """Strict ``ObjectMeta`` of the newest Kubernetes, for the metadata of custom resources."""
    definitions = _definitions(_schema_dir(NEWEST_K8S))
    schema = {"$ref": f"{definitions.contents['$id']}#/$defs/{_OBJECT_META}"}
    registry: Registry[Any] = definitions @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


# --- custom resources: the real CRDs, read as structural schemas -------------------------------


@functools.cache
def _crd(kind: str) -> tuple[str, str, dict[str, Any]]:
    """(group, kind, {version: validator}) of the CRD that defines ``kind``."""
    path = shared_data_dir() / "k8s" / "crds" / CRD_FILES[kind]
    if not path.exists():
        raise FileNotFoundError(f"CRD for {kind} not found at {path}; set P2M_SHARED_DATA")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        crd = yaml.load(handle, Loader=_loader())
    validators = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served", True):
            continue
        schema = _structural(version["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"type": "object"}  # checked as ObjectMeta instead
        schema["properties"]["apiVersion"] = {"type": "string"}
        schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
        validators[version["name"]] = jsonschema.Draft4Validator(schema)
    return crd["spec"]["group"], crd["spec"]["names"]["kind"], validators


def _structural(node: Any) -> Any:
    """A CRD schema node made strict the way the API server applies it.

    Objects reject fields they do not declare (the server prunes them, and strict field
    validation reports them) unless ``x-kubernetes-preserve-unknown-fields`` is true;
    ``x-kubernetes-int-or-string`` takes an integer or a string; ``nullable`` allows null;
    an embedded resource also takes apiVersion, kind and metadata.
    """
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _structural(value) for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    is_object = out.get("type") == "object"
    if (
        is_object
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# --- skaffold -----------------------------------------------------------------------------------


@functools.cache
def _skaffold_validator() -> Any:
    path = shared_data_dir() / "k8s" / "schemas" / SKAFFOLD_SCHEMA
    if not path.exists():
        raise FileNotFoundError(f"skaffold schema not found at {path}; set P2M_SHARED_DATA")
    schema = json.loads(gzip.decompress(path.read_bytes()))
    return jsonschema.validators.validator_for(schema)(schema)


# --- helpers ------------------------------------------------------------------------------------


def _loader() -> type[yaml.SafeLoader]:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _where(error: jsonschema.ValidationError, prefix: str = "") -> str:
    """``spec.containers[0].image`` for an error's absolute path ("(root)" for the object)."""
    out = prefix
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _message(error: jsonschema.ValidationError) -> str:
    """The error's message; for anyOf/oneOf, the most specific sub-error."""
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        deeper = _where(best) != _where(error)
        message = f"{best.message} (at {_where(best)})" if deeper else best.message
    else:
        message = error.message
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + "..."
