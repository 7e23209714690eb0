"""Find the base model a training starts from: an artifact, the local store, a folder, the hub."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from p2m.common.artifacts import ArtifactStore, sha256_file, sha256_tree
from p2m.common.errors import FailedPrecondition, InvalidInput, NotFound
from p2m.common.model_store import MANIFEST, ModelStore
from p2m.common.paths import readable_path
from p2m.common.student import ARCHITECTURES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model.

    Attributes:
        name: The name it was asked for by.
        path: Its ``save_pretrained`` folder.
        architecture: "encoder-decoder" or "decoder-only", from its config.
        sha256: Identity of its content (part of the training's cache key).
        source: "artifact", "store", "folder" or "hub".
    """

    name: str
    path: Path
    architecture: str
    sha256: str
    source: str


def resolve_base_model(
    name: str,
    architecture: str,
    artifact_uri: str,
    store: ArtifactStore,
    models: ModelStore,
    hub_offline: bool,
    path_roots: Sequence[Path] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BaseModel:
    """Find ``name`` (or the artifact ``artifact_uri``) and check its architecture.

    Order: the artifact when given; the local model store; a local folder; with the hub
    offline, a model shipped with p2m, imported into the store now (``progress`` hears how
    that goes); the hub when reachable. A folder must lie in ``path_roots`` (None: anywhere,
    for a person's own CLI).

    Raises:
        InvalidInput: Empty name, unknown architecture, or one that differs from the model's.
        NotFound: The model is nowhere to be had.
    """
    if not name.strip():
        raise InvalidInput("base_model.name", "is empty")
    if architecture and architecture not in ARCHITECTURES:
        raise InvalidInput("base_model.architecture", f"expected one of {ARCHITECTURES} or empty")
    if artifact_uri:
        ref = store.ref(artifact_uri)
        found = BaseModel(name, store.path(ref.uri), "", ref.sha256, "artifact")
    else:
        found = (
            _from_store(name, models)
            or _from_folder(name, path_roots)
            or (_from_shipped(name, models, progress) if hub_offline else None)
            or _from_hub(name, hub_offline)
        )
    actual = _architecture(found.path)
    if architecture and architecture != actual:
        raise InvalidInput("base_model.architecture", f"{name} is {actual}, not {architecture}")
    return BaseModel(found.name, found.path, actual, found.sha256, found.source)


def _from_store(name: str, models: ModelStore) -> BaseModel | None:
    try:
        entry = models.get(name)
    except (InvalidInput, NotFound):
        return None
    return BaseModel(name, entry.path, "", sha256_file(entry.path / MANIFEST), "store")


def _from_shipped(
    name: str, models: ModelStore, progress: Callable[[str], None] | None
) -> BaseModel | None:
    entry = models.import_named(name, progress)
    if entry is None:
        return None
    return BaseModel(name, entry.path, "", sha256_file(entry.path / MANIFEST), "store")


def _from_folder(name: str, path_roots: Sequence[Path] | None) -> BaseModel | None:
    if path_roots is None:
        folder = Path(name).expanduser()
    elif Path(name).is_absolute():
        folder = readable_path(name, path_roots, "base_model.name")
    else:
        return None
    if not (folder / "config.json").is_file():
        return None
    sha, _ = sha256_tree(folder)
    return BaseModel(name, folder.resolve(), "", sha, "folder")


def _from_hub(name: str, hub_offline: bool) -> BaseModel:
    if hub_offline:
        raise NotFound(
            f"base model {name!r} is not in the local model store or a folder, and the hub is "
            "offline (import one with `p2m models import`)"
        )
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        )
    except Exception as error:  # the hub client raises many kinds
        raise NotFound(f"base model {name!r} could not be fetched from the hub: {error}") from None
    # The snapshot folder is named by the hub commit and holds links into the cache.
    sha = hashlib.sha256(f"hub:{name}@{folder.name}".encode()).hexdigest()
    return BaseModel(name, folder, "", sha, "hub")


def _architecture(folder: Path) -> str:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FailedPrecondition(f"{folder} has no readable config.json: {error}") from None
    return "encoder-decoder" if config.get("is_encoder_decoder") else "decoder-only"
