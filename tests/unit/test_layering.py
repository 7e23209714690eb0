"""The package's layers: stages depend on the shared layers, never on each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "p2m"
STAGES = ("parser", "retriever", "generator", "trainer", "evaluator", "deployer", "gateway", "demo")
# What each layer may import from p2m besides itself.
SHARED = {"common": (), "k8s": ("common",), "local_llm": ("common",), "llamacpp": ("common",)}
FOR_STAGES = ("common", "k8s", "local_llm", "llamacpp", "cliutil")


def p2m_imports(path: Path) -> set[str]:
    """The p2m subpackages (or top modules) ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "p2m" and len(parts) > 1:
                found.add(parts[1])
    return found


def layer_cases() -> list[tuple[str, Path]]:
    return [
        (layer, path)
        for layer in (*STAGES, *SHARED)
        for path in sorted((PACKAGE / layer).glob("*.py"))
    ]


@pytest.mark.parametrize(("layer", "path"), layer_cases(), ids=lambda v: str(v).split("p2m/")[-1])
def test_a_module_imports_only_the_layers_below_it(layer: str, path: Path):
    allowed = {layer, *SHARED.get(layer, FOR_STAGES)}
    assert p2m_imports(path) <= allowed, f"{path.name} imports {p2m_imports(path) - allowed}"


def test_every_subpackage_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == {*STAGES, *SHARED}
