"""k8s/: `kubectl kustomize` builds the base and every overlay, and the output is schema-valid."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.k8s.chart import containers, pod_specs
from tests.k8s.conftest import RenderFn
from tests.k8s.schemas import load_documents, validate_all
from tests.support import REPO

K8S = REPO / "k8s"
TARGETS = ["base", *sorted(f"overlays/{p.name}" for p in (K8S / "overlays").iterdir())]


def build(kubectl: str, target: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return load_documents(result.stdout)


def test_should_have_a_dev_and_a_gpu_overlay():
    assert TARGETS == ["base", "overlays/dev", "overlays/gpu"]


@pytest.mark.parametrize("target", TARGETS)
def test_should_build_schema_valid_objects_when_kustomizing(
    kubectl: str, target: str, shared_data: Path
):
    docs = build(kubectl, target)
    validate_all(docs)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "LimitRange",
        "Namespace",
        "Namespace",
        "Namespace",
        "PriorityClass",
        "ResourceQuota",
    ]


def _quota(kubectl: str, target: str) -> dict[str, str]:
    (quota,) = [d for d in build(kubectl, target) if d["kind"] == "ResourceQuota"]
    return dict(quota["spec"]["hard"])


def test_should_allow_no_gpus_when_using_the_dev_overlay(kubectl: str):
    assert _quota(kubectl, "overlays/dev")["requests.nvidia.com/gpu"] == "0"


def test_should_allow_gpus_when_using_the_gpu_overlay(kubectl: str):
    quota = _quota(kubectl, "overlays/gpu")
    assert int(quota["requests.nvidia.com/gpu"]) >= 4
    assert int(quota["limits.nvidia.com/gpu"]) >= 4


def test_should_create_the_priority_class_the_gpu_values_name(kubectl: str, render: RenderFn):
    (priority,) = [d for d in build(kubectl, "base") if d["kind"] == "PriorityClass"]
    rayjob, _ = render("ci/gpu-values.yaml").workload_templates()
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["priorityClassName"] == priority["metadata"]["name"]
    assert priority["preemptionPolicy"] == "Never"


def test_should_create_the_release_namespace_the_skaffold_release_uses(kubectl: str):
    names = {d["metadata"]["name"] for d in build(kubectl, "base") if d["kind"] == "Namespace"}
    skaffold = (REPO / "skaffold.yaml").read_text()
    assert re.search(r"namespace: prompt2model\b", skaffold)
    assert {"prompt2model", "kuberay-system", "kserve"} <= names


_UNITS = {
    "m": 1e-3,
    "": 1,
    "k": 1e3,
    "Ki": 2**10,
    "M": 1e6,
    "Mi": 2**20,
    "G": 1e9,
    "Gi": 2**30,
    "T": 1e12,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match, value
    return float(match.group(1)) * _UNITS[match.group(2)]


def test_should_fit_the_dev_quota_when_rendering_the_cpu_values(kubectl: str, render: RenderFn):
    """Every service, one training and the predictor at its max fit the dev overlay's quota."""
    quota = _quota(kubectl, "overlays/dev")
    rendered = render("ci/cpu-values.yaml")
    totals: dict[str, float] = {}
    for obj in rendered.all_objects():
        times = 1
        if obj["kind"] == "InferenceService":
            times = obj["spec"]["predictor"]["maxReplicas"]
        for where, pod in pod_specs(obj):
            count = times
            if obj["kind"] == "RayJob" and where.startswith("RayJob workers"):
                (group,) = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"]
                count = group["replicas"]
            for container in containers(pod):
                resources = container["resources"]
                for part in ("requests", "limits"):
                    for name, value in (resources.get(part) or {}).items():
                        key = f"{part}.{name}"
                        totals[key] = totals.get(key, 0) + count * quantity(value)
    for claim in rendered.of_kind("PersistentVolumeClaim"):
        storage = quantity(claim["spec"]["resources"]["requests"]["storage"])
        totals["requests.storage"] = totals.get("requests.storage", 0) + storage
    for key in ("requests.cpu", "requests.memory", "limits.memory", "requests.storage"):
        assert totals[key] <= quantity(quota[key]), (key, totals[key], quota[key])
