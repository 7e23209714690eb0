"""The training loss with the batch's common prompt prefix computed once, not once per example.

Every input of a task starts with the same instruction. A decoder-only model's states for those
tokens do not depend on what follows them, so the prefix runs once (batch of one) and its key
and value cache is repeated for every row; the rest of each row runs on top of it. The loss and
gradients equal the plain forward's (up to float rounding): the prefix stops before any labelled
token, so no prediction is lost. Encoder-decoder models attend both ways and take the plain path.
"""

from __future__ import annotations

from typing import Any

from p2m.trainer.encode import IGNORE_INDEX
from p2m.trainer.labelled_logits import causal_lm_loss, takes_logits_mask
from p2m.trainer.wrapped import unwrapped

MIN_SHARED_TOKENS = 16  # below this the second forward call costs more than it saves


def shared_prefix_length(batch: dict[str, Any]) -> int:
    """Tokens every row starts with, stopping before the first labelled token of any row."""
    import torch

    input_ids, labels = batch["input_ids"], batch["labels"]
    if input_ids.shape[0] < 2 or labels.shape != input_ids.shape:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0)
    common = int(same.long().cumprod(dim=0).sum())
    labelled = labels != IGNORE_INDEX
    first_label = torch.where(labelled.any(dim=1), labelled.float().argmax(dim=1), labels.shape[1])
    # Position p's label is predicted from position p - 1: keep the first label's predecessor.
    return max(0, min(common, int(first_label.min()) - 1))


def training_loss(
    model: Any, batch: dict[str, Any], shared_prefix: bool, labelled_logits: bool = True
) -> Any:
    """The batch's mean loss; both options are for decoder-only models only.

    ``shared_prefix``: the prefix every row shares runs once where there is one worth sharing;
    ``labelled_logits``: logits only where a labelled token is predicted (``labelled_logits``).
    """
    prefix = shared_prefix_length(batch) if shared_prefix else 0
    if prefix < MIN_SHARED_TOKENS:
        return _loss(model, batch, labelled_logits)
    import torch

    rows = batch["input_ids"].shape[0]
    inner = unwrapped(model)  # the DDP wrapper syncs on the second call
    last_only = {"logits_to_keep": 1} if labelled_logits and takes_logits_mask(inner) else {}
    cache = inner(input_ids=batch["input_ids"][:1, :prefix], use_cache=True, **last_only).cache
    cache.batch_repeat_interleave(rows)
    width = batch["input_ids"].shape[1]
    positions = torch.arange(prefix, width, device=batch["input_ids"].device).expand(rows, -1)
    rest = {
        "input_ids": batch["input_ids"][:, prefix:],
        "attention_mask": batch["attention_mask"],
        "labels": batch["labels"][:, prefix:],
    }
    return _loss(model, rest, labelled_logits, cache=cache, position_ids=positions)


def _loss(model: Any, batch: dict[str, Any], labelled_logits: bool, **forward: Any) -> Any:
    if labelled_logits:
        return causal_lm_loss(model, batch, **forward)
    return model(**batch, **forward).loss
