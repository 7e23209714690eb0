"""The chart's rendered objects, and ways to look into them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from tests.k8s.schemas import load_documents
from tests.support import REPO

CHART = REPO / "charts" / "prompt2model"
CI_VALUES = sorted(p.relative_to(CHART).as_posix() for p in (CHART / "ci").glob("*-values.yaml"))
GRPC_SERVICES = ("gateway", "parser", "retriever", "generator", "trainer", "evaluator", "deployer")
STATELESS = ("parser", "retriever", "generator", "evaluator")
COMPONENT = "app.kubernetes.io/component"
TEMPLATES_CONFIGMAP = "p2m-prompt2model-workload-templates"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """The documents of one ``helm template`` run."""

    docs: list[Obj]

    @classmethod
    def parse(cls, text: str) -> Rendered:
        return cls(load_documents(text))

    def of_kind(self, kind: str) -> list[Obj]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, component: str) -> Obj:
        """The one object of ``kind`` whose component label is ``component``."""
        found = [d for d in self.of_kind(kind) if labels(d).get(COMPONENT) == component]
        assert len(found) == 1, f"{len(found)} {kind} objects for component {component}"
        return found[0]

    def find(self, kind: str, component: str) -> Obj | None:
        found = [d for d in self.of_kind(kind) if labels(d).get(COMPONENT) == component]
        return found[0] if found else None

    def named(self, kind: str, name: str) -> Obj:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
        return found[0]

    def workload_templates(self) -> tuple[Obj, Obj]:
        """The RayJob and InferenceService templates of the ConfigMap, as standalone objects."""
        data = self.named("ConfigMap", TEMPLATES_CONFIGMAP)["data"]
        return yaml.safe_load(data["rayjob.yaml"]), yaml.safe_load(data["inferenceservice.yaml"])

    def all_objects(self) -> list[Obj]:
        """Every rendered document plus the two workload templates."""
        has_templates = any(
            d["metadata"]["name"] == TEMPLATES_CONFIGMAP for d in self.of_kind("ConfigMap")
        )
        return self.docs + (list(self.workload_templates()) if has_templates else [])

    def deployment(self, component: str) -> Obj:
        return self.get("Deployment", component)

    def container(self, component: str) -> Obj:
        return pod_spec(self.deployment(component))["containers"][0]

    def env(self, component: str) -> dict[str, Any]:
        """name -> value (or the valueFrom dict) of a service's container."""
        env = self.container(component)["env"]
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def labels(obj: Obj) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def pod_spec(obj: Obj) -> Obj:
    """The pod spec of a Deployment."""
    return obj["spec"]["template"]["spec"]


def pod_specs(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """(where, pod spec) of every pod an object makes: Deployments, RayJob groups, predictor."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind == "Deployment":
        yield f"Deployment/{name}", pod_spec(obj)
    elif kind == "RayJob":
        spec = obj["spec"]
        yield "RayJob submitter", spec["submitterPodTemplate"]["spec"]
        yield "RayJob head", spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
            yield f"RayJob {group['groupName']}", group["template"]["spec"]
    elif kind == "InferenceService":
        yield "InferenceService predictor", obj["spec"]["predictor"]


def containers(pod: Obj) -> list[Obj]:
    return list(pod.get("initContainers") or []) + list(pod["containers"])


def mounts(container: Obj) -> dict[str, str]:
    """mountPath -> volume name."""
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}


def volumes(pod: Obj) -> dict[str, Obj]:
    return {v["name"]: v for v in pod.get("volumes") or []}
