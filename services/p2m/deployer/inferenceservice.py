"""The KServe InferenceService of one deployment, built from the chart's template.

The chart renders a complete InferenceService into ``settings.inferenceservice_template``; its
``spec.predictor`` decides how the model is served:

- **The project's predictor** (the default: ``predictor.containers``): the first container runs
  ``p2m serve-model --model <data_dir>/artifacts/objects/<sha[:2]>/<sha> --name <name> --host
  0.0.0.0 --http-port 8080 --grpc-port 8081`` (the HTTP port is the container's first declared
  port when the template declares one) from ``settings.image`` (or the template's image),
  reading the artifact in place from the data volume the template mounts at the data dir. It
  decodes exactly as the evaluator measured (the instruction, token limits and decoding
  defaults of ``p2m_student.json``), batches requests, and answers v1 and v2 REST.
- **A KServe runtime** (``predictor.model``, e.g. ``modelFormat: {name: huggingface}``): the
  model's ``storageUri`` is set to ``pvc://<artifacts_pvc>/artifacts/objects/<sha[:2]>/<sha>``
  and the runtime serves the folder's weights as they are (without the student's instruction
  and decoding settings, so outputs can differ from what was measured).

Either way the name, namespace, labels and the autoscaling fields (``minReplicas``,
``maxReplicas``, ``scaleMetric: concurrency``, ``scaleTarget``) are set per deployment, and
annotations record the model and a hash of what was asked, so an unchanged Deploy writes
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from p2m.common.artifacts import ArtifactRef
from p2m.common.errors import InvalidInput
from p2m.deployer.core import DeployOptions, serve_model_args
from p2m.k8s.api import LABEL_MANAGED_BY, LABEL_PREFIX, MANAGED_BY, fresh_copy

HTTP_PORT = 8080
GRPC_PORT = 8081
CONTAINER_NAME = "kserve-container"  # the name KServe gives a predictor's model container
LABEL_DEPLOYMENT = f"{LABEL_PREFIX}deployment"
ANNOTATION_MODEL = f"{LABEL_PREFIX}model"  # the ArtifactRef as JSON
ANNOTATION_SERVED_AS = f"{LABEL_PREFIX}served-as"
ANNOTATION_UPDATE_TIME = f"{LABEL_PREFIX}update-time"
ANNOTATION_RUN_ID = f"{LABEL_PREFIX}run-id"
ANNOTATION_RUNTIME = f"{LABEL_PREFIX}runtime"  # e.g. "llama.cpp f32" (the project's predictor)
MODE_CONTAINER = "container"
MODE_RUNTIME = "runtime"


def predictor_gpus(template: Mapping[str, Any]) -> int:
    """GPUs the template's predictor container asks for (``nvidia.com/gpu`` in its limits)."""
    predictor = (template.get("spec") or {}).get("predictor") or {}
    containers = predictor.get("containers") or [{}]
    limits = (containers[0].get("resources") or {}).get("limits") or {}
    try:
        return int(limits.get("nvidia.com/gpu", 0))
    except (TypeError, ValueError):
        return 0


def predictor_mode(template: Mapping[str, Any]) -> str:
    """How the template serves: "runtime" or "container".

    "runtime" when its predictor names a model (a KServe runtime serves it), "container"
    otherwise (the project's predictor image).

    Raises:
        InvalidInput: The template has no ``spec.predictor`` (field
            ``inferenceservice_template``).
    """
    predictor = (template.get("spec") or {}).get("predictor")
    if not isinstance(predictor, dict):
        raise InvalidInput("inferenceservice_template", "has no spec.predictor")
    return MODE_RUNTIME if isinstance(predictor.get("model"), dict) else MODE_CONTAINER


def storage_uri(claim: str, relative_path: str) -> str:
    """``pvc://<claim>/<path>``: a folder on the claim, for a KServe storage initializer."""
    return f"pvc://{claim}/{relative_path.strip('/')}"


