"""Validation during training: loss, the task's scores on a sample, and the best so far.

The loss is over the validation rows, Exact Match and ChrF++ over a sample of them; the
bookkeeping says which weights to keep and when a training no longer learns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from p2m.common.student import Decoding, StudentSpec, generate_batch
from p2m.common.text_scores import chrf_corpus, exact_match
from p2m.common.types import Example
from p2m.trainer.wrapped import evaluating

DECODING_SLACK_TOKENS = 8  # beyond the longest reference in the sample


@dataclass(frozen=True)
class Evaluation:
    """One validation: where training stood and what it scored (None: not measured)."""

    step: int
    epoch: float
    loss: float | None
    eval_loss: float | None
    exact_match: float | None = None  # 0..1 on the sample
    chrf: float | None = None  # ChrF++ 0..100 on the sample
    examples_seen: int = 0

    def to_json(self) -> dict[str, Any]:
        """As JSON values."""
        return asdict(self)


@dataclass
class BestSoFar:
    """The lowest validation loss so far, where it was, and the evaluations since."""

    step: int = 0
    eval_loss: float | None = None
    since: int = 0  # evaluations without improvement
    history: list[Evaluation] = field(default_factory=list)

    def record(self, evaluation: Evaluation) -> bool:
        """Add ``evaluation``; True when it is the new best (lower validation loss)."""
        self.history.append(evaluation)
        loss = evaluation.eval_loss
        if loss is None:
            return False
        if self.eval_loss is None or loss < self.eval_loss:
            self.step, self.eval_loss, self.since = evaluation.step, loss, 0
            return True
        self.since += 1
        return False

    def exhausted(self, patience: int) -> bool:
        """True after ``patience`` evaluations without improvement (never when 0)."""
        return patience > 0 and self.since >= patience

    def to_json(self) -> dict[str, Any]:
        """As JSON values (saved in each checkpoint)."""
        return {
            "step": self.step,
            "eval_loss": self.eval_loss,
            "since": self.since,
            "history": [e.to_json() for e in self.history],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> BestSoFar:
        """The form ``to_json`` wrote (a fresh one for None)."""
        if not data:
            return cls()
        return cls(
            step=int(data["step"]),
            eval_loss=data["eval_loss"],
            since=int(data["since"]),
            history=[Evaluation(**e) for e in data["history"]],
        )


def validation_loss(
    model: Any,
    rows: Sequence[dict[str, list[int]]],
    pad: Callable[[list[dict[str, list[int]]]], dict[str, Any]],
    batch_size: int,
    device: Any,
) -> float | None:
    """Mean loss over ``rows`` (None without rows); the model is left in training mode."""
    import torch

    if not rows:
        return None
    total = 0.0
    with evaluating(model) as inner, torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = list(rows[start : start + batch_size])
            batch = {k: v.to(device) for k, v in pad(chunk).items()}
            total += float(inner(**batch).loss.item()) * len(chunk)
    return total / len(rows)


def sample_scores(
    model: Any,
    tokenizer: Any,
    spec: StudentSpec,
    examples: Sequence[Example],
    batch_size: int,
    device: Any,
) -> tuple[float | None, float | None]:
    """Exact Match (0..1) and ChrF++ (0..100) of greedy outputs on ``examples`` (None: none)."""
    if not examples:
        return None, None
    longest = max(len(tokenizer(e.output, add_special_tokens=False)["input_ids"]) for e in examples)
    decoding = Decoding(
        max_new_tokens=min(spec.max_output_tokens, longest + DECODING_SLACK_TOKENS),
        batch_size=batch_size,
    )
    predictions: list[str] = []
    with evaluating(model) as inner:
        for start in range(0, len(examples), batch_size):
            inputs = [e.input for e in examples[start : start + batch_size]]
            predictions += generate_batch(inner, tokenizer, spec, inputs, decoding, device)
    references = [e.output.strip() for e in examples]
    matches = sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True))
    return matches / len(examples), chrf_corpus(predictions, references)
