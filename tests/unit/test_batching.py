"""Each step's batch: every example once an epoch, grouped by length, alike on every rank."""

from __future__ import annotations

import random

import pytest

from p2m.trainer.batching import MEGABATCH, epoch_batches, steps_per_epoch
from p2m.trainer.precision import autocast, resolve_precision


def _lengths(count: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(10, 400) for _ in range(count)]


def _padding(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("group", [True, False])
def test_an_epoch_holds_every_example_once(group: bool) -> None:
    lengths = _lengths(103)
    batches = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=group)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert len(batches) == steps_per_epoch(103, 8, 1) == 13
    assert all(len(b) == 8 for b in batches[:-1] if not group)


def test_grouping_cuts_padding_and_keeps_the_batches_shuffled() -> None:
    lengths = _lengths(8 * MEGABATCH * 2)
    grouped = epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=True)
    plain = epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=False)
    assert _padding(lengths, grouped) < _padding(lengths, plain) / 5
    longest_first = [max(lengths[i] for i in b) for b in grouped]
    assert longest_first != sorted(longest_first, reverse=True)  # batch order is shuffled


def test_the_order_follows_seed_and_epoch_and_repeats_for_a_resumed_run() -> None:
    lengths = _lengths(64)
    first = epoch_batches(lengths, 4, seed=7, epoch=0)
    assert first == epoch_batches(lengths, 4, seed=7, epoch=0)
    assert first != epoch_batches(lengths, 4, seed=7, epoch=1)
    assert first != epoch_batches(lengths, 4, seed=8, epoch=0)


def test_ranks_split_each_global_batch_and_take_the_same_number_of_steps() -> None:
    lengths = _lengths(37)
    ranks = [epoch_batches(lengths, 4, world=3, rank=r, seed=2, epoch=0) for r in range(3)]
    assert [len(batches) for batches in ranks] == [steps_per_epoch(37, 4, 3)] * 3 == [4] * 3
    assert all(batch for batches in ranks for batch in batches)  # no rank gets an empty batch
    seen = [i for batches in ranks for batch in batches for i in batch]
    assert set(seen) == set(range(37))


def test_a_last_batch_smaller_than_the_world_is_filled_up() -> None:
    ranks = [epoch_batches([5] * 9, 4, world=4, rank=r, seed=0, epoch=0) for r in range(4)]
    assert all(len(batches) == 1 and batches[0] for batches in ranks)


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"


def test_bf16_autocast_runs_matrix_products_in_bf16() -> None:
    import torch

    layer = torch.nn.Linear(4, 4)
    with autocast("bf16", "cpu"):
        assert layer(torch.ones(2, 4)).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert layer(torch.ones(2, 4)).dtype == torch.float32
