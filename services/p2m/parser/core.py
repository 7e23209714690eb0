"""Prompt -> TaskSpec: markers read deterministically, the LLM for everything else."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2m.common.errors import InvalidInput, LLMOutputError
from p2m.common.llm import ChatResult, LLMClient
from p2m.common.prompt_text import validate_prompt
from p2m.common.types import Example, ParseMethod, TaskSpec
from p2m.parser.language import detect_language
from p2m.parser.markers import parse_marked
from p2m.parser.translation import translate

log = logging.getLogger(__name__)

DEFAULT_MAX_PROMPT_BYTES = 64 * 1024
# Prompts longer than this are not sent to the LLM for splitting (small local context).
MAX_LLM_PROMPT_CHARS = 6000

SPLIT_SCHEMA = {
    "type": "object",
    "properties": {
        "instruction": {"type": "string"},
        "demonstrations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"input": {"type": "string"}, "output": {"type": "string"}},
                "required": ["input", "output"],
            },
        },
    },
    "required": ["instruction", "demonstrations"],
}
SPLIT_SYSTEM = (
    "You split a task prompt into its parts. The instruction says what the task is. "
    "Demonstrations are example pairs copied word for word from the prompt: the input a "
    "model reads and the output it should write. If the prompt has no examples, "
    "demonstrations is an empty list. Answer with JSON only."
)
SPLIT_EXAMPLE_PROMPT = (
    "Turn each city into its country.\nParis becomes France. Tokyo becomes Japan."
)
SPLIT_EXAMPLE_ANSWER = json.dumps(
    {
        "instruction": "Turn each city into its country.",
        "demonstrations": [
            {"input": "Paris", "output": "France"},
            {"input": "Tokyo", "output": "Japan"},
        ],
    }
)
LLMGetter = Callable[[], Awaitable[LLMClient]]


@dataclass(frozen=True)
class ParseUsage:
    """LLM requests and tokens one parse spent."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    capped_answers: int = 0
    stopped_answers: int = 0

    @property
    def failed_requests(self) -> int:
        """Attempts that failed: on this path every retry follows a failure."""
        return self.retries

    def plus(self, result: ChatResult) -> ParseUsage:
        """This usage with one more LLM call added."""
        return ParseUsage(
            self.requests + result.attempts,
            self.retries + result.attempts - 1,
            self.prompt_tokens + result.prompt_tokens,
            self.completion_tokens + result.completion_tokens,
            self.capped_answers + result.capped,
            self.stopped_answers + result.stopped,
        )


@dataclass(frozen=True)
class ParseResult:
    """A parsed task and what it cost."""

    task: TaskSpec
    usage: ParseUsage


class PromptParser:
    """Parses prompts; asks ``llm()`` for a client only when the LLM is needed."""

    def __init__(self, llm: LLMGetter, *, max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES):
        """Use ``llm`` to get the LLM client lazily; reject prompts over ``max_prompt_bytes``."""
        self._llm = llm
        self._max_prompt_bytes = max_prompt_bytes

    async def parse(
        self, prompt: str | bytes, *, translate: bool = True, field: str = "prompt"
    ) -> ParseResult:
        """Parse one prompt.

        Args:
            prompt: The prompt as text, or raw bytes that must be UTF-8.
            translate: Translate a non-English instruction to English with the LLM.
            field: Name of the request field the prompt came in, for error messages.

        Raises:
            InvalidInput: The prompt is empty, too large, or not text.
            LLMError: The LLM was needed and failed after its retries.
        """
        text = validate_prompt(prompt, self._max_prompt_bytes, field)
        usage = ParseUsage()
        marked = parse_marked(text)
        warnings: list[str] = []
        if marked is not None:
            instruction, demos = marked.instruction, marked.demonstrations
            warnings.extend(marked.warnings)
            method = ParseMethod.DETERMINISTIC
        else:
            instruction, demos, usage = await self._split_with_llm(text, warnings, usage)
            method = ParseMethod.LLM
        if not instruction:
            raise InvalidInput(field, "holds examples but no instruction")
        language = detect_language(instruction)
        original = ""
        if language != "en":
            original = instruction
            if translate:
                try:
                    instruction, usage = await self._translate(instruction, usage)
                except _TranslationFailed as exc:
                    usage = exc.usage
                    warnings.append(f"translation failed, instruction kept as written: {exc}")
            else:
                warnings.append("instruction left untranslated (translation was skipped)")
        task = TaskSpec(
            instruction=instruction,
            demonstrations=demos,
            language=language,
            original_instruction=original,
            parse_method=method,
            warnings=tuple(warnings),
            prompt_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )
        log.info(
            "parsed prompt",
            extra={"method": method.value, "language": language, "demonstrations": len(demos)},
        )
        return ParseResult(task, usage)

    async def _split_with_llm(
        self, text: str, warnings: list[str], usage: ParseUsage
    ) -> tuple[str, tuple[Example, ...], ParseUsage]:
        if len(text) > MAX_LLM_PROMPT_CHARS:
            warnings.append(
                f"prompt longer than {MAX_LLM_PROMPT_CHARS} characters without example markers: "
                "used whole as the instruction"
            )
            return text.strip(), (), usage
        client = await self._llm()
        messages = [
            {"role": "system", "content": SPLIT_SYSTEM},
            {"role": "user", "content": SPLIT_EXAMPLE_PROMPT},
            {"role": "assistant", "content": SPLIT_EXAMPLE_ANSWER},
            {"role": "user", "content": text},
        ]
        answer, result = await client.chat_json(
            messages, SPLIT_SCHEMA, name="task_split", max_tokens=1024, seed=0
        )
        usage = usage.plus(result)
        instruction = str(answer.get("instruction", "")).strip()
        demos = _grounded(answer.get("demonstrations") or [], text, warnings)
        if not instruction:
            warnings.append("the LLM gave no instruction: the whole prompt is used as one")
            instruction = text.strip()
        return instruction, demos, usage

    async def _translate(self, instruction: str, usage: ParseUsage) -> tuple[str, ParseUsage]:
        """The instruction in English and the usage with every attempt added.

        Raises:
            LLMOutputError: A piece of it failed twice; ``usage`` carries what was spent.
        """
        translation = await translate(await self._llm(), instruction)
        for result in translation.results:
            usage = usage.plus(result)
        if translation.english is None:
            raise _TranslationFailed(translation.error, usage)
        return translation.english, usage


class _TranslationFailed(LLMOutputError):
    """A failed translation, with the usage it spent."""

    def __init__(self, message: str, usage: ParseUsage) -> None:
        super().__init__(message)
        self.usage = usage


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _grounded(raw: list[object], prompt: str, warnings: list[str]) -> tuple[Example, ...]:
    """Keep the LLM's demonstrations whose input and output both appear in the prompt."""
    haystack = _normalise(prompt)
    kept: list[Example] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        example = Example(str(item.get("input", "")).strip(), str(item.get("output", "")).strip())
        if (
            example.input
            and example.output
            and all(_normalise(part) in haystack for part in (example.input, example.output))
        ):
            kept.append(example)
        else:
            warnings.append(
                f"dropped a demonstration not found in the prompt: {example.input[:60]!r}"
            )
    return tuple(kept)
