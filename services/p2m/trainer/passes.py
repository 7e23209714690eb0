"""One optimizer step's gradients from a batch cut into passes that fit a token budget.

A step's activations grow with its batch's padded tokens (rows x the longest row). Cut into
passes of at most ``max_tokens_per_pass`` padded tokens, each pass runs forward and backward
alone and its mean loss is weighted by its share of the batch's labelled tokens, so the
gradients add up to the whole batch's (its mean over labelled tokens, up to float rounding): the
same step, its activations bounded, for larger batches or longer inputs. Each pass is padded on
its own, the longest rows together. At the default batch of 8 it saves little and costs time:
there a step's peak is the weights, gradients and AdamW state, not activations (SQuAD examples,
Qwen2.5-Coder-0.5B: 13.4 GB whole or in passes of 1,024 tokens; SmolLM2-135M 4.4 against 4.0 GB
at 0.73x the speed), so it is off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from p2m.trainer.encode import IGNORE_INDEX
from p2m.trainer.labelled_logits import predicted_targets
from p2m.trainer.precision import autocast
from p2m.trainer.shared_prefix import training_loss

Row = dict[str, list[int]]


@dataclass(frozen=True)
class StepLoss:
    """A step's loss (the batch's mean over labelled tokens) and what its passes held."""

    loss: float
    passes: int
    tokens: int  # real tokens, input and labels
    padded_tokens: int  # tokens with the padding the passes carried


def row_tokens(row: Row, encoder_decoder: bool) -> int:
    """The tokens a row adds to a pass: its input, and an encoder-decoder's decoder labels."""
    return len(row["input_ids"]) + (len(row["labels"]) if encoder_decoder else 0)


def split_rows(rows: Sequence[Row], max_tokens: int, encoder_decoder: bool) -> list[list[Row]]:
    """The rows, longest first, in passes of at most ``max_tokens`` padded tokens each.

    A pass's padded tokens are its rows times its longest row; a row longer than the budget
    makes a pass alone. 0: one pass, the whole batch as it came.
    """
    if max_tokens <= 0:
        return [list(rows)]
    passes: list[list[Row]] = []
    current: list[Row] = []
    for row in sorted(rows, key=lambda r: -row_tokens(r, encoder_decoder)):
        # Longest first: a pass's first row is its longest.
        if current and row_tokens(current[0], encoder_decoder) * (len(current) + 1) > max_tokens:
            passes.append(current)
            current = []
        current.append(row)
    if current:
        passes.append(current)
    return passes


def labelled_tokens(labels: Any, encoder_decoder: bool) -> int:
    """The labelled tokens a pass's mean loss is over (a decoder-only model predicts the next)."""
    targets = labels if encoder_decoder else predicted_targets(labels)
    return int((targets != IGNORE_INDEX).sum())


def step_backward(
    model: Any,
    rows: Sequence[Row],
    pad: Callable[[Sequence[Row]], dict[str, Any]],
    device: Any,
    *,
    max_tokens_per_pass: int,
    precision: str,
    encoder_decoder: bool,
    shared_prefix: bool = True,
    labelled_logits: bool = True,
) -> StepLoss:
    """Gradients of the batch's mean loss accumulated in ``model``, pass by pass; its loss.

    ``pad`` collates rows into tensors. Under DDP only the last pass synchronises gradients.
    ``shared_prefix`` and ``labelled_logits`` apply to decoder-only models
    (``training_loss``).
    """
    batches = [
        {k: v.to(device) for k, v in pad(group).items()}
        for group in split_rows(rows, max_tokens_per_pass, encoder_decoder)
    ]
    counts = [labelled_tokens(b["labels"], encoder_decoder) for b in batches]
    total = sum(counts)
    # A pass without a labelled token adds nothing (where no pass has one, each counts alike).
    weighted = [
        (batch, count / total if total else 1 / len(batches))
        for batch, count in zip(batches, counts, strict=True)
        if count or not total
    ]
    loss_sum = 0.0
    for index, (batch, weight) in enumerate(weighted):
        last = index == len(weighted) - 1
        syncing = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with syncing:
            with autocast(precision, getattr(device, "type", str(device))):
                loss = training_loss(
                    model,
                    batch,
                    shared_prefix=shared_prefix and not encoder_decoder,
                    labelled_logits=labelled_logits,
                )
            (loss * weight if weight != 1.0 else loss).backward()
        loss_sum += float(loss.detach()) * weight
    return StepLoss(
        loss=loss_sum,
        passes=len(weighted),
        tokens=sum(row_tokens(r, encoder_decoder) for r in rows),
        padded_tokens=sum(_padded(b, encoder_decoder) for b, _ in weighted),
    )


def _padded(batch: dict[str, Any], encoder_decoder: bool) -> int:
    labels = batch["labels"].numel() if encoder_decoder else 0
    return int(batch["input_ids"].numel()) + int(labels)
