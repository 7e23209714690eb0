"""Examples -> token ids and padded batches, for encoder-decoder and decoder-only students."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from p2m.common.prompt_layout import prompt_ids
from p2m.common.student import TEMPLATE_VERSION
from p2m.common.types import Example

IGNORE_INDEX = -100  # label positions the loss skips


def encode_examples(
    tokenizer: Any,
    architecture: str,
    instruction: str,
    examples: Sequence[Example],
    max_input_tokens: int,
    max_output_tokens: int,
    max_instruction_tokens: int = 0,
) -> list[dict[str, list[int]]]:
    """Token ids of each example: ``input_ids`` and ``labels`` (loss on output tokens only).

    The prompt is fitted to ``max_input_tokens`` exactly as ``Student.predict`` builds it
    (``p2m.common.prompt_layout``); the target is the output plus the end token. A decoder-only
    student sees prompt + target as one sequence with the prompt's labels masked.
    """
    if not examples:
        return []
    prompts = prompt_ids(
        tokenizer,
        instruction,
        [e.input for e in examples],
        max_input_tokens,
        TEMPLATE_VERSION,
        max_instruction_tokens,
    )
    targets = tokenizer([" " + e.output.strip() for e in examples], add_special_tokens=False)[
        "input_ids"
    ]
    eos = tokenizer.eos_token_id
    encoded = []
    for prompt, target in zip(prompts, targets, strict=True):
        target = [*target[: max_output_tokens - 1], eos]
        if architecture == "encoder-decoder":
            encoded.append({"input_ids": list(prompt), "labels": target})
        else:
            encoded.append(
                {
                    "input_ids": [*prompt, *target],
                    "labels": [IGNORE_INDEX] * len(prompt) + target,
                }
            )
    return encoded


def collate(rows: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Pad a batch on the right: input ids with the pad token, labels with IGNORE_INDEX."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    label_width = max(len(r["labels"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), label_width), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
        attention[i, : len(row["input_ids"])] = 1
        labels[i, : len(row["labels"])] = torch.tensor(row["labels"])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
