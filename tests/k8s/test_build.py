"""skaffold.yaml (with each profile applied) against the skaffold schema, and the GPU image."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.schemas import validate_skaffold
from tests.support import REPO

pytestmark = pytest.mark.usefixtures("shared_data")  # the skaffold schema


def skaffold() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "skaffold.yaml").read_text()))


def apply_patches(doc: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON patches (add/replace) of a skaffold profile applied to a copy of ``doc``."""
    out = copy.deepcopy(doc)
    for patch in patches:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in patch["path"].lstrip("/").split("/")
        ]
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert patch["op"] in ("add", "replace"), patch
        if isinstance(node, list):
            if last == "-":
                node.append(patch["value"])
            else:
                node[int(last)] = patch["value"]
        else:
            assert patch["op"] == "add" or last in node, patch
            node[last] = patch["value"]
    return out


def profile(name: str) -> dict[str, Any]:
    doc = skaffold()
    (found,) = [p for p in doc.pop("profiles") if p["name"] == name]
    return apply_patches(doc, found["patches"])


def test_should_deploy_the_chart_with_helm_when_running_skaffold():
    doc = skaffold()
    validate_skaffold(doc)
    (release,) = doc["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"] / "Chart.yaml").exists()
    assert release["setValueTemplates"]["image.repository"] == "{{.IMAGE_REPO_prompt2model}}"
    assert [p["name"] for p in doc["profiles"]] == ["dev", "gpu"]


@pytest.mark.parametrize("name", ["dev", "gpu"])
def test_should_stay_schema_valid_when_a_profile_is_applied(name: str):
    doc = profile(name)
    validate_skaffold(doc)
    (release,) = doc["deploy"]["helm"]["releases"]
    for values in release["valuesFiles"]:
        assert (REPO / values).exists(), values
    for artifact in doc["build"]["artifacts"]:
        assert (REPO / artifact["docker"]["dockerfile"]).exists()


def test_should_use_the_cpu_values_when_the_dev_profile_is_active():
    (release,) = profile("dev")["deploy"]["helm"]["releases"]
    assert release["valuesFiles"] == ["charts/prompt2model/ci/cpu-values.yaml"]


def test_should_build_and_deploy_the_gpu_image_when_the_gpu_profile_is_active():
    doc = profile("gpu")
    images = {a["image"]: a["docker"]["dockerfile"] for a in doc["build"]["artifacts"]}
    assert images == {"prompt2model": "Dockerfile", "prompt2model-gpu": "Dockerfile.gpu"}
    (release,) = doc["deploy"]["helm"]["releases"]
    assert release["valuesFiles"] == ["charts/prompt2model/ci/gpu-values.yaml"]
    assert release["setValueTemplates"]["gpu.image.repository"] == (
        "{{.IMAGE_REPO_prompt2model_gpu}}"
    )


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (make install brings it)")
    return found


def test_should_be_hadolint_clean_when_linting_the_gpu_dockerfile():
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "warning", str(REPO / "Dockerfile.gpu")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_should_keep_the_entrypoint_and_user_when_building_the_gpu_variant():
    def final_stage(path: Path) -> list[str]:
        lines = path.read_text().splitlines()
        start = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
        return lines[start:]

    cpu, gpu = final_stage(REPO / "Dockerfile"), final_stage(REPO / "Dockerfile.gpu")
    for instruction in ('ENTRYPOINT ["p2m"]', "USER 10001"):
        assert instruction in cpu and instruction in gpu
    text = (REPO / "Dockerfile.gpu").read_text()
    assert "ARG CUDA_BASE=nvidia/cuda:12.8.1-base-ubuntu24.04" in text  # pinned by tag
    assert "download.pytorch.org/whl/cu" in text
