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


def training_loss(model: Any, batch: dict[str, Any], decoder_only: bool) -> Any:
    """The batch's mean loss; the shared prefix runs once where there is one worth sharing."""
    prefix = shared_prefix_length(batch) if decoder_only else 0
    if prefix < MIN_SHARED_TOKENS:
        return model(**batch).loss
    import torch

    rows = batch["input_ids"].shape[0]
    inner = unwrapped(model)  # the DDP wrapper syncs on the second call
    cache = inner(input_ids=batch["input_ids"][:1, :prefix], use_cache=True).cache
    cache.batch_repeat_interleave(rows)
    width = batch["input_ids"].shape[1]
    positions = torch.arange(prefix, width, device=batch["input_ids"].device).expand(rows, -1)
    return model(
        input_ids=batch["input_ids"][:, prefix:],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"][:, prefix:],
        cache=cache,
        position_ids=positions,
    ).loss
