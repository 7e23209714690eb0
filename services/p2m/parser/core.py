"""Prompt -> TaskSpec: markers read deterministically, the LLM for everything else."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2m.common.errors import InvalidInput, LLMOutputError
from p2m.common.llm import LLMClient, LLMUsage, UsageCounters
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
class ParseResult:
    """A parsed task and what it cost."""

    task: TaskSpec
    usage: LLMUsage


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
        usage = UsageCounters()
        marked = parse_marked(text)
        warnings: list[str] = []
        if marked is not None:
            instruction, demos = marked.instruction, marked.demonstrations
            warnings.extend(marked.warnings)
            method = ParseMethod.DETERMINISTIC
        else:
            instruction, demos = await self._split_with_llm(text, warnings, usage)
            method = ParseMethod.LLM
        if not instruction:
            raise InvalidInput(field, "holds examples but no instruction")
        language = detect_language(instruction)
        original = ""
        if language != "en":
            original = instruction
            if translate:
                try:
                    instruction = await self._translate(instruction, usage)
                except _TranslationFailed as exc:
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
        return ParseResult(task, usage.snapshot())

    async def _split_with_llm(
        self, text: str, warnings: list[str], usage: UsageCounters
    ) -> tuple[str, tuple[Example, ...]]:
        """The instruction and demonstrations the LLM found in ``text``, counted in ``usage``."""
        if len(text) > MAX_LLM_PROMPT_CHARS:
            warnings.append(
                f"prompt longer than {MAX_LLM_PROMPT_CHARS} characters without example markers: "
                "used whole as the instruction"
            )
            return text.strip(), ()
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
        usage.add(result, result.attempts, ok=True)
        instruction = str(answer.get("instruction", "")).strip()
        demos = _grounded(answer.get("demonstrations") or [], text, warnings)
        if not instruction:
            warnings.append("the LLM gave no instruction: the whole prompt is used as one")
            instruction = text.strip()
        return instruction, demos

    async def _translate(self, instruction: str, usage: UsageCounters) -> str:
        """The instruction in English, every attempt counted in ``usage``.

        Raises:
            _TranslationFailed: A piece of it failed twice (what it spent is counted).
        """
        translation = await translate(await self._llm(), instruction)
        for result in translation.results:
            usage.add(result, result.attempts, ok=True)
        if translation.english is None:
            raise _TranslationFailed(translation.error)
        return translation.english


class _TranslationFailed(LLMOutputError):
    """A failed translation."""


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
