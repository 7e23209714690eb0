"""Fixtures of the chart tests: helm and kubectl (``make tools``), and cached renderings."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.k8s.chart import CHART, Rendered
from tests.support import REPO

RELEASE = "p2m"
NAMESPACE = "prompt2model"


def _tool(name: str) -> str:
    """``$P2M_<NAME>`` (the Makefile sets it), else .tools/<name>, else the PATH."""
    for candidate in (os.environ.get(f"P2M_{name.upper()}"), str(REPO / ".tools" / name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found: run `make tools` (fetches helm and kubectl into .tools/)")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return _tool("kubectl")


RenderFn = Callable[..., Rendered]


@pytest.fixture(scope="session")
def render(helm: str) -> RenderFn:
    """``render(*values_files, **set_values)``: ``helm template`` of the chart, parsed.

    Values files are paths relative to the chart (``"ci/gpu-values.yaml"``); keyword arguments
    are ``--set`` pairs with dots written as ``__`` (``llm__enabled=False``). Results are
    cached per arguments for the session.
    """
    cache: dict[tuple[object, ...], Rendered] = {}

    def _render(*values_files: str, **set_values: object) -> Rendered:
        key = (values_files, tuple(sorted(set_values.items())))
        if key not in cache:
            cache[key] = Rendered.parse(helm_template(helm, *values_files, **set_values).stdout)
        return cache[key]

    return _render


def helm_template(
    helm: str, *values_files: str, check: bool = True, **set_values: object
) -> subprocess.CompletedProcess[str]:
    """Run ``helm template`` of the chart with values files and ``--set`` pairs."""
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for values in values_files:
        args += ["-f", str(CHART / values)]
    for name, value in set_values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["--set", f"{name.replace('__', '.')}={text}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return result
