"""What a training is asked for and what it gives: the job, the report, the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from p2m.common.artifacts import ArtifactRef
from p2m.common.types import TaskSpec
from p2m.trainer.options import TrainOptions


@dataclass(frozen=True)
class TrainJob:
    """What to train: datasets (artifact refs), base model, task and options.

    ``lora_reason``: why LoRA adapters were chosen where the request left it open, once a
    trainer has settled the choice (so a RayJob's entrypoint, which trains the settled options,
    reports it too); it is not part of the training key. ``shown_demonstrations``: how many
    of the task's demonstrations a trainer has put in ``task.instruction``
    (``p2m.trainer.shown_demonstrations``), so they are not put there twice.
    """

    datasets: tuple[ArtifactRef, ...]
    base_model: str
    task: TaskSpec
    options: TrainOptions = field(default_factory=TrainOptions)
    base_model_architecture: str = ""
    base_model_artifact: str = ""
    run_id: str = ""
    lora_reason: str = ""
    shown_demonstrations: int = 0


@dataclass(frozen=True)
class TrainReport:
    """What a training did (see TrainReport in trainer.proto)."""

    steps: int
    epochs: float
    final_loss: float
    final_eval_loss: float | None
    train_seconds: float
    samples_per_second: float
    resumed_from_checkpoint: bool
    resumed_from_step: int
    backend: str
    train_examples: int
    validation_examples: int
    num_workers: int
    device: str
    ray_job_name: str = ""
    cached: bool = False
    precision: str = "fp32"
    memory_tight: bool = False
    lora_reason: str = ""  # why LoRA adapters were trained where the request left it open
    best_step: int = 0
    best_eval_loss: float | None = None
    stopped_early: bool = False
    evaluations: tuple[dict[str, Any], ...] = ()
    search_trials: tuple[dict[str, Any], ...] = ()
    planned_epochs: int = 0
    validation_demonstrations: int = 0
    prompt_demonstrations: int = 0  # the demonstrations every prompt shows


@dataclass(frozen=True)
class TrainOutcome:
    """The model artifact and the report."""

    model: ArtifactRef
    report: TrainReport