def build_inferenceservice(
    template: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    model: ArtifactRef,
    model_path: Path,
    model_uri: str,
    options: DeployOptions,
    image: str,
    served_as: str,
    update_time: str,
    run_id: str = "",
) -> dict[str, Any]:
    """The InferenceService of one deployment: a copy of ``template`` with its fields set.

    Args:
        template: The chart's InferenceService.
        name: The deployment's name (also the model's name in the inference URLs).
        namespace: Where it goes.
        model: The model artifact (recorded in an annotation).
        model_path: The model folder as the predictor pod sees it (the project's predictor).
        model_uri: The ``pvc://`` storageUri (a KServe runtime).
        options: Replicas, concurrency target and batching.
        image: The predictor's image; empty: the template's.
        served_as: Hash of what decides how it serves (an unchanged one is not rewritten).
        update_time: When this model was deployed (ISO 8601).
        run_id: The run it belongs to, as a label (may be empty).
    """
    manifest = fresh_copy(template)
    metadata = manifest["metadata"]
    metadata["name"] = name
    metadata["namespace"] = namespace
    metadata["labels"].update({LABEL_MANAGED_BY: MANAGED_BY, LABEL_DEPLOYMENT: name})
    metadata["annotations"].update(
        {
            ANNOTATION_MODEL: json.dumps(
                {
                    "uri": model.uri,
                    "sha256": model.sha256,
                    "size_bytes": model.size_bytes,
                    "kind": model.kind,
                }
            ),
            ANNOTATION_SERVED_AS: served_as,
            ANNOTATION_UPDATE_TIME: update_time,
        }
    )
    if run_id:
        metadata["annotations"][ANNOTATION_RUN_ID] = run_id
    predictor = manifest["spec"]["predictor"]
    if predictor_mode(template) == MODE_RUNTIME:
        predictor["model"]["storageUri"] = model_uri
    else:
        _set_container(predictor, name, model_path, options, image)
        metadata["annotations"][ANNOTATION_RUNTIME] = f"{options.runtime} {options.precision}"
    predictor["minReplicas"] = options.min_replicas
    predictor["maxReplicas"] = options.max_replicas
    predictor.setdefault("scaleMetric", "concurrency")  # the chart may choose "cpu" (raw mode)
    if options.concurrency_target > 0:
        predictor["scaleTarget"] = options.concurrency_target
    return manifest


def _set_container(
    predictor: dict[str, Any], name: str, model_path: Path, options: DeployOptions, image: str
) -> None:
    containers = predictor.setdefault("containers", [])
    if not containers:
        containers.append({"name": CONTAINER_NAME})
    container = containers[0]
    if image:
        container["image"] = image
    if not container.get("image"):
        raise InvalidInput("image", "the InferenceService template's predictor has no image")
    ports = container.get("ports") or []
    http_port = int(ports[0].get("containerPort", HTTP_PORT)) if ports else HTTP_PORT
    grpc_port = GRPC_PORT if http_port != GRPC_PORT else GRPC_PORT + 1
    container["command"] = ["p2m"]
    container["args"] = serve_model_args(
        str(model_path), name, "0.0.0.0", http_port, grpc_port, options
    )
    if not ports:
        container["ports"] = [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}]


def readiness(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """(ready, why not) from an InferenceService's status.

    Ready when its ``Ready`` condition is ``True`` for the current spec (``observedGeneration``
    caught up with ``metadata.generation``, so a roll is not mistaken for the old revision).
    """
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        return False, "KServe has not seen the new spec yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return True, ""
        reason = condition.get("reason") or ""
        message = condition.get("message") or ""
        why = f"{reason}: {message}" if reason and message else (message or reason)
        return False, f"not ready: {why or 'no reason given'}"
    return False, "the InferenceService has not reported Ready yet"


def model_of(obj: Mapping[str, Any]) -> ArtifactRef | None:
    """The model artifact an InferenceService p2m created serves (from its annotation)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    try:
        data = json.loads(annotations[ANNOTATION_MODEL])
        return ArtifactRef(
            str(data["uri"]), str(data["sha256"]), int(data["size_bytes"]), str(data["kind"])
        )
    except (KeyError, ValueError, TypeError):
        return None
