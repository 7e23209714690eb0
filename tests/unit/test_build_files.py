"""The image and skaffold files: linted and schema-checked, since no container engine runs here."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import REPO


@pytest.fixture(scope="module")
def skaffold_validator(shared_data: Path) -> jsonschema.protocols.Validator:
    path = shared_data / "k8s" / "schemas" / "skaffold-v4beta14.json.gz"
    schema = json.loads(gzip.decompress(path.read_bytes()))
    return jsonschema.validators.validator_for(schema)(schema)


def test_skaffold_yaml_matches_its_schema(skaffold_validator):
    document = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert document["apiVersion"] == "skaffold/v4beta14"
    assert list(skaffold_validator.iter_errors(document)) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.update(biuld=d.pop("build")),
        lambda d: d["build"]["artifacts"][0].update(image=["not", "a", "string"]),
    ],
    ids=["misspelt-field", "wrong-type"],
)
def test_the_skaffold_schema_rejects_broken_files(skaffold_validator, breakage: Any):
    document = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    breakage(document)
    assert list(skaffold_validator.iter_errors(document))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (make install brings it)")
    return found


def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "warning", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag
