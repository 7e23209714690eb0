"""The instruction's tokens computed once per batch: the plain forward's loss and gradients."""

from __future__ import annotations

from typing import Any

import pytest

from p2m.trainer.encode import IGNORE_INDEX, collate
from p2m.trainer.shared_prefix import MIN_SHARED_TOKENS, shared_prefix_length, training_loss
from tests.tiny_models import tiny_llama


def _rows(prefix: list[int], tails: list[tuple[list[int], list[int]]]) -> list[dict]:
    """Rows of prompt (prefix + tail prompt) and target, labelled on the target only."""
    return [
        {
            "input_ids": [*prefix, *prompt, *target],
            "labels": [IGNORE_INDEX] * (len(prefix) + len(prompt)) + target,
        }
        for prompt, target in tails
    ]


TAILS = [([5, 6, 7], [8, 9]), ([5, 11], [12]), ([13, 6, 7, 14], [15, 16, 17])]


def test_the_prefix_stops_before_the_first_labelled_token() -> None:
    batch = collate(_rows(list(range(20, 40)), TAILS), pad_token_id=0)
    assert shared_prefix_length(batch) == 20  # row 3's prompt differs at its first own token
    same_prompts = collate(_rows(list(range(20, 40)), [([5], [8]), ([5], [9])]), 0)
    assert shared_prefix_length(same_prompts) == 20  # 21 tokens alike; the 21st predicts a label
    assert shared_prefix_length(collate(_rows([1, 2], TAILS[:1]), 0)) == 0  # one row: nothing


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama().train()


def test_loss_and_gradients_match_the_plain_forward(model: Any) -> None:
    import torch

    batch = collate(_rows(list(range(20, 20 + MIN_SHARED_TOKENS + 4)), TAILS), pad_token_id=0)
    assert shared_prefix_length(batch) >= MIN_SHARED_TOKENS  # the shared path is taken
    grads = []
    for decoder_only in (False, True):  # False: the plain forward
        model.zero_grad()
        loss = training_loss(model, batch, decoder_only)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (plain_loss, plain), (shared_loss, shared) = grads
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    for a, b in zip(plain, shared, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
