"""The trainer says before training that the disk lacks room for the checkpoints."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from p2m.common.artifacts import ArtifactStore
from p2m.common.errors import FailedPrecondition
from p2m.common.model_store import ModelStore
from p2m.common.types import TaskSpec
from p2m.trainer import disk_space
from p2m.trainer.data import store_dataset
from p2m.trainer.disk_space import (
    CHECKPOINT_BYTES_PER_PARAMETER,
    CHECKPOINTS_ON_DISK,
    check_free_space,
    needed_bytes,
    parameter_count,
)
from p2m.trainer.engine import ModelTrainer
from p2m.trainer.options import TrainOptions
from p2m.trainer.run_types import TrainJob

Usage = namedtuple("Usage", "total used free")
PARAMETERS = 1000 * 300 + 300  # the base model's two tensors below
CHECKPOINT = PARAMETERS * CHECKPOINT_BYTES_PER_PARAMETER


def _base_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    weights = {"w": np.zeros((1000, 300), np.float32), "b": np.zeros(300, np.float16)}
    save_file(weights, str(folder / "model.safetensors"))
    return folder


def _free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda _: Usage(free, 0, free))


def test_parameters_are_read_from_the_safetensors_headers(tmp_path: Path):
    assert parameter_count(_base_model(tmp_path / "base")) == PARAMETERS
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "pytorch_model.bin").write_bytes(b"\0" * 4000)
    assert parameter_count(legacy) == 1000  # fp32 assumed


def test_the_run_needs_room_for_the_checkpoints_it_has_not_written(tmp_path: Path):
    run = tmp_path / "train-abc"
    assert needed_bytes(PARAMETERS, False, run) == CHECKPOINTS_ON_DISK * CHECKPOINT
    (run / "checkpoint-step-0000009").mkdir(parents=True)
    assert needed_bytes(PARAMETERS, False, run) == (CHECKPOINTS_ON_DISK - 1) * CHECKPOINT
    assert needed_bytes(PARAMETERS, True, run) == 0  # LoRA: adapters only


def test_too_little_space_is_a_clear_failed_precondition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = tmp_path / "not" / "made" / "yet"
    _free(monkeypatch, CHECKPOINTS_ON_DISK * CHECKPOINT)
    check_free_space(PARAMETERS, False, run)  # just enough
    _free(monkeypatch, CHECKPOINT)
    with pytest.raises(FailedPrecondition, match=r"GB free under .* for its checkpoints"):
        check_free_space(PARAMETERS, False, run)
    check_free_space(PARAMETERS, True, run)


def test_the_trainer_refuses_before_training_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = ArtifactStore(tmp_path / "artifacts")
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "train.jsonl").write_text(json.dumps({"input": "a", "output": "b"}) + "\n")
    job = TrainJob(
        datasets=(store_dataset(store, rows),),
        base_model=str(_base_model(tmp_path / "base")),
        task=TaskSpec("Copy the input."),
        options=TrainOptions(epochs=1),
    )
    work_root = tmp_path / "cache" / "train"
    trainer = ModelTrainer(store, ModelStore(tmp_path / "models"), work_root)
    _free(monkeypatch, CHECKPOINT)
    with pytest.raises(FailedPrecondition) as caught:
        trainer.train(job)
    assert f"{PARAMETERS / 1e6:.1f}M parameters" in str(caught.value)
    assert not work_root.exists() or not any(work_root.iterdir())
