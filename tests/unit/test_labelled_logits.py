"""Logits only where a labelled token is predicted: the plain forward's loss and gradients."""

from __future__ import annotations

from typing import Any

import pytest

from p2m.trainer.encode import IGNORE_INDEX, collate
from p2m.trainer.labelled_logits import causal_lm_loss, takes_logits_mask
from p2m.trainer.shared_prefix import MIN_SHARED_TOKENS, training_loss
from tests.tiny_models import tiny_llama, tiny_t5

# Prompts of different lengths, so right padding leaves the labels at different positions.
PAIRS = [([3, 4, 5, 6, 7], [8, 9]), ([5, 11], [12]), ([13, 6, 7, 14, 2, 2, 2], [15, 16, 17])]


def _batch(prefix: list[int] | None = None) -> dict[str, Any]:
    rows = [
        {
            "input_ids": [*(prefix or []), *prompt, *target],
            "labels": [IGNORE_INDEX] * (len(prefix or []) + len(prompt)) + target,
        }
        for prompt, target in PAIRS
    ]
    return collate(rows, pad_token_id=0)


def _loss_and_grads(model: Any, loss_of: Any) -> tuple[float, list[Any]]:
    model.zero_grad()
    loss = loss_of()
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def _assert_same(a: tuple[float, list[Any]], b: tuple[float, list[Any]]) -> None:
    import torch

    assert b[0] == pytest.approx(a[0], rel=1e-5)
    for x, y in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_llama().train()


def test_the_head_runs_on_the_labelled_predictions_only(model: Any) -> None:
    batch = _batch()
    rows_seen: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _module, inputs, _output: rows_seen.append(inputs[0].reshape(-1, 32).shape[0])
    )
    try:
        causal_lm_loss(model, batch)
    finally:
        hook.remove()
    assert rows_seen == [2 + 1 + 3]  # the targets' tokens, not 3 rows x 10 positions


def test_loss_and_gradients_match_the_plain_forward(model: Any) -> None:
    batch = _batch()
    plain = _loss_and_grads(model, lambda: model(**batch).loss)
    _assert_same(plain, _loss_and_grads(model, lambda: causal_lm_loss(model, batch)))


def test_with_the_shared_prefix_too(model: Any) -> None:
    batch = _batch(list(range(20, 20 + MIN_SHARED_TOKENS + 4)))
    plain = _loss_and_grads(model, lambda: model(**batch).loss)
    both = _loss_and_grads(model, lambda: training_loss(model, batch, shared_prefix=True))
    _assert_same(plain, both)


def test_lora_adapters_take_the_same_path() -> None:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = get_peft_model(tiny_llama(seed=1), LoraConfig(task_type=TaskType.CAUSAL_LM, r=4))
    lora.train()
    assert takes_logits_mask(lora)
    batch = _batch()
    plain = _loss_and_grads(lora, lambda: lora(**batch).loss)
    _assert_same(plain, _loss_and_grads(lora, lambda: causal_lm_loss(lora, batch)))


def test_encoder_decoder_models_keep_the_plain_loss() -> None:
    t5 = tiny_t5()
    assert not takes_logits_mask(t5)
    batch = _batch()
    assert causal_lm_loss(t5, batch).item() == pytest.approx(t5(**batch).loss.item())
