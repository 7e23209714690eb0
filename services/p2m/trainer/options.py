"""Settings of one training, validated, and the key that names its result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from p2m.common.ranges import Within, check_ranges
from p2m.common.student import DEFAULT_MAX_INPUT_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS

# Changing how models are trained changes this, so old cache entries are not reused.
TRAINER_VERSION = 1
DEFAULT_SEED = 42


@dataclass(frozen=True)
class TrainOptions:
    """How to train; defaults follow the Prompt2Model paper. See trainer.proto for each field."""

    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 8
    max_steps: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    seed: int = DEFAULT_SEED
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    omit_instruction: bool = False
    max_grad_norm: float = 1.0
    max_eval_examples: int = 256

    def validate(self) -> None:
        """Raise InvalidInput naming the first field out of range (paths as in the proto)."""
        check_ranges(
            [
                Within("options.epochs", self.epochs, 1, 100),
                Within("options.learning_rate", self.learning_rate, 0.0, 1.0, above=True),
                Within("options.batch_size", self.batch_size, 1, 1024),
                Within("options.max_steps", self.max_steps, 0, 2**63 - 1),
                Within("options.num_workers", self.num_workers, 1, 64),
                Within("options.max_input_tokens", self.max_input_tokens, 8, 8192),
                Within("options.max_output_tokens", self.max_output_tokens, 1, 4096),
                Within("options.lora.r", self.lora_r, 1, 256),
                Within("options.lora.alpha", self.lora_alpha, 1, 1024),
            ]
        )


# Fields that change where or how fast training runs, never the weights it gives (on one device).
_PLACEMENT_ONLY = ("use_gpu",)


def training_key(
    base_model_sha: str,
    dataset_shas: list[str],
    instruction: str,
    options: TrainOptions,
) -> str:
    """The sha256 naming this training: same base, data, instruction and options, same model."""
    settings = {k: v for k, v in asdict(options).items() if k not in _PLACEMENT_ONLY}
    payload = {
        "version": TRAINER_VERSION,
        "base_model": base_model_sha,
        "datasets": dataset_shas,
        "instruction": "" if options.omit_instruction else instruction,
        "options": settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
