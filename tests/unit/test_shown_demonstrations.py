"""The prompt's demonstrations in every student prompt: whole, after the instruction, once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from p2m.common.artifacts import ArtifactRef
from p2m.common.encoder import shipped_encoder_path
from p2m.common.errors import InvalidInput
from p2m.common.prompt_layout import (
    fitted_instruction,
    format_input,
    instruction_budget,
    prompt_ids,
)
from p2m.common.student import TEMPLATE_VERSION
from p2m.common.types import Example, TaskSpec
from p2m.trainer.jobfile import JobFile
from p2m.trainer.options import TrainOptions
from p2m.trainer.run_types import TrainJob
from p2m.trainer.service import options_from_pb
from p2m.trainer.shown_demonstrations import show_demonstrations
from prompt2model.v1 import trainer_pb2

INSTRUCTION = "Write the Python one-liner that does what the question asks."
DEMONSTRATIONS = tuple(
    Example(f"How do I reverse list number {i} called items{i}?", f"items{i}[::-1]")
    for i in range(6)
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A real WordPiece tokenizer (the shipped MiniLM's)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shipped_encoder_path())


def _job(**options: Any) -> TrainJob:
    task = TaskSpec(instruction=INSTRUCTION, demonstrations=DEMONSTRATIONS)
    dataset = ArtifactRef("artifact://dataset/x", "x", 1, "dataset")
    return TrainJob((dataset,), "base", task, TrainOptions(**options))


def _tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_the_first_demonstrations_end_the_instruction_as_prompts_lay_out_examples(
    tokenizer: Any,
) -> None:
    shown = show_demonstrations(_job(prompt_demonstrations=2), tokenizer)
    first, second = DEMONSTRATIONS[:2]
    assert shown.task.instruction == (
        f"{INSTRUCTION}\n\n{format_input('', first.input)} {first.output}\n\n"
        f"{format_input('', second.input)} {second.output}"
    )
    assert shown.shown_demonstrations == 2
    assert shown.task.demonstrations == DEMONSTRATIONS  # still the task's, for scoring
    again = show_demonstrations(shown, tokenizer)  # a RayJob's entrypoint gets the settled job
    assert again == shown


def test_the_budget_grows_to_hold_them_whole_and_every_input_keeps_its_room(
    tokenizer: Any,
) -> None:
    asked = 96
    long_input = " ".join(f"word{i}" for i in range(400))
    plain = _job(prompt_demonstrations=0, max_input_tokens=asked)
    shown = show_demonstrations(_job(prompt_demonstrations=6, max_input_tokens=asked), tokenizer)
    full = _tokens(tokenizer, shown.task.instruction)
    assert full > instruction_budget(asked)  # the asked budget would have cut them
    room = shown.options.max_input_tokens
    assert instruction_budget(room) >= full
    assert fitted_instruction(tokenizer, shown.task.instruction, room) == shown.task.instruction
    (ids,) = prompt_ids(tokenizer, shown.task.instruction, [long_input], room, TEMPLATE_VERSION)
    # The input keeps at least the room it had without them.
    (before,) = prompt_ids(tokenizer, INSTRUCTION, [long_input], asked, TEMPLATE_VERSION)
    instruction_alone = _tokens(tokenizer, INSTRUCTION)
    assert len(ids) - full >= len(before) - instruction_alone
    assert plain.options.max_input_tokens == asked


def test_nothing_changes_without_demonstrations_to_show(tokenizer: Any) -> None:
    unasked = _job()
    assert show_demonstrations(unasked, tokenizer) == unasked
    bare = _job(prompt_demonstrations=3, omit_instruction=True)
    assert show_demonstrations(bare, tokenizer) == bare
    none = replace(_job(prompt_demonstrations=3), task=TaskSpec(instruction=INSTRUCTION))
    assert show_demonstrations(none, tokenizer) == none
    more = show_demonstrations(_job(prompt_demonstrations=64), tokenizer)
    assert more.shown_demonstrations == len(DEMONSTRATIONS)


def test_a_limit_that_would_cut_them_is_refused_naming_the_option(tokenizer: Any) -> None:
    with pytest.raises(InvalidInput) as cut:
        show_demonstrations(_job(prompt_demonstrations=2, max_instruction_tokens=8), tokenizer)
    assert cut.value.field == "options.prompt_demonstrations"
    assert "max_instruction_tokens (8)" in cut.value.problem
    huge = replace(
        _job(prompt_demonstrations=1),
        task=TaskSpec(INSTRUCTION, (Example("x " * 9000, "y"),)),
    )
    with pytest.raises(InvalidInput, match="at most 8192") as too_long:
        show_demonstrations(huge, tokenizer)
    assert too_long.value.field == "options.prompt_demonstrations"


def test_the_option_is_checked_read_from_the_proto_and_kept_in_job_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as wrong:
        TrainOptions(prompt_demonstrations=65).validate()
    assert wrong.value.field == "options.prompt_demonstrations"
    assert options_from_pb(trainer_pb2.TrainOptions()).prompt_demonstrations == 0
    read = options_from_pb(trainer_pb2.TrainOptions(prompt_demonstrations=4))
    assert read.prompt_demonstrations == 4
    job = replace(_job(prompt_demonstrations=2), shown_demonstrations=2)
    JobFile("k", "rayjob-x", job).write(tmp_path / "job.json")
    assert JobFile.read(tmp_path / "job.json").job.shown_demonstrations == 2


def test_the_student_is_scored_only_on_the_demonstrations_its_prompts_do_not_show() -> None:
    from p2m.gateway.stages import demonstrations_to_score
    from prompt2model.v1 import common_pb2

    demos = [common_pb2.Example(input=d.input, output=d.output) for d in DEMONSTRATIONS[:3]]
    assert demonstrations_to_score(demos, 0) == (demos, "")
    left, note = demonstrations_to_score(demos, 2)
    assert left == demos[2:] and "shows the first 2 demonstrations" in note
    assert demonstrations_to_score(demos, 3) == ([], demonstrations_to_score(demos, 5)[1])
    assert "shows all the demonstrations" in demonstrations_to_score(demos, 3)[1]
    assert "has no demonstrations" in demonstrations_to_score([], 0)[1]
