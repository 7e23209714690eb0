"""The student's prompt as token ids within its token budget, the same for training and serving.

Layout (template 2): the instruction, then ``Input: <input>`` and ``Output:`` (``format_input``).
When that is longer than ``max_input_tokens``, the parts give way in an order that keeps what
each example needs:

- The instruction takes at most ``INSTRUCTION_SHARE`` of the budget, or fewer tokens where the
  model was trained with a smaller ``max_instruction_tokens`` (its start as a short task tag). A
  longer one keeps its start, cut the same way for every example of the task, so every prompt
  still begins with the same tokens (the trainer computes those once per batch, the model
  server's cache reuses them).
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


def instruction_budget(max_input_tokens: int, max_instruction_tokens: int = 0) -> int:
    """Tokens the instruction may take in a prompt of ``max_input_tokens``.

    ``max_instruction_tokens`` where set (0: no limit of its own), never more than
    ``INSTRUCTION_SHARE`` of ``max_input_tokens``.
    """
    share = int(max_input_tokens * INSTRUCTION_SHARE)
    return min(max_instruction_tokens, share) if max_instruction_tokens > 0 else share


def fitted_instruction(
    tokenizer: Any, instruction: str, max_input_tokens: int, max_instruction_tokens: int = 0
) -> str:
    """``instruction`` (stripped) cut to its first ``instruction_budget`` tokens."""
    instruction = instruction.strip()
    budget = instruction_budget(max_input_tokens, max_instruction_tokens)
    if not instruction:
        return instruction
    return _head(tokenizer, instruction, budget) if budget > 0 else ""


def prompt_ids(
    tokenizer: Any,
    instruction: str,
    inputs: Sequence[str],
    max_input_tokens: int,
    template_version: int,
    max_instruction_tokens: int = 0,
) -> list[list[int]]:
    """Token ids of each input's prompt, at most ``max_input_tokens`` long (unpadded)."""
    if template_version < 2:
        return _left_cut(
            tokenizer, [format_input(instruction, t) for t in inputs], max_input_tokens
        )
    instruction = fitted_instruction(
        tokenizer, instruction, max_input_tokens, max_instruction_tokens
    )
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
    mark = len(_Tokens(tokenizer, CUT_MARK))
    tokens = _Tokens(tokenizer, text)
    for attempt in range(_FIT_TRIES):
        keep = len(tokens) - excess - mark - attempt * 2
        if keep <= 0:
            break
        head = max(1, int(keep * HEAD_SHARE))
        start, end = tokens.ends(head, keep - head)
        cut = f"{start.rstrip()}{CUT_MARK}{end.lstrip()}"
        ids = tokenizer(format_input(instruction, cut), verbose=False)["input_ids"]
        if len(ids) <= max_input_tokens:
            return list(ids)
    # Too little room for any of the input: the prompt's end (the cue) is what must stay.
    return _left_cut(tokenizer, [format_input(instruction, text)], max_input_tokens)[0]


def _left_cut(tokenizer: Any, texts: list[str], max_input_tokens: int) -> list[list[int]]:
    """``texts`` tokenized, each cut from the left to ``max_input_tokens`` (template 1)."""
    tokenizer.truncation_side = "left"
    encoded = tokenizer(texts, truncation=True, max_length=max_input_tokens)
    return [list(ids) for ids in encoded["input_ids"]]


def _head(tokenizer: Any, text: str, tokens: int) -> str:
    """The start of ``text`` that its first ``tokens`` tokens cover (all of it if shorter)."""
    pieces = _Tokens(tokenizer, text)
    return text if len(pieces) <= tokens else pieces.ends(tokens, 0)[0].rstrip()


class _Tokens:
    """A text's tokens (no special tokens), tokenized once, and its pieces by token counts."""

    def __init__(self, tokenizer: Any, text: str) -> None:
        """Tokenize ``text``, with character offsets where the tokenizer gives them (fast ones)."""
        self.tokenizer, self.text = tokenizer, text
        self.fast = bool(getattr(tokenizer, "is_fast", False))
        encoded = tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=self.fast, verbose=False
        )
        self.ids = encoded["input_ids"]
        self.offsets = encoded["offset_mapping"] if self.fast else []

    def __len__(self) -> int:
        """How many tokens."""
        return len(self.ids)

    def ends(self, head: int, tail: int) -> tuple[str, str]:
        """The text of the first ``head`` tokens and of the last ``tail`` tokens.

        Cut at character offsets where there are some, so no character is split; else decoded
        from the token ids.
        """
        if self.fast:
            start = self.text[: self.offsets[head - 1][1]] if head else ""
            return start, self.text[self.offsets[len(self) - tail][0] :] if tail else ""
        start = self.tokenizer.decode(self.ids[:head]) if head else ""
        return start, self.tokenizer.decode(self.ids[len(self) - tail :]) if tail else ""
