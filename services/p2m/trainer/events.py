"""Training progress as typed events, and their one JSON form.

Two kinds: what a Ray Train worker tells the driver (``Worker*``, carried through the
TrainControl actor as objects) and what the trainer tells its caller (``TrainEvent``, also
written to a RayJob's progress file as JSON by ``train_event_to_json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from p2m.common.artifacts import ArtifactRef
from p2m.trainer.validation import Evaluation


@dataclass(frozen=True)
class TrainEvent:
    """One progress update; ``checkpoint`` is set right after a checkpoint is persisted.

    During a search ``trial`` (1-based) of ``trials`` names the run the step counts belong to.
    """

    step: int
    total_steps: int
    epoch: float
    loss: float | None = None
    eval_loss: float | None = None
    eval_exact_match: float | None = None
    eval_chrf: float | None = None
    learning_rate: float = 0.0
    samples_per_second: float = 0.0
    eta_s: float | None = None
    checkpoint: ArtifactRef | None = None
    message: str = ""
    trial: int = 0
    trials: int = 0


@dataclass(frozen=True)
class WorkerStarted:
    """The worker is set up: how many steps, and from which one (a resumed run)."""

    total_steps: int
    resumed_from_step: int
    steps_per_epoch: int
    world: int
    precision: str = "fp32"
    memory_tight: bool = False  # freed memory is returned at once (``freed_memory``)


@dataclass(frozen=True)
class WorkerStepped:
    """One optimizer step done; ``samples`` and ``busy_s`` count the whole run so far."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    samples_per_second: float
    eta_s: float
    samples: int
    busy_s: float


@dataclass(frozen=True)
class WorkerCheckpointed:
    """A checkpoint was reported at the end of an epoch (or of ``max_steps``)."""

    step: int
    epoch: float
    loss: float | None
    eval_loss: float | None


@dataclass(frozen=True)
class WorkerEvaluated:
    """A validation was done (rank 0); ``best_step``: whose weights are kept so far."""

    evaluation: Evaluation
    best_step: int


@dataclass(frozen=True)
class WorkerStopped:
    """The workers stopped at ``step`` because a stop was asked for."""

    step: int


WorkerEvent = WorkerStarted | WorkerStepped | WorkerEvaluated | WorkerCheckpointed | WorkerStopped


def train_event_to_json(event: TrainEvent) -> dict[str, Any]:
    """``event`` as JSON values."""
    return asdict(event)


def train_event_from_json(data: dict[str, Any]) -> TrainEvent:
    """A TrainEvent from ``train_event_to_json``'s form.

    Raises:
        TypeError: ``data`` is not such a form.
    """
    checkpoint = data.get("checkpoint")
    return TrainEvent(**{**data, "checkpoint": ArtifactRef(**checkpoint) if checkpoint else None})
