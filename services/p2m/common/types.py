"""Value types shared by every stage: frozen dataclasses, independent of gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class Example:
    """One input/output pair of a text-to-text task."""

    input: str
    output: str


class ParseMethod(Enum):
    """How a prompt became a TaskSpec."""

    DETERMINISTIC = "deterministic"
    LLM = "llm"


@dataclass(frozen=True)
class TaskSpec:
    """The task a prompt describes.

    Attributes:
        instruction: The instruction in English (translated when written in another language).
        demonstrations: The prompt's examples, verbatim and in order.
        language: ISO 639-1 code of the language the instruction was written in.
        original_instruction: The instruction as written when not English; empty otherwise.
        parse_method: Which path produced the spec.
        warnings: What a person should know about the parse.
        prompt_sha256: Hash of the raw prompt.
    """

    instruction: str
    demonstrations: tuple[Example, ...] = ()
    language: str = "en"
    original_instruction: str = ""
    parse_method: ParseMethod = ParseMethod.DETERMINISTIC
    warnings: tuple[str, ...] = field(default=())
    prompt_sha256: str = ""

    def to_json(self) -> dict[str, object]:
        """A plain-JSON view: ``{instruction, demonstrations: [{input, output}], ...}``."""
        return {
            "instruction": self.instruction,
            "demonstrations": [{"input": d.input, "output": d.output} for d in self.demonstrations],
            "language": self.language,
            "original_instruction": self.original_instruction,
            "parse_method": self.parse_method.value,
            "warnings": list(self.warnings),
            "prompt_sha256": self.prompt_sha256,
        }
