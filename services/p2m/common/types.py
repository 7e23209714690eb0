"""Value types shared by every stage: frozen dataclasses, independent of gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from p2m.common.errors import InvalidInput


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

    @classmethod
    def from_json(cls, data: Any, field_path: str = "task") -> TaskSpec:
        """The TaskSpec ``to_json`` wrote (only ``instruction`` is required; other keys ignored).

        Raises:
            InvalidInput: A key is of the wrong type, or the instruction is empty; ``field_path``
                names it.
        """
        if not isinstance(data, dict):
            raise InvalidInput(field_path, "must be a JSON object")
        instruction = data.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise InvalidInput(f"{field_path}.instruction", "must be a non-empty string")
        demonstrations = data.get("demonstrations", [])
        if not isinstance(demonstrations, list):
            raise InvalidInput(f"{field_path}.demonstrations", "must be a list of {input, output}")
        examples = []
        for number, demo in enumerate(demonstrations):
            where = f"{field_path}.demonstrations[{number}]"
            if not isinstance(demo, dict):
                raise InvalidInput(where, "must be an object {input, output}")
            for key in ("input", "output"):
                if not isinstance(demo.get(key), str):
                    raise InvalidInput(f"{where}.{key}", "must be a string")
            examples.append(Example(demo["input"], demo["output"]))
        method = data.get("parse_method", ParseMethod.DETERMINISTIC.value)
        if method not in {m.value for m in ParseMethod}:
            raise InvalidInput(f"{field_path}.parse_method", f"unknown method {method!r}")
        return cls(
            instruction=instruction,
            demonstrations=tuple(examples),
            language=str(data.get("language", "en")),
            original_instruction=str(data.get("original_instruction", "")),
            parse_method=ParseMethod(method),
            warnings=tuple(str(w) for w in data.get("warnings", ())),
            prompt_sha256=str(data.get("prompt_sha256", "")),
        )
