"""LoRA adapters where full fine-tuning would not fit: the choice, its key, proto, CLI and card."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.types import Example, TaskSpec
from p2m.trainer.adapter_choice import (
    choose_adapters,
    full_fine_tuning_bytes,
    training_memory,
)
from p2m.trainer.base_model import BaseModel
from p2m.trainer.finalize import model_card
from p2m.trainer.options import TrainOptions, training_key
from p2m.trainer.service import options_from_pb
from prompt2model.v1 import trainer_pb2

GB = 10**9
QWEN_05B = 630_000_000  # Qwen2.5-Coder-0.5B-Instruct's parameters (tied embeddings counted once)
STUDENT_15B = 1_540_000_000  # a 1.5B student, under the model search's 3 GB cap in bf16


def test_a_student_too_large_for_the_memory_trains_adapters_and_says_why() -> None:
    choice = choose_adapters(TrainOptions(), STUDENT_15B, 20 * GB, 1)
    assert choice.options.lora and not choice.options.lora_auto
    assert "1,540M parameters needs about 25.7 GB" in choice.reason
    assert "20.0 GB is available: LoRA adapters trained instead" in choice.reason


def test_a_student_that_fits_trains_every_weight() -> None:
    assert full_fine_tuning_bytes(QWEN_05B) < 12 * GB  # 10.1 GB and 1 GiB of activations
    choice = choose_adapters(TrainOptions(), QWEN_05B, 20 * GB, 1)
    assert not choice.options.lora and not choice.reason
    assert not choice.options.lora_auto  # settled: a RayJob's entrypoint keeps the choice


def test_the_workers_on_one_machine_share_its_memory() -> None:
    two = TrainOptions(num_workers=2)
    assert not choose_adapters(two, QWEN_05B, 20 * GB, 1).options.lora  # a pod each (RayJob)
    shared = choose_adapters(two, QWEN_05B, 20 * GB, 2)  # both on this machine (local Ray)
    assert shared.options.lora and "per worker" in shared.reason


@pytest.mark.parametrize(
    ("options", "memory"),
    [
        (TrainOptions(lora_auto=False), 8 * GB),  # full_only: every weight, as asked
        (TrainOptions(use_gpu=True), 8 * GB),  # a GPU's memory is not this machine's
        (TrainOptions(), None),  # unknown memory (a remote Ray without the setting)
    ],
)
def test_the_choice_stays_as_asked_where_it_is_closed_or_unknowable(
    options: TrainOptions, memory: int | None
) -> None:
    choice = choose_adapters(options, STUDENT_15B, memory, 1)
    assert not choice.options.lora and not choice.reason


def test_adapters_asked_for_stay_whatever_the_memory() -> None:
    choice = choose_adapters(TrainOptions(lora=True, lora_auto=False), 1_000, 100 * GB, 1)
    assert choice.options.lora and not choice.reason


def test_the_memory_is_the_setting_else_measured_only_where_ray_is_local() -> None:
    assert training_memory(16.0, ray_is_local=False) == 16 * GB
    assert training_memory(16.0, ray_is_local=True) == 16 * GB
    assert training_memory(0.0, ray_is_local=False) is None
    measured = training_memory(0.0, ray_is_local=True)
    assert measured is not None and measured > 0


def test_the_key_holds_the_settled_choice_not_the_open_one() -> None:
    def key(options: TrainOptions) -> str:
        return training_key("b" * 64, ["d" * 64], "Do it.", options)

    assert key(TrainOptions(lora_auto=True)) == key(TrainOptions(lora_auto=False))
    assert key(TrainOptions(lora=True, lora_auto=False)) != key(TrainOptions(lora_auto=False))


def test_the_proto_leaves_the_choice_open_unless_full_only_or_enabled() -> None:
    unset = options_from_pb(trainer_pb2.TrainOptions())
    assert (unset.lora, unset.lora_auto) == (False, True)
    full = options_from_pb(trainer_pb2.TrainOptions(lora=trainer_pb2.LoraOptions(full_only=True)))
    assert (full.lora, full.lora_auto) == (False, False)
    on = options_from_pb(trainer_pb2.TrainOptions(lora=trainer_pb2.LoraOptions(enabled=True)))
    assert on.lora


def test_the_proto_refuses_adapters_and_every_weight_at_once() -> None:
    both = trainer_pb2.LoraOptions(enabled=True, full_only=True)
    with pytest.raises(InvalidInput, match="contradicts") as error:
        options_from_pb(trainer_pb2.TrainOptions(lora=both))
    assert error.value.field == "options.lora.full_only"


def test_the_model_card_says_why_adapters_were_trained(tmp_path: Path) -> None:
    task = TaskSpec("Answer.", (Example("2+2", "4"),))
    base = BaseModel("owner/base", tmp_path, "decoder-only", "0" * 64, "store")
    reason = choose_adapters(TrainOptions(), STUDENT_15B, 20 * GB, 1).reason
    chosen = model_card(base, task, TrainOptions(lora=True), {"report": {"lora_reason": reason}})
    assert f"| LoRA | r=8, alpha=16 (merged); chosen: {reason} |" in chosen
    asked = model_card(base, task, TrainOptions(lora=True), {"report": {}})
    assert "| LoRA | r=8, alpha=16 (merged) |" in asked
    assert "| LoRA | no |" in model_card(base, task, TrainOptions(), {"report": {}})
