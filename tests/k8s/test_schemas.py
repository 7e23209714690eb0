"""Each validator passes a good object and fails a broken one (a misspelt field, a wrong type)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.schemas import (
    K8S_VERSIONS,
    NEWEST_K8S,
    SchemaError,
    validate,
    validate_all,
    validate_skaffold,
)
from tests.support import REPO

pytestmark = pytest.mark.usefixtures("shared_data")  # the CRDs and the skaffold schema

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo, labels: {app: demo}}
spec:
  replicas: 2
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers:
        - name: demo
          image: demo:1.0
          ports: [{name: grpc, containerPort: 50051}]
          readinessProbe: {grpc: {port: 50051}}
          resources: {requests: {cpu: 100m, memory: 128Mi}}
"""

RAYJOB = """
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: demo, labels: {app: demo}}
spec:
  entrypoint: python -c 'print(1)'
  shutdownAfterJobFinishes: true
  ttlSecondsAfterFinished: 60
  rayClusterSpec:
    rayVersion: "2.60.0"
    headGroupSpec:
      rayStartParams: {num-cpus: "0"}
      template:
        spec:
          containers:
            - name: ray-head
              image: demo:1.0
              resources: {limits: {cpu: 1, memory: 2Gi}, requests: {cpu: "500m"}}
    workerGroupSpecs:
      - groupName: workers
        replicas: 2
        minReplicas: 2
        maxReplicas: 2
        rayStartParams: {}
        template:
          spec:
            containers:
              - name: ray-worker
                image: demo:1.0
                resources: {limits: {nvidia.com/gpu: 1}}
"""

INFERENCESERVICE = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: demo}
spec:
  predictor:
    minReplicas: 1
    maxReplicas: 3
    scaleMetric: concurrency
    scaleTarget: 4
    containers:
      - name: kserve-container
        image: demo:1.0
        args: [serve-model, --name, demo]
"""

Breakage = Callable[[dict[str, Any]], Any]


def _load(text: str) -> dict[str, Any]:
    return dict(yaml.safe_load(text))


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Deployment":
        return obj["spec"]["template"]["spec"]["containers"][0]
    if obj["kind"] == "RayJob":
        return obj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return obj["spec"]["predictor"]["containers"][0]


GOOD = {"Deployment": DEPLOYMENT, "RayJob": RAYJOB, "InferenceService": INFERENCESERVICE}

# (kind, breakage, a path the message must name)
BROKEN: list[tuple[str, Breakage, str]] = [
    ("Deployment", lambda d: d["spec"].update(replicsa=d["spec"].pop("replicas")), "replicsa"),
    ("Deployment", lambda d: d["spec"].update(replicas="two"), "spec.replicas"),
    ("Deployment", lambda d: _container(d).update(imagePullPolicy=3), "imagePullPolicy"),
    ("Deployment", lambda d: d["metadata"].update(lables={"a": "b"}), "lables"),
    ("RayJob", lambda d: d["spec"].update(entrypint=d["spec"].pop("entrypoint")), "entrypint"),
    ("RayJob", lambda d: d["spec"].update(shutdownAfterJobFinishes="yes"), "shutdownAfter"),
    ("RayJob", lambda d: _container(d).update(resourses={}), "resourses"),
    ("RayJob", lambda d: _container(d)["resources"]["limits"].update(cpu=[1]), "limits.cpu"),
    ("RayJob", lambda d: d["metadata"].update(lables={"a": "b"}), "metadata"),
    ("InferenceService", lambda d: d["spec"]["predictor"].update(minReplica=1), "minReplica"),
    ("InferenceService", lambda d: d["spec"]["predictor"].update(scaleTarget="4"), "scaleTarget"),
    ("InferenceService", lambda d: d["spec"]["predictor"].update(scaleMetric="qps"), "scaleMetric"),
    ("InferenceService", lambda d: d.update(apiVersion="serving.kserve.io/v1"), "apiVersion"),
]


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_should_pass_a_valid_object_when_it_matches_its_schema(kind: str):
    validate(_load(GOOD[kind]))


@pytest.mark.parametrize(
    ("kind", "breakage", "path"), BROKEN, ids=[f"{k}-{p}" for k, _, p in BROKEN]
)
def test_should_fail_with_the_path_when_an_object_is_broken(
    kind: str, breakage: Breakage, path: str
):
    obj = _load(GOOD[kind])
    breakage(obj)
    with pytest.raises(SchemaError) as caught:
        validate(obj)
    assert path in str(caught.value)


def test_should_check_every_supported_kubernetes_version_when_validating_a_builtin():
    obj = _load(DEPLOYMENT)
    obj["spec"]["replicas"] = "two"
    with pytest.raises(SchemaError) as caught:
        validate(obj)
    assert K8S_VERSIONS == ("1.30", NEWEST_K8S)
    for version in K8S_VERSIONS:
        assert f"[k8s {version}]" in str(caught.value)


def test_should_list_every_problem_when_an_object_has_several():
    obj = _load(DEPLOYMENT)
    obj["spec"]["replicas"] = "two"
    _container(obj)["imagePullPolicy"] = 3
    with pytest.raises(SchemaError) as caught:
        validate(obj, k8s_versions=("1.30",))
    assert len(caught.value.problems) == 2


def test_should_accept_an_integer_or_a_string_when_the_crd_says_int_or_string():
    obj = _load(RAYJOB)
    limits = _container(obj)["resources"]["limits"]
    for cpu in (2, "2", "1500m"):
        limits["cpu"] = cpu
        validate(obj)


def test_should_accept_unknown_fields_when_the_crd_preserves_them():
    obj = _load(INFERENCESERVICE)
    obj["status"] = {"anything": {"the": "server sets"}}  # status: preserve-unknown-fields
    validate(obj)


def test_should_fail_when_a_kind_has_no_schema():
    with pytest.raises(SchemaError, match="no schema for kind Widget"):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_should_report_problems_of_all_objects_when_validating_many():
    good, bad = _load(DEPLOYMENT), _load(INFERENCESERVICE)
    bad["spec"]["predictor"]["minReplica"] = 1
    broken_too = copy.deepcopy(bad)
    broken_too["metadata"]["name"] = "other"
    with pytest.raises(SchemaError) as caught:
        validate_all([good, bad, broken_too])
    assert {p.split(" ")[0] for p in caught.value.problems} == {
        "InferenceService/demo",
        "InferenceService/other",
    }


def _skaffold() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "skaffold.yaml").read_text()))


def test_should_pass_skaffold_yaml_when_it_matches_the_v4beta14_schema():
    validate_skaffold(_skaffold())


@pytest.mark.parametrize(
    ("breakage", "path"),
    [
        (lambda d: d.update(deplyo=d.pop("deploy")), "(root)"),
        (lambda d: d["build"]["artifacts"][0].update(image=["not", "a", "string"]), "image"),
        (lambda d: d["deploy"]["helm"]["releases"][0].update(chartPth="x"), "releases[0]"),
    ],
    ids=["misspelt-field", "wrong-type", "misspelt-release-field"],
)
def test_should_fail_skaffold_yaml_when_it_is_broken(breakage: Breakage, path: str):
    document = _skaffold()
    breakage(document)
    with pytest.raises(SchemaError) as caught:
        validate_skaffold(document)
    assert path in str(caught.value)


def test_should_find_the_crds_in_the_shared_data(shared_data: Path):
    assert (shared_data / "k8s" / "crds" / "ray.io_rayjobs.yaml.gz").exists()
