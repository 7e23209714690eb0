"""The prompt's demonstrations in every student prompt (``options.prompt_demonstrations``).

The first demonstrations go after the instruction, each as the prompts lay out an example
(``Input: ...`` / ``Output: ...``), and become part of the instruction the model is trained and
served with, so the evaluator and the model server show them too. The prompt's token budget
grows to hold them whole: the instruction (now longer) keeps within its share of the budget,
and every input keeps the room it had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from p2m.common.errors import InvalidInput
from p2m.common.prompt_layout import INSTRUCTION_SHARE, format_input, instruction_budget
from p2m.common.types import Example
from p2m.trainer.run_types import TrainJob

MOST_INPUT_TOKENS = 8192  # options.max_input_tokens' upper bound


def demonstrations_text(instruction: str, demonstrations: Sequence[Example]) -> str:
    """``instruction``, then each demonstration as an answered prompt, blank lines between."""
    shown = [f"{format_input('', d.input)} {d.output.strip()}" for d in demonstrations]
    return "\n\n".join([instruction.strip(), *shown])


def show_demonstrations(job: TrainJob, tokenizer: Any) -> TrainJob:
    """``job`` with its first ``options.prompt_demonstrations`` demonstrations in the instruction.

    Unchanged where none are asked for, the task has none, the instruction is left out, or a
    trainer already showed them (``job.shown_demonstrations``: a RayJob's entrypoint trains the
    settled job). ``max_input_tokens`` is raised so the shown ones are never cut.

    Raises:
        InvalidInput: ``max_instruction_tokens`` would cut them, or no budget holds them.
    """
    options = job.options
    shown = job.task.demonstrations[: options.prompt_demonstrations]
    if job.shown_demonstrations or not shown or options.omit_instruction:
        return job
    instruction = demonstrations_text(job.task.instruction, shown)
    plain, full = _count(tokenizer, job.task.instruction), _count(tokenizer, instruction)
    field = "options.prompt_demonstrations"
    if options.max_instruction_tokens and full > options.max_instruction_tokens:
        raise InvalidInput(
            field,
            f"the instruction and {len(shown)} demonstrations take {full} tokens, more than "
            f"options.max_instruction_tokens ({options.max_instruction_tokens}) keeps",
        )
    asked = options.max_input_tokens
    input_room = asked - min(plain, instruction_budget(asked, options.max_instruction_tokens))
    needed = max(asked, full + input_room, math.ceil(full / INSTRUCTION_SHARE))
    while instruction_budget(needed, options.max_instruction_tokens) < full:
        needed += 1  # the share rounds down
    if needed > MOST_INPUT_TOKENS:
        raise InvalidInput(
            field,
            f"the instruction and {len(shown)} demonstrations take {full} tokens; prompts "
            f"holding them and the inputs would need {needed} (at most {MOST_INPUT_TOKENS})",
        )
    task = replace(job.task, instruction=instruction)
    settled = replace(options, max_input_tokens=needed)
    return replace(job, task=task, options=settled, shown_demonstrations=len(shown))


def _count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` without special tokens, as the prompt layout counts an instruction."""
    return len(tokenizer(text.strip(), add_special_tokens=False, verbose=False)["input_ids"])
