"""The student model's text format, its saved settings, and batched prediction.

One module, so the trainer, the evaluator and the model server build the same input text and
decode with the same settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2m.common.errors import FailedPrecondition, InvalidInput
from p2m.common.output_form import FREE, KINDS, LABELS, OutputForm
from p2m.common.prompt_layout import prompt_ids

SPEC_FILE = "p2m_student.json"
TEMPLATE_VERSION = 2  # p2m.common.prompt_layout: 2 fits instruction and input to the budget
ARCHITECTURES = ("encoder-decoder", "decoder-only")
DEFAULT_MAX_INPUT_TOKENS = 384
DEFAULT_MAX_OUTPUT_TOKENS = 128


@dataclass(frozen=True)
class StudentSpec:
    """What a model folder needs beyond its weights to be used as the task's student.

    Attributes:
        architecture: "encoder-decoder" or "decoder-only".
        instruction: Prepended to every input; empty when trained on bare inputs.
        max_input_tokens: Prompts are fitted to this many tokens (``p2m.common.prompt_layout``).
        max_output_tokens: Outputs are at most this many tokens (also the decoding default).
        base_model: The model it was fine-tuned from.
        template_version: Version of the prompt's layout (``p2m.common.prompt_layout``).
        output_form: What every output is: "free" text, a "span" of its input, or one of
            ``output_labels`` ("labels"); answers are held to it (``p2m.common.output_form``).
        output_labels: The labels of a "labels" form.
        max_instruction_tokens: The instruction's own token limit (its start kept); 0: only
            the layout's share of ``max_input_tokens``.
    """

    architecture: str
    instruction: str
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    base_model: str = ""
    template_version: int = TEMPLATE_VERSION
    output_form: str = FREE
    output_labels: tuple[str, ...] = ()
    max_instruction_tokens: int = 0

    def __post_init__(self) -> None:
        """Check the architecture, token limits and output form."""
        if self.architecture not in ARCHITECTURES:
            raise InvalidInput("architecture", f"expected one of {ARCHITECTURES}")
        if self.max_input_tokens < 1 or self.max_output_tokens < 1:
            raise InvalidInput("max_input_tokens", "token limits must be positive")
        if self.max_instruction_tokens < 0:
            raise InvalidInput("max_instruction_tokens", "must be >= 0")
        if self.output_form not in KINDS or (self.output_form == LABELS) != bool(
            self.output_labels
        ):
            raise InvalidInput("output_form", f"expected one of {KINDS}, labels only with labels")
        object.__setattr__(self, "output_labels", tuple(self.output_labels))

    @property
    def form(self) -> OutputForm:
        """The form its answers are held to."""
        return OutputForm(self.output_form, self.output_labels)

    def hold(self, inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
        """``outputs`` for ``inputs`` held to the output form."""
        form = self.form
        return [form.hold(output, text) for text, output in zip(inputs, outputs, strict=True)]

    def save(self, folder: Path) -> None:
        """Write the spec as ``p2m_student.json`` in ``folder``."""
        (folder / SPEC_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", "utf-8")

    @classmethod
    def load(cls, folder: Path) -> StudentSpec:
        """Read the spec a trainer saved in ``folder``.

        Raises:
            FailedPrecondition: The folder has no readable spec (not a trained student).
        """
        path = folder / SPEC_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as error:
            raise FailedPrecondition(f"{folder} is not a student model folder: {error}") from error


@dataclass(frozen=True)
class Decoding:
    """How predictions are decoded; the evaluator and the model server use the same values."""

    max_new_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    num_beams: int = 1
    batch_size: int = 8


class Student:
    """A loaded student: tokenizer, model and spec, ready to predict in batches."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        """Load the model folder a trainer wrote (``p2m_student.json`` beside the weights)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        self.folder = folder
        self.spec = StudentSpec.load(folder)
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        ensure_pad_token(self.tokenizer)
        loader = (
            AutoModelForSeq2SeqLM
            if self.spec.architecture == "encoder-decoder"
            else AutoModelForCausalLM
        )
        model = loader.from_pretrained(folder, dtype=torch.float32)
        self.model = model.to(device).eval()  # type: ignore[arg-type]

    @property
    def num_parameters(self) -> int:
        """Parameters of the model."""
        return sum(p.numel() for p in self.model.parameters())

    def predict(self, inputs: Sequence[str], decoding: Decoding | None = None) -> list[str]:
        """Predicted outputs for raw ``inputs``, in order, held to the spec's output form.

        The instruction is added here.
        """
        decoding = decoding or Decoding(max_new_tokens=self.spec.max_output_tokens)
        outputs: list[str] = []
        for start in range(0, len(inputs), max(1, decoding.batch_size)):
            batch = inputs[start : start + max(1, decoding.batch_size)]
            outputs.extend(self._predict_batch(batch, decoding))
        return self.spec.hold(inputs, outputs)

    def _predict_batch(self, inputs: Sequence[str], decoding: Decoding) -> list[str]:
        return generate_batch(self.model, self.tokenizer, self.spec, inputs, decoding, self.device)


def generate_batch(
    model: Any,
    tokenizer: Any,
    spec: StudentSpec,
    inputs: Sequence[str],
    decoding: Decoding,
    device: Any = "cpu",
) -> list[str]:
    """Greedy (or beam) outputs of ``model`` for raw ``inputs``, formatted as ``spec`` says."""
    import torch

    tokenizer.padding_side = "left"
    prompts = encode_prompts(tokenizer, spec, inputs)
    encoded = tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(device)
    with torch.inference_mode():
        generated = model.generate(
            **encoded,
            max_new_tokens=decoding.max_new_tokens,
            num_beams=decoding.num_beams,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    if spec.architecture == "decoder-only":
        generated = generated[:, encoded["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]


def encode_prompts(tokenizer: Any, spec: StudentSpec, inputs: Sequence[str]) -> list[list[int]]:
    """The token ids ``generate_batch`` feeds the model for ``inputs`` (unpadded)."""
    return prompt_ids(
        tokenizer,
        spec.instruction,
        inputs,
        spec.max_input_tokens,
        spec.template_version,
        spec.max_instruction_tokens,
    )


def ensure_pad_token(tokenizer: Any) -> None:
    """Give a tokenizer without a padding token its end-of-text token as one."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise FailedPrecondition("the tokenizer has neither a padding nor an end token")
        tokenizer.pad_token = tokenizer.eos_token
