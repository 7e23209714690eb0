"""The student's prompt as token ids within its token budget, the same for training and serving.

Layout (template 2): the instruction, then ``Input: <input>`` and ``Output:`` (``format_input``).
When that is longer than ``max_input_tokens``, the parts give way in an order that keeps what
each example needs:

- The instruction takes at most ``INSTRUCTION_SHARE`` of the budget. A longer one keeps its start,
  cut the same way for every example of the task, so every prompt still begins with the same
  tokens (the trainer computes those once per batch, the model server's cache reuses them).
- An input that does not fit in the rest loses its middle: its start (where a question or the
  first marker usually is) and its end are kept, joined by ``CUT_MARK``.
- The cue ``Output:`` always stays.

Template 1 (models trained before) truncated the whole prompt from the left; a spec that says so
is read that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

INSTRUCTION_SHARE = 2 / 3  # of max_input_tokens, at most, for the instruction
HEAD_SHARE = 3 / 4  # of a cut input's kept tokens, from its start; the rest from its end
CUT_MARK = " … "
_FIT_TRIES = 3  # re-tokenizing a cut text can add a token or two at the seams


def format_input(instruction: str, text: str) -> str:
    """The model's input text: the instruction (if any), then the example's input, as a prompt."""
    body = f"Input: {text.strip()}\nOutput:"
    return f"{instruction.strip()}\n\n{body}" if instruction.strip() else body


def fitted_instruction(tokenizer: Any, instruction: str, max_input_tokens: int) -> str:
    """``instruction`` (stripped) cut to its first ``INSTRUCTION_SHARE`` of the token budget."""
    instruction = instruction.strip()
    budget = int(max_input_tokens * INSTRUCTION_SHARE)
    if not instruction:
        return instruction
    return _head(tokenizer, instruction, budget) if budget > 0 else ""


def instruction_tokens(tokenizer: Any, instruction: str) -> int:
    """Tokens in ``instruction`` alone (no special tokens)."""
    return len(tokenizer(instruction.strip(), add_special_tokens=False)["input_ids"])


def prompt_ids(
    tokenizer: Any,
    instruction: str,
    inputs: Sequence[str],
    max_input_tokens: int,
    template_version: int,
) -> list[list[int]]:
    """Token ids of each input's prompt, at most ``max_input_tokens`` long (unpadded)."""
    if template_version < 2:
        tokenizer.truncation_side = "left"
        texts = [format_input(instruction, text) for text in inputs]
        encoded = tokenizer(texts, truncation=True, max_length=max_input_tokens)
        return [list(ids) for ids in encoded["input_ids"]]
    instruction = fitted_instruction(tokenizer, instruction, max_input_tokens)
    texts = [format_input(instruction, text) for text in inputs]
    encoded = tokenizer(texts, verbose=False)["input_ids"]  # no warning: too long ones are cut
    return [
        list(ids)
        if len(ids) <= max_input_tokens
        else _cut_input(tokenizer, instruction, text, len(ids) - max_input_tokens, max_input_tokens)
        for ids, text in zip(encoded, inputs, strict=True)
    ]


def _cut_input(
    tokenizer: Any, instruction: str, text: str, excess: int, max_input_tokens: int
) -> list[int]:
    """The prompt with the middle of ``text`` dropped until it fits."""
    text = text.strip()
    mark = _count(tokenizer, CUT_MARK)
    tokens = _count(tokenizer, text)
    for attempt in range(_FIT_TRIES):
        keep = tokens - excess - mark - attempt * 2
        if keep <= 0:
            break
        head = max(1, int(keep * HEAD_SHARE))
        start, end = _ends(tokenizer, text, head, keep - head)
        cut = f"{start.rstrip()}{CUT_MARK}{end.lstrip()}"
        ids = tokenizer(format_input(instruction, cut), verbose=False)["input_ids"]
        if len(ids) <= max_input_tokens:
            return list(ids)
    # Too little room for any of the input: the prompt's end (the cue) is what must stay.
    tokenizer.truncation_side = "left"
    ids = tokenizer(format_input(instruction, text), truncation=True, max_length=max_input_tokens)
    return list(ids["input_ids"])


def _head(tokenizer: Any, text: str, tokens: int) -> str:
    """The start of ``text`` that its first ``tokens`` tokens cover (all of it if shorter)."""
    if _count(tokenizer, text) <= tokens:
        return text
    return _ends(tokenizer, text, tokens, 0)[0].rstrip()


def _count(tokenizer: Any, text: str) -> int:
    """Tokens in ``text`` (no special tokens)."""
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _ends(tokenizer: Any, text: str, head: int, tail: int) -> tuple[str, str]:
    """The text of ``text``'s first ``head`` tokens and of its last ``tail`` tokens.

    Cut at character offsets where the tokenizer gives them (fast tokenizers), so no character
    is split; else decoded from the token ids.
    """
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )["offset_mapping"]
        start = text[: offsets[head - 1][1]] if head else ""
        return start, text[offsets[len(offsets) - tail][0] :] if tail else ""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    start = tokenizer.decode(ids[:head]) if head else ""
    return start, tokenizer.decode(ids[len(ids) - tail :]) if tail else ""
