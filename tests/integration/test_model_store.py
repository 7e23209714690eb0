"""The local model store: the shipped SmolLM2 GGUF really dequantised, saved and reloaded."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from p2m.common import model_store
from p2m.common.errors import FailedPrecondition, InvalidInput, NotFound
from p2m.common.model_store import MANIFEST, ModelStore, StoredModel
from p2m.common.shipped_models import SHIPPED_MODELS

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_FOLDER = "HuggingFaceTB--SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Imported:
    store: ModelStore
    model: StoredModel
    progress: list[str]
    seconds: float


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """SmolLM2 imported once into a fresh store (a real GGUF dequantisation)."""
    store = ModelStore(tmp_path_factory.mktemp("store") / "models")
    lines: list[str] = []
    start = time.monotonic()
    model = store.import_shipped("smollm2", progress=lines.append)
    return Imported(store, model, lines, time.monotonic() - start)


def _weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def test_import_is_quick_and_reports_progress(imported: Imported):
    assert imported.seconds < 120, f"import took {imported.seconds:.0f}s"
    assert any("dequantising" in line for line in imported.progress)
    assert imported.progress[-1] == f"smollm2: stored as {SMOLLM2_ID}"


def test_folder_reloads_offline_and_generates(imported: Imported):
    path = imported.model.path
    tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert getattr(model, "hf_quantizer", None) is None
    assert model.dtype == torch.bfloat16
    assert sum(p.numel() for p in model.parameters()) == imported.model.parameters
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 8192
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert "<|im_start|>assistant" in tokenizer.decode(inputs["input_ids"][0])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    answer = tokenizer.decode(output[0][prompt_length:], skip_special_tokens=True)
    assert output.shape[1] > prompt_length
    assert answer.strip(), "greedy generation produced only whitespace or special tokens"


def test_saved_files_are_a_plain_transformers_folder(imported: Imported):
    path = imported.model.path
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert {MANIFEST, "README.md", "tokenizer_config.json"} <= names
    assert not any(name.endswith((".bin", ".gguf")) for name in names)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert "_model_name_or_path" not in config  # the GGUF's general.name, dropped
    assert config["model_type"] == "llama"
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert "local_files_only" not in tokenizer_config
    generation = json.loads((path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2  # <|im_end|>, the end of a chat turn
    assert generation["pad_token_id"] is not None
    assert path.stat().st_mode & 0o777 == 0o755  # readable by pods running as another user
    assert all(p.stat().st_mode & 0o644 == 0o644 for p in path.iterdir())


def test_manifest_fields(imported: Imported):
    model = imported.model
    assert model.name == SMOLLM2_ID
    assert model.path == imported.store.path_for(SMOLLM2_ID)
    assert model.path == imported.store.root / "hf" / SMOLLM2_FOLDER
    assert model.architecture == "decoder-only"
    assert 130_000_000 < model.parameters < 140_000_000
    assert model.size_bytes == _weight_bytes(model.path)
    assert model.size_bytes == pytest.approx(2 * model.parameters, rel=0.01)  # bfloat16
    assert model.license == "apache-2.0"
    assert model.source == "gguf:SmolLM2-135M-Instruct-Q4_1 (dequantised)"
    manifest = json.loads((model.path / MANIFEST).read_text())
    assert manifest["gguf"]["sha256"] == SHIPPED_MODELS["smollm2"].sha256
    assert manifest["gguf"]["tensor_types"]["Q4_1"] > 0
    assert manifest["dtype"] == "bfloat16"


def test_model_card_names_the_source_and_its_limits(imported: Imported):
    card = (imported.model.path / "README.md").read_text()
    assert imported.model.description == card
    assert SHIPPED_MODELS["smollm2"].sha256 in card
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in card
    assert "quality is that of the quantised model" in card
    assert "license: apache-2.0" in card
    assert "decoder-only" in card
    assert f"{imported.model.parameters:,}" in card
    assert "student" in card


def test_second_import_is_a_no_op(imported: Imported):
    manifest = imported.model.path / MANIFEST
    before = manifest.stat().st_mtime_ns
    lines: list[str] = []
    start = time.monotonic()
    again = imported.store.import_shipped("smollm2", progress=lines.append)
    assert time.monotonic() - start < 5
    assert again == imported.model
    assert manifest.stat().st_mtime_ns == before
    assert lines == []


def test_list_and_get(imported: Imported):
    assert imported.store.list() == [imported.model]
    assert imported.store.get(SMOLLM2_ID) == imported.model


def test_a_shipped_model_is_known_exactly_before_it_is_imported(imported: Imported):
    # The search ranks a shipped model by the entry it will have: the same card and figures.
    before = ModelStore(imported.store.root.parent / "empty").shipped_entry("smollm2")
    assert before.source == "shipped:SmolLM2-135M-Instruct-Q4_1 (imported on first use)"
    same = ("name", "architecture", "size_bytes", "parameters", "license", "languages")
    assert [getattr(before, f) for f in same] == [getattr(imported.model, f) for f in same]
    assert before.description == imported.model.description
    assert [m.name for m in imported.store.importable()] == ["Qwen/Qwen2.5-Coder-0.5B-Instruct"]


def test_the_trainer_imports_a_shipped_base_model_on_first_use(tmp_path: Path):
    from p2m.common.artifacts import ArtifactStore
    from p2m.trainer.base_model import resolve_base_model

    store, artifacts = ModelStore(tmp_path / "models"), ArtifactStore(tmp_path / "artifacts")
    assert store.import_named("someone/else") is None and store.list() == []
    with pytest.raises(NotFound, match="hub is offline"):
        resolve_base_model("someone/else", "", "", artifacts, store, hub_offline=True)
    lines: list[str] = []
    base = resolve_base_model(SMOLLM2_ID, "", "", artifacts, store, True, None, lines.append)
    (entry,) = store.list()
    assert (base.source, base.path, base.architecture) == ("store", entry.path, "decoder-only")
    assert any("dequantising" in line for line in lines)
    assert store.import_named(SMOLLM2_ID) == entry  # already there: nothing imported again


def test_get_unknown_is_not_found(imported: Imported):
    with pytest.raises(NotFound, match="not in the local model store"):
        imported.store.get("HuggingFaceTB/SmolLM2-360M-Instruct")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../escape",
        "owner/../../etc",
        "..",
        "/etc/passwd",
        "owner\\model",
        "owner/model\0",
        "x" * 201,
        "owner/model/extra",
        "owner--model",
        "owner/",
        "./model",
    ],
)
def test_path_tricks_are_invalid_input(tmp_path: Path, name: str):
    store = ModelStore(tmp_path)
    for call in (store.get, store.path_for):
        with pytest.raises(InvalidInput) as caught:
            call(name)
        assert caught.value.field == "name"


def test_unknown_choice_and_dtype_are_invalid_input(tmp_path: Path):
    store = ModelStore(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        store.import_shipped("gpt-5")
    assert caught.value.field == "choice"
    with pytest.raises(InvalidInput) as caught:
        store.import_shipped("smollm2", dtype="int4")
    assert caught.value.field == "dtype"


def test_a_broken_manifest_is_skipped_by_list(tmp_path: Path):
    store = ModelStore(tmp_path)
    folder = store.path_for(SMOLLM2_ID)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text("{not json")
    assert store.list() == []
    with pytest.raises(FailedPrecondition, match="unreadable model manifest"):
        store.get(SMOLLM2_ID)


def test_a_foreign_folder_in_the_way_is_not_overwritten(tmp_path: Path):
    store = ModelStore(tmp_path)
    folder = store.path_for(SMOLLM2_ID)
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(FailedPrecondition, match="not a complete store entry"):
        store.import_shipped("smollm2")
    assert (folder / "mine.txt").read_text() == "keep me"
    assert store.list() == []


def test_a_killed_import_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = ModelStore(tmp_path / "models")
    leftover = store.root / "tmp" / f"{SMOLLM2_FOLDER}.import-killedearlier"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half a model")

    def save_then_die(model: Any, tokenizer: Any, folder: Path) -> None:
        model.save_pretrained(folder)  # the weights are written, the tokenizer never is
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(model_store, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.import_shipped("smollm2")
    assert store.list() == []
    assert not store.path_for(SMOLLM2_ID).exists()
    hf = store.root / "hf"
    assert not hf.exists() or not any(hf.iterdir())
    assert not list((store.root / "tmp").glob("*.import-*")), "work folders were left behind"
    with pytest.raises(NotFound):
        store.get(SMOLLM2_ID)
