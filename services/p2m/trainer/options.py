"""Settings of one training, validated, and the key that names its result."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from p2m.common.errors import InvalidInput
from p2m.common.ranges import Within, check_ranges
from p2m.common.student import (
    DEFAULT_MAX_INPUT_TOKENS,
    DEFAULT_MAX_OUTPUT_TOKENS,
    TEMPLATE_VERSION,
    StudentSpec,
)
from p2m.common.types import Example

# Changing how models are trained changes this, so old cache entries are not reused.
TRAINER_VERSION = 4
DEFAULT_SEED = 42
PRECISIONS = ("auto", "fp32", "bf16")
# The paper's learning rate (for T5), kept for students up to SmolLM2-135M's size; a larger
# student fully fine-tuned takes less (``learning_rate_for``), never under the floor.
PAPER_LEARNING_RATE = 5e-5
RATE_REFERENCE_PARAMETERS = 135_000_000
LEAST_LEARNING_RATE = 1e-5
# What chooses the weights to keep: the decoded validation sample's ChrF++, or the loss.
SCORE, LOSS = "score", "loss"
KEEP_BEST_BY = (SCORE, LOSS)
# ``min_steps`` raises the epochs of a small dataset to at most this many.
MIN_STEPS_MAX_EPOCHS = 20


@dataclass(frozen=True)
class TrainOptions:
    """How to train; defaults follow the Prompt2Model paper. See trainer.proto for each field."""

    epochs: int = 3
    learning_rate: float = 0.0  # 0: ``learning_rate_for`` the base model
    batch_size: int = 8
    max_steps: int = 0
    min_steps: int = 100
    num_workers: int = 1
    use_gpu: bool = False
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    seed: int = DEFAULT_SEED
    lora: bool = False
    lora_auto: bool = True  # LoRA where full fine-tuning would not fit (``adapter_choice``)
    lora_r: int = 8
    lora_alpha: int = 16
    omit_instruction: bool = False
    max_instruction_tokens: int = 0
    max_grad_norm: float = 1.0
    max_eval_examples: int = 256
    precision: str = "auto"
    group_by_length: bool = True
    warmup_ratio: float = 0.06
    eval_steps: int = 0
    early_stopping_patience: int = 2
    eval_metric_examples: int = 32
    keep_best: bool = True
    keep_best_tolerance: float = 0.05
    keep_best_by: str = LOSS
    search_trials: int = 0
    search_min_learning_rate: float = 1e-5
    search_max_learning_rate: float = 5e-4
    constrain_outputs: bool = True
    validate_on_demonstrations: bool = True
    prompt_demonstrations: int = 0
    max_tokens_per_pass: int = 0

    def with_learning_rate_for(self, parameters: int) -> TrainOptions:
        """These options with a learning rate: ``learning_rate_for`` the model where it is 0."""
        if self.learning_rate:
            return self
        return replace(self, learning_rate=learning_rate_for(parameters, self.lora))

    def validate(self) -> None:
        """Raise InvalidInput naming the first field out of range (paths as in the proto)."""
        if self.precision not in PRECISIONS:
            raise InvalidInput("options.precision", f"must be one of {', '.join(PRECISIONS)}")
        if self.keep_best_by not in KEEP_BEST_BY:
            raise InvalidInput("options.keep_best_by", f"must be one of {', '.join(KEEP_BEST_BY)}")
        check_ranges(
            [
                Within("options.epochs", self.epochs, 1, 100),
                Within("options.learning_rate", self.learning_rate, 0.0, 1.0),
                Within("options.batch_size", self.batch_size, 1, 1024),
                Within("options.max_tokens_per_pass", self.max_tokens_per_pass, 0, 2**31 - 1),
                Within("options.max_steps", self.max_steps, 0, 2**63 - 1),
                Within("options.prompt_demonstrations", self.prompt_demonstrations, 0, 64),
                Within("options.min_steps", self.min_steps, 0, 2**31 - 1),
                Within("options.num_workers", self.num_workers, 1, 64),
                Within("options.max_input_tokens", self.max_input_tokens, 8, 8192),
                Within("options.max_output_tokens", self.max_output_tokens, 1, 4096),
                Within("options.max_instruction_tokens", self.max_instruction_tokens, 0, 8192),
                Within("options.lora.r", self.lora_r, 1, 256),
                Within("options.lora.alpha", self.lora_alpha, 1, 1024),
                Within("options.warmup_ratio", self.warmup_ratio, 0.0, 0.5),
                Within("options.eval_steps", self.eval_steps, 0, 2**31 - 1),
                Within("options.early_stopping_patience", self.early_stopping_patience, 0, 100),
                Within("options.eval_metric_examples", self.eval_metric_examples, 0, 1024),
                Within("options.keep_best_tolerance", self.keep_best_tolerance, 0.0, 1.0),
                Within("options.search_trials", self.search_trials, 0, 64),
                Within(
                    "options.search_min_learning_rate",
                    self.search_min_learning_rate,
                    0.0,
                    1.0,
                    above=True,
                ),
                Within(
                    "options.search_max_learning_rate",
                    self.search_max_learning_rate,
                    self.search_min_learning_rate,
                    1.0,
                ),
            ]
        )


def learning_rate_for(parameters: int, lora: bool) -> float:
    """The learning rate where none is set: 5e-5, less for a model larger than 135M parameters.

    Full fine-tuning scales the paper's rate by the square root of 135M over the parameters, to
    two significant digits, within [1e-5, 5e-5]: SmolLM2-135M keeps 5e-5, Qwen2.5-Coder-0.5B
    (630M) takes 2.3e-5. At 5e-5 that Qwen's validation ChrF++ after one epoch of 80 generated
    MCoNaLa examples was 26.7 and its loss rose from there; at 2e-5, 49.0, and it fell for
    another epoch. LoRA adapters (a few parameters, whatever the model) keep 5e-5.
    """
    if lora or parameters <= RATE_REFERENCE_PARAMETERS:
        return PAPER_LEARNING_RATE
    scaled = PAPER_LEARNING_RATE * math.sqrt(RATE_REFERENCE_PARAMETERS / parameters)
    return max(LEAST_LEARNING_RATE, float(f"{scaled:.1e}"))


def planned_epochs(options: TrainOptions, steps_per_epoch: int, validated: bool) -> int:
    """Epochs to run: ``options.epochs``, more where that is under ``options.min_steps`` steps.

    Small data is undertrained at a few epochs (80 examples at 3 epochs are 27 steps). The
    epochs are raised only where a validation split keeps the best weights (``validated`` and
    ``keep_best``), and to at most ``MIN_STEPS_MAX_EPOCHS``; early stopping and ``max_steps``
    still end training sooner. Without validation the last weights are the model, and on the
    paper's dev halves 10 epochs of 80 examples then scored below 3 on two tasks of three.
    """
    if not (validated and options.keep_best):
        return options.epochs
    wanted = math.ceil(options.min_steps / max(steps_per_epoch, 1))
    return max(options.epochs, min(wanted, MIN_STEPS_MAX_EPOCHS))


# Fields that change where, how fast or in how much memory training runs, never the weights it
# gives (on one device; a batch cut into passes gives its gradients up to float rounding).
_PLACEMENT_ONLY = ("use_gpu", "max_tokens_per_pass")
# Fields whose effect is another field's: ``lora_auto`` is settled into ``lora`` before the key.
_SETTLED = ("lora_auto",)


def training_key(
    base_model_sha: str,
    dataset_shas: list[str],
    instruction: str,
    options: TrainOptions,
    demonstrations: Sequence[Example] = (),
) -> str:
    """The sha256 naming this training: same base, data, instruction, options and prompt layout.

    The layout's version is part of it: a model trained on prompts laid out one way is not the
    model a newer layout would train. So are the ``demonstrations`` validated on, which choose
    the weights kept.
    """
    settings = {k: v for k, v in asdict(options).items() if k not in _PLACEMENT_ONLY + _SETTLED}
    payload = {
        "version": TRAINER_VERSION,
        "template": TEMPLATE_VERSION,
        "base_model": base_model_sha,
        "datasets": dataset_shas,
        "instruction": prompted_instruction(instruction, options),
        "options": settings,
    }
    if demonstrations:
        payload["validation_demonstrations"] = [[d.input, d.output] for d in demonstrations]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prompted_instruction(instruction: str, options: TrainOptions) -> str:
    """The instruction the student's prompts carry: none when it trains on bare inputs."""
    return "" if options.omit_instruction else instruction


def student_spec(
    options: TrainOptions, architecture: str, instruction: str, **saved: Any
) -> StudentSpec:
    """How a student trained with ``options`` is prompted: the one place its spec is built.

    Training (its validation decoding) and the model folder use this, so the saved spec
    prompts as the model was trained. ``saved`` holds what only the folder records
    (``base_model``, ``output_form``, ``output_labels``).
    """
    return StudentSpec(
        architecture=architecture,
        instruction=prompted_instruction(instruction, options),
        max_input_tokens=options.max_input_tokens,
        max_output_tokens=options.max_output_tokens,
        max_instruction_tokens=options.max_instruction_tokens,
        **saved,
    )
