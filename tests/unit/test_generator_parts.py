from __future__ import annotations

import random
from pathlib import Path

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.types import Example, TaskSpec
from p2m.generator.dataset import split_examples
from p2m.generator.engine import annealed_temperature, request_seed
from p2m.generator.filters import (
    DuplicateIndex,
    copies_input,
    field_problem,
    majority_vote,
    normalise,
)
from p2m.generator.journal import Journal
from p2m.generator.options import GenerateOptions, generation_key
from p2m.generator.prompts import new_example_messages, pick_examples

DEMOS = tuple(Example(f"in {i}", f"out {i}") for i in range(6))


def test_majority_vote_picks_the_most_frequent_output():
    assert majority_vote(["Paris", "paris ", "Lyon"]) == ("Paris", pytest.approx(2 / 3))


def test_majority_vote_ties_go_to_the_shortest():
    assert majority_vote(["the city of Paris", "Paris"]) == ("Paris", 0.5)
    assert majority_vote(["bb", "aa"])[0] == "bb"  # same length: the first written


def test_normalise_ignores_case_spacing_and_punctuation():
    assert normalise("  Hello,   WORLD!! ") == normalise("hello world")


def test_duplicate_index_exact_and_near():
    index = DuplicateIndex(threshold=0.8)
    index.add("The company will release its new product at the end of next month.")
    assert index.check("the company will release its new product at the end of next month") == (
        "exact_duplicate"
    )
    assert index.check("The company will release its new product at the end of next months.") == (
        "near_duplicate"
    )
    assert index.check("A completely different sentence about the weather in Paris.") is None


def test_field_checks():
    assert field_problem("  ", 10) == "empty"
    assert field_problem("x" * 11, 10) == "too_long"
    assert field_problem("fine", 10) is None
    assert copies_input("What is 2+2?", "what is 2 + 2")  # the same once normalised
    assert copies_input("A long enough input sentence.", "A long enough input sentence.")
    assert copies_input(
        "A long enough input sentence.", "Answer: A long enough input sentence. Done"
    )
    assert not copies_input("Question: where? Context: in Paris.", "Paris")


def test_annealing_rises_from_start_to_end():
    options = GenerateOptions(temperature_start=0.3, temperature_end=1.4)
    assert annealed_temperature(options, 0.0) == 0.3
    assert annealed_temperature(options, 0.5) == pytest.approx(0.85)
    assert annealed_temperature(options, 2.0) == 1.4
    fixed = GenerateOptions(annealing=False)
    assert annealed_temperature(fixed, 1.0) == fixed.temperature_start


def test_request_seeds_are_stable_and_distinct():
    assert request_seed(0, "g1") == request_seed(0, "g1")
    assert len({request_seed(0, f"g{i}") for i in range(1000)}) == 1000
    assert request_seed(1, "g1") != request_seed(0, "g1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_examples": 0}, "options.num_examples"),
        ({"temperature_start": 1.5, "temperature_end": 1.0}, "options.temperature_end"),
        ({"self_consistency_samples": 17}, "options.self_consistency_samples"),
        ({"validation_fraction": 0.9}, "options.validation_fraction"),
        ({"dedup_similarity_threshold": 0.0}, "options.dedup_similarity_threshold"),
    ],
)
def test_bad_options_name_the_field(change: dict[str, object], field: str):
    with pytest.raises(InvalidInput) as info:
        GenerateOptions(**change).validate()  # type: ignore[arg-type]
    assert info.value.field == field


def test_generation_key_ignores_concurrency_only():
    task = TaskSpec("Do it.", DEMOS)
    base = generation_key(task, GenerateOptions(), "m")
    assert generation_key(task, GenerateOptions(max_concurrency=1), "m") == base
    assert generation_key(task, GenerateOptions(seed=1), "m") != base
    assert generation_key(task, GenerateOptions(), "other-model") != base
    assert generation_key(TaskSpec("Do it!", DEMOS), GenerateOptions(), "m") != base


def test_diverse_prompts_vary_their_tail_and_fixed_prompts_do_not():
    generated = [Example(f"gen {i}", "x") for i in range(10)]
    shown = [
        tuple(
            pick_examples(
                DEMOS, generated, random.Random(i), n_demos=3, n_generated=2, diverse=True
            )
        )
        for i in range(20)
    ]
    assert len(set(shown)) > 10
    assert all(s[:3] == DEMOS[:3] for s in shown)  # a stable, cacheable prefix
    assert all(all(e.input.startswith("gen") for e in s[3:]) and len(s) == 5 for s in shown)
    fixed = {
        tuple(
            pick_examples(
                DEMOS, generated, random.Random(i), n_demos=3, n_generated=2, diverse=False
            )
        )
        for i in range(20)
    }
    assert fixed == {DEMOS[:3]}


def test_prompt_holds_instruction_and_examples():
    messages = new_example_messages("Label the review.", DEMOS[:2])
    text = messages[-1]["content"]
    assert "Label the review." in text and "input: in 1\noutput: out 1" in text


def test_split_is_seeded_and_keeps_a_validation_example():
    examples = [Example(str(i), str(i)) for i in range(10)]
    first, again = split_examples(examples, 0.2, 7), split_examples(examples, 0.2, 7)
    assert first == again
    assert (len(first["train"]), len(first["validation"])) == (8, 2)
    assert len(split_examples(examples[:3], 0.1, 0)["validation"]) == 1


def test_journal_replay_restores_state_and_never_reuses_ids(tmp_path: Path):
    journal = Journal(tmp_path)
    journal.record("req", "g0")
    journal.record("res", "g0", attempts=2, tokens=30)
    journal.record("gen", "g0", input="a", output="b")
    journal.accept("g0", Example("a", "b"), 1.0)
    journal.record("req", "g1")
    journal.record("res", "g1", attempts=1, tokens=10)
    journal.record("drop", "g1", reason="exact_duplicate")
    journal.record("req", "g2")
    journal.record("res", "g2", attempts=1, tokens=10)
    journal.record("gen", "g2", input="c", output="d")
    journal.record("req", "s2.0")
    journal.record("res", "s2.0", attempts=1, tokens=5)
    journal.record("sc", "s2.0", output="d")
    journal.record("req", "s2.1")  # sent, then the process died
    journal.record("req", "g3")
    journal.close()
    with (tmp_path / "journal.jsonl").open("a") as fh:
        fh.write('{"e": "res", "id": "g3", "att')  # torn by the kill
    state = Journal(tmp_path).replay()
    assert [(rid, e) for rid, e, _ in state.accepted] == [("g0", Example("a", "b"))]
    assert state.dropped == {"exact_duplicate": 1}
    assert list(state.pending) == ["g2"]
    assert state.pending["g2"].samples == ["d"]
    assert state.pending["g2"].next_sample == 2
    assert state.next_gen == 4
    assert state.requests == 2 + 1 + 1 + 1 + 2  # attempts + two sent without an answer
    assert state.tokens == 55
    again = Journal(tmp_path)
    again.record("round", "r1")
    again.close()
    assert Journal(tmp_path).replay().rounds == 1  # the torn line did not swallow it
