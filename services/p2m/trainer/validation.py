"""Validation during training: loss, the task's scores on a sample, and the best so far.

The loss is over the validation rows, Exact Match and ChrF++ over a sample of them; the
bookkeeping says which weights to keep and when a training no longer learns: by the loss
(``LOSS``; among losses tied with the lowest, the better sample), or by the sample's ChrF++
(``SCORE``; the lower loss breaks a tie).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from p2m.common.student import Decoding, StudentSpec, generate_batch
from p2m.common.text_scores import chrf_corpus, exact_match
from p2m.common.types import Example
from p2m.trainer.labelled_logits import causal_lm_loss
from p2m.trainer.options import LOSS, SCORE
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
    """The weights to keep so far, their validation loss, and the validations since the best.

    By ``LOSS`` (the default) losses within ``tolerance`` (a share) of the lowest are read as
    tied: on a validation split of a few dozen rows they differ by noise. Among tied validations
    the one whose decoded sample scores the higher ChrF++ is kept; a loss lower than the kept
    one's by more than the tolerance is kept whatever its sample scores.

    By ``SCORE`` the kept weights are those whose decoded sample scores the highest ChrF++ (the
    lower loss among equal scores); a validation without a sample falls back to ``LOSS``. A
    student's loss can rise while its answers still improve: Qwen2.5-Coder-0.5B trained at 5e-5
    on 80 generated MCoNaLa examples had its lowest loss after epoch 1 of 3, its sample ChrF++
    26.7, 36.4 and 35.7 over them.

    Early stopping counts validations without a new best by the same measure.
    """

    step: int = 0
    eval_loss: float | None = None  # the kept weights' validation loss
    since: int = 0  # validations without a new best
    history: list[Evaluation] = field(default_factory=list)

    @property
    def lowest(self) -> float | None:
        """The lowest validation loss so far (None before any)."""
        return min((e.eval_loss for e in self.history if e.eval_loss is not None), default=None)

    @property
    def chrf(self) -> float | None:
        """The kept weights' ChrF++ on the sample (None: none kept, or not measured)."""
        kept = (e for e in self.history if e.step == self.step and e.eval_loss is not None)
        return next((e.chrf for e in kept), None)

    def record(self, evaluation: Evaluation, tolerance: float = 0.0, by: str = LOSS) -> bool:
        """Add ``evaluation``; True when its weights are now the ones to keep."""
        if by == SCORE and evaluation.chrf is not None and evaluation.eval_loss is not None:
            return self._record_score(evaluation, evaluation.eval_loss, evaluation.chrf)
        lowest = self.lowest
        self.history.append(evaluation)
        loss = evaluation.eval_loss
        if loss is None:
            return False
        self.since = 0 if lowest is None or loss < lowest else self.since + 1
        if not self._keeps(evaluation, loss, tolerance):
            return False
        self.step, self.eval_loss = evaluation.step, loss
        return True

    def _record_score(self, evaluation: Evaluation, loss: float, chrf: float) -> bool:
        kept_chrf, kept_loss = self.chrf, self.eval_loss
        self.history.append(evaluation)
        better = (
            kept_chrf is None
            or kept_loss is None
            or chrf > kept_chrf
            or (chrf == kept_chrf and loss < kept_loss)
        )
        self.since = 0 if better else self.since + 1
        if better:
            self.step, self.eval_loss = evaluation.step, loss
        return better

    def _keeps(self, evaluation: Evaluation, loss: float, tolerance: float) -> bool:
        if self.eval_loss is None or loss < self.eval_loss * (1 - tolerance):
            return True
        lowest = self.lowest
        if lowest is None or loss > lowest * (1 + tolerance):
            return False
        kept_chrf = self.chrf
        if evaluation.chrf is None or kept_chrf is None or evaluation.chrf == kept_chrf:
            return loss < self.eval_loss
        return evaluation.chrf > kept_chrf

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
            total += float(causal_lm_loss(inner, batch).item()) * len(chunk)
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
