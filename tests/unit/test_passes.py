"""A batch cut into passes under a token budget: the whole batch's loss and gradients."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from p2m.trainer.encode import IGNORE_INDEX, collate
from p2m.trainer.passes import row_tokens, split_rows, step_backward
from p2m.trainer.shared_prefix import MIN_SHARED_TOKENS
from tests.tiny_models import tiny_llama, tiny_t5

PREFIX = list(range(20, 20 + MIN_SHARED_TOKENS + 4))  # long enough to be computed once a pass
# Prompts and targets of different lengths, so passes differ in their labelled tokens.
PAIRS = [
    ([3, 4, 5, 6, 7], [8, 9]),
    ([5, 11], [12]),
    ([13, 6, 7, 14, 2, 2, 2], [15, 16, 17]),
    ([9, 9, 4], [10, 11, 12, 13]),
    ([7], [6]),
]


def _rows(prefix: list[int], pairs: list[tuple[list[int], list[int]]]) -> list[dict]:
    return [
        {
            "input_ids": [*prefix, *prompt, *target],
            "labels": [IGNORE_INDEX] * (len(prefix) + len(prompt)) + target,
        }
        for prompt, target in pairs
    ]


def _pad(rows: list[dict]) -> dict[str, Any]:
    return collate(rows, pad_token_id=0)


def _step(model: Any, rows: list[dict], budget: int, **options: Any) -> tuple[Any, list[Any]]:
    model.zero_grad()
    figures = step_backward(
        model,
        rows,
        _pad,
        "cpu",
        max_tokens_per_pass=budget,
        precision="fp32",
        encoder_decoder=options.pop("encoder_decoder", False),
        **options,
    )
    return figures, [p.grad.clone() for p in model.parameters() if p.requires_grad]


def _assert_same_step(
    model: Any, rows: list[dict], budget: int, plain_loss: Callable[[], Any] | None = None
) -> int:
    """The step in passes against the whole batch's; returns the passes it took."""
    import torch

    whole, whole_grads = _step(model, rows, 0)
    if plain_loss is not None:  # the whole batch's step is the model's own loss
        model.zero_grad()
        plain_loss().backward()
        for a, p in zip(whole_grads, model.parameters(), strict=False):
            torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    cut, cut_grads = _step(model, rows, budget)
    assert cut.loss == pytest.approx(whole.loss, rel=1e-5)
    for a, b in zip(whole_grads, cut_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    return cut.passes


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama().train()


def test_passes_hold_the_budget_longest_rows_first_and_lose_no_row() -> None:
    rows = _rows([], PAIRS)
    passes = split_rows(rows, 16, encoder_decoder=False)
    assert sorted(map(id, (r for p in passes for r in p))) == sorted(map(id, rows))
    for group in passes:
        assert len(group) * row_tokens(group[0], False) <= 16
    lengths = [len(r["input_ids"]) for p in passes for r in p]
    assert lengths == sorted(lengths, reverse=True)
    assert [len(p) for p in passes] == [1, 2, 2]  # 10 | 7, 6 | 3, 2
    assert split_rows(rows, 0, encoder_decoder=False) == [rows]  # as it came
    assert [len(p) for p in split_rows(rows, 4, encoder_decoder=False)] == [1, 1, 1, 1, 1]


def test_an_encoder_decoders_labels_count_towards_a_pass() -> None:
    rows = [{"input_ids": [1] * 6, "labels": [2] * 4}, {"input_ids": [1] * 6, "labels": [2] * 4}]
    assert len(split_rows(rows, 12, encoder_decoder=False)) == 1
    assert len(split_rows(rows, 12, encoder_decoder=True)) == 2


def test_passes_give_the_whole_batchs_loss_and_gradients(model: Any) -> None:
    rows = _rows([], PAIRS)
    batch = _pad(rows)
    assert _assert_same_step(model, rows, 16, lambda: model(**batch).loss) == 3


def test_with_the_shared_prefix_computed_once_a_pass(model: Any) -> None:
    rows = _rows(PREFIX, PAIRS)
    budget = 2 * len(rows[2]["input_ids"])  # two rows a pass: the prefix is shared in each
    assert _assert_same_step(model, rows, budget) == 3


def test_a_pass_with_no_labelled_token_adds_nothing(model: Any) -> None:
    unlabelled = {"input_ids": list(range(30, 42)), "labels": [IGNORE_INDEX] * 12}
    rows = [unlabelled, *_rows([], PAIRS)]
    assert _assert_same_step(model, rows, 12) == 4  # of 5: the unlabelled row's is skipped


def test_an_encoder_decoder_in_passes() -> None:
    import torch

    t5 = tiny_t5().train()
    rows = [{"input_ids": p, "labels": t} for p, t in PAIRS]
    whole, whole_grads = _step(t5, rows, 0, encoder_decoder=True)
    cut, cut_grads = _step(t5, rows, 10, encoder_decoder=True)
    assert cut.passes > 1
    assert cut.loss == pytest.approx(whole.loss, rel=1e-5)
    for a, b in zip(whole_grads, cut_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_under_ddp_the_passes_accumulate_before_the_one_sync() -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        inner = tiny_llama(seed=2).train()
        wrapped = DistributedDataParallel(inner, bucket_cap_mb=1024)  # one bucket
        reductions: list[int] = []

        def counted(state, bucket):  # type: ignore[no-untyped-def]  # DDP reads the annotations
            reductions.append(1)
            return allreduce_hook(state, bucket)

        wrapped.register_comm_hook(None, counted)
        rows = _rows([], PAIRS)
        whole, whole_grads = _step(inner, rows, 0)
        cut, cut_grads = _step(wrapped, rows, 16)
        assert cut.passes == 3
        assert len(reductions) == 1  # the last pass's backward, not one a pass
        assert cut.loss == pytest.approx(whole.loss, rel=1e-5)
        for a, b in zip(whole_grads, cut_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    finally:
        dist.destroy_process_group()
