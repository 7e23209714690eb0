from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
from p2m.common.errors import InvalidInput
from p2m.common.teacher_prompt import REPLY_RULE
from p2m.common.types import Example, TaskSpec
from p2m.generator.copied import DemonstrationOrder
from p2m.generator.dataset import split_examples
from p2m.generator.engine import (
    STALL_STEP,
    annealed_temperature,
    duplicate_push,
    request_seed,
    unreadable_excerpt,
)
from p2m.generator.filters import (
    DuplicateIndex,
    copies_input,
    copies_instruction,
    ends_in_a_loop,
    field_problem,
    instructions_to_screen,
    majority_vote,
    near_duplicate_share,
    normalise,
    repeats_itself,
    samples_to_settle,
)
from p2m.generator.hints import (
    FALLBACK_TOPICS,
    MIN_TOPICS,
    clean_hints,
    hint_for,
    hints_messages,
    salvage_hints,
)
from p2m.generator.invariants import Invariants, infer
from p2m.generator.journal import Journal
from p2m.generator.judge import judge_messages, score_of
from p2m.generator.limits import ANSWER_FLOOR, answer_tokens, estimated_tokens, example_tokens
from p2m.generator.meaning import MeaningIndex
from p2m.generator.options import (
    SPAN_VOTE_SAMPLES,
    SPAN_VOTE_TEMPERATURE,
    GenerateOptions,
    answer_sampling,
    generation_key,
)
from p2m.generator.prompts import input_schema, new_input_messages, pick_examples
from p2m.generator.service import options_from_pb
from prompt2model.v1 import generator_pb2

DEMOS = tuple(Example(f"in {i}", f"out {i}") for i in range(6))


def test_majority_vote_picks_the_most_frequent_output():
    assert majority_vote(["Paris", "paris ", "Lyon"]) == ("Paris", pytest.approx(2 / 3))


def test_majority_vote_ties_go_to_the_shortest():
    assert majority_vote(["the city of Paris", "Paris"]) == ("Paris", 0.5)
    assert majority_vote(["bb", "aa"])[0] == "bb"  # same length: the first written


def test_a_nested_vote_counts_a_piece_of_a_span_for_the_span():
    votes = ["Parliament", "Parliament of Victoria", "parliament"]
    assert majority_vote(votes) == ("Parliament", pytest.approx(2 / 3))
    assert majority_vote(votes, nested=True) == ("Parliament of Victoria", 1.0)
    # Word for word only: "22" sits inside "22,338,618" once normalised, "Paris" not in "Parisian".
    assert majority_vote(["22", "22", "22,338,618"], nested=True)[0] == "22,338,618"
    assert majority_vote(["Paris", "Paris", "Parisian"], nested=True)[0] == "Paris"
    # Unrelated answers are counted as a plain vote would count them.
    assert majority_vote(["a b", "c", "c"], nested=True)[0] == "c"
    # Equal support (two each): the more often written, then the shortest.
    assert majority_vote(["long x", "long x", "y", "z y"], nested=True)[0] == "long x"
    assert majority_vote(["the city", "a town"], nested=True)[0] == "a town"
    assert samples_to_settle(["x", "x"], 1, nested=True) == 1  # "x y" could still win
    assert samples_to_settle(["x", "x"], 0, nested=True) == 0


def _settled_vote(answers: list[str | None]) -> tuple[str, int]:
    """Voting in waves over ``answers`` (None: a failed request): the winner, answers asked."""
    asked, left = 0, len(answers)
    while wave := samples_to_settle([a for a in answers[:asked] if a], left):
        asked, left = asked + wave, left - wave
    return majority_vote([a for a in answers[:asked] if a])[0], asked


def test_a_settled_vote_asks_fewer_outputs_and_picks_what_all_of_them_would():
    rng = random.Random(3)
    for _ in range(2000):
        size = rng.randint(1, 7)
        answers = [
            rng.choice(["Paris", "paris", "Lyon", "the city of Paris", None]) for _ in range(size)
        ]
        if not any(answers):
            continue
        winner, asked = _settled_vote(answers)
        assert asked <= size
        assert winner == majority_vote([a for a in answers if a])[0]
    assert _settled_vote(["Paris", "paris", "Lyon"]) == ("Paris", 2)  # two agree: the third is moot
    assert _settled_vote(["Paris", "Lyon", "Lyon"]) == ("Lyon", 3)
    assert _settled_vote(["a", "a", "a", "b", "b"]) == ("a", 3)
    assert samples_to_settle([], 1) == 1 and samples_to_settle(["a"], 0) == 0


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


def test_a_long_input_used_again_with_other_details_is_a_near_duplicate_by_words():
    first = (
        "[Posted: 2021-06-15] The company's fiscal year starts on July 1st and ends on June 30th."
    )
    again = (
        "[Posted: 2014-12-21] The company's fiscal year starts on July 1st and ends on June 30th."
    )
    by_chars = DuplicateIndex(threshold=0.8)
    by_chars.add(first)
    assert by_chars.check(again) is None  # a quarter of the character 4-grams changed
    by_words = DuplicateIndex(threshold=0.8, word_threshold=0.5)
    by_words.add(first)
    assert by_words.check(again) == "near_duplicate"  # 60% of the word trigrams shared
    assert by_words.check("[Posted: 2020-01-01] Rain fell all of last week in Oslo.") is None


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


def test_an_input_that_is_the_instruction_again_is_no_instance_of_the_task():
    ja = "Pythonで1行のコードを生成し、StackOverflowの日本語の質問を解決してください。"
    en = "Classify the sentiment of a product review as positive or negative."
    assert copies_instruction("travelの日本語の質問を解決してください。", [ja])
    assert copies_instruction("StackOverflowの日本語の質問を解決してください", ["x", ja])
    assert copies_instruction("Please classify the sentiment of a product review!", [en])
    assert not copies_instruction("ペットの種類を数える", [ja])
    assert not copies_instruction("A positive review of my new phone.", [en])  # a short run
    long_input = f"{en} " + "The battery lasts two days and the screen is sharp. " * 3
    assert not copies_instruction(long_input, [en])  # the instruction is a small part of it
    echo = 'print("no explanation, no code fences, no label")'  # the teacher's request, echoed
    assert copies_instruction(echo, [REPLY_RULE])
    assert not copies_instruction("print(settings.DATABASES)", [REPLY_RULE])
    task = TaskSpec(en, (Example("Great battery.", "positive"),), original_instruction=ja)
    assert instructions_to_screen(task) == (en, ja)
    quoting = TaskSpec(en, (Example(f"{en} Great battery.", "positive"),))
    assert instructions_to_screen(quoting) == ()  # its inputs quote the instruction


def test_a_text_caught_in_a_loop_repeats_itself_and_a_stream_shows_it_at_its_end():
    sentence = "The largest crop in the world is wheat, which is a staple crop in many countries. "
    loop = "Question: What is the largest crop? Context: " + sentence * 3
    assert repeats_itself(loop)
    # A stream is checked as it grows: the loop shows once a whole run has come back.
    grown = [loop[:end] for end in range(1, len(loop) + 1)]
    first = next(i for i, text in enumerate(grown) if ends_in_a_loop(text))
    assert len(sentence) < first < 2 * len(sentence) + 60
    # A question quoting its context (SQuAD), a word used again, a short text: no loop.
    context = "The Normans were the people who in the 10th and 11th centuries gave their name."
    quoting = (
        f"Question: Who were the people who in the 10th and 11th centuries? Context: {context}"
    )
    for text in (quoting, "cat " * 19, "a" * 80, "x" * 40 + "y" * 40):
        assert not repeats_itself(text) and not ends_in_a_loop(text), text
    assert repeats_itself("cat " * 21) and ends_in_a_loop("cat " * 21)


def test_annealing_rises_from_start_to_end():
    options = GenerateOptions(temperature_start=0.3, temperature_end=1.4)
    assert annealed_temperature(options, 0.0) == 0.3
    assert annealed_temperature(options, 0.5) == pytest.approx(0.85)
    assert annealed_temperature(options, 2.0) == 1.4
    fixed = GenerateOptions(annealing=False)
    assert annealed_temperature(fixed, 1.0) == fixed.temperature_start


def test_duplicates_beyond_the_target_push_the_temperature_up_and_fewer_let_it_down():
    assert duplicate_push(0.0, 16, 16) == pytest.approx(1.0)  # all duplicates: a stalled round
    assert duplicate_push(0.0, 3, 10) == pytest.approx(0.0)  # at the target: no push
    pushed = duplicate_push(0.0, 9, 14)
    assert 0 < pushed < 1
    assert duplicate_push(pushed, 0, 14) < pushed  # a round without duplicates lets it down
    assert duplicate_push(0.2, 0, 16) == 0.0  # never below the annealed schedule
    assert duplicate_push(0.5, 0, 0) == 0.5  # a round without candidates says nothing
    assert duplicate_push(1 / STALL_STEP, 16, 16) == 1 / STALL_STEP  # at most the whole span


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
        ({"meaning_dedup_threshold": 1.5}, "options.meaning_dedup_threshold"),
        ({"dedup_word_similarity_threshold": 0.0}, "options.dedup_word_similarity_threshold"),
        ({"stall_timeout_s": -1.0}, "options.stall_timeout_s"),
        ({"input_demonstrations": 65}, "options.input_demonstrations"),
        ({"answer_generated_examples": -1}, "options.answer_generated_examples"),
        ({"input_frequency_penalty": -0.1}, "options.input_frequency_penalty"),
        ({"answer_temperature": 2.5}, "options.answer_temperature"),
    ],
)
def test_bad_options_name_the_field(change: dict[str, object], field: str):
    with pytest.raises(InvalidInput) as info:
        GenerateOptions(**change).validate()  # type: ignore[arg-type]
    assert info.value.field == field


def test_generation_key_ignores_concurrency_and_the_stall_timeout():
    task = TaskSpec("Do it.", DEMOS)
    base = generation_key(task, GenerateOptions(), "m")
    assert generation_key(task, GenerateOptions(max_concurrency=1), "m") == base
    assert generation_key(task, GenerateOptions(stall_timeout_s=0), "m") == base
    assert generation_key(task, GenerateOptions(seed=1), "m") != base
    assert generation_key(task, GenerateOptions(), "other-model") != base
    assert generation_key(TaskSpec("Do it!", DEMOS), GenerateOptions(), "m") != base
    given = GenerateOptions(invariants=Invariants(output_one_line=True))
    assert generation_key(task, given, "m") != base
    translated = TaskSpec("Do it.", DEMOS, original_instruction="Fais-le.")
    assert generation_key(translated, GenerateOptions(), "m") != base


def test_diverse_prompts_vary_their_tail_and_fixed_prompts_do_not():
    generated = [Example(f"gen {i}", "x") for i in range(10)]
    shown = [
        tuple(pick_examples(DEMOS[:3], generated, random.Random(i), n_generated=2, diverse=True))
        for i in range(20)
    ]
    assert len(set(shown)) > 10
    assert all(s[:3] == DEMOS[:3] for s in shown)  # a stable, cacheable prefix
    assert all(all(e.input.startswith("gen") for e in s[3:]) and len(s) == 5 for s in shown)
    fixed = {
        tuple(pick_examples(DEMOS[:3], generated, random.Random(i), n_generated=2, diverse=False))
        for i in range(20)
    }
    assert fixed == {DEMOS[:3]}


def test_new_input_request_holds_instruction_examples_topic_and_label():
    messages = new_input_messages("Label the review.", DEMOS[:2])
    text = messages[-1]["content"]
    assert "Label the review." in text and "input: in 1\noutput: out 1" in text
    assert "the input only" in text and '"input"' in messages[0]["content"]
    aimed = new_input_messages("Label the review.", DEMOS[:2], (), "negative", "a hotel stay")
    wanted = 'touching on: a hotel stay; its correct output must be "negative"'
    assert wanted in aimed[-1]["content"]


def test_topics_are_cleaned_filled_up_and_each_request_gets_one_fixed_by_its_id():
    many = [f"topic {i}" for i in range(10)]
    answer = {"topics": ["Cooking", " cooking!", "", "x " * 20, "out 1", *many]}
    topics = clean_hints(answer, DEMOS)  # "out 1" is a demonstration's output, not a topic
    assert topics == ["Cooking", *many]
    few = clean_hints({"topics": ["Space travel"]})
    assert few[0] == "Space travel" and len(few) > MIN_TOPICS  # filled up with broad topics
    assert clean_hints("not an object")[:3] == list(FALLBACK_TOPICS[:3])
    assert salvage_hints('{"topics": ["Cooking", "Space travel", "year-end-mon')[:2] == [
        "Cooking",
        "Space travel",
    ]
    assert hint_for([], "g1") is None and hint_for(topics, "g1") == hint_for(topics, "g1")
    assert {hint_for(topics, f"g{i}") for i in range(60)} == set(topics)
    assert "Example inputs:" in hints_messages("Label.", DEMOS[:2])[-1]["content"]


def test_split_is_seeded_and_keeps_a_validation_example():
    examples = [Example(str(i), str(i)) for i in range(10)]
    first, again = split_examples(examples, 0.2, 7), split_examples(examples, 0.2, 7)
    assert first == again
    assert (len(first["train"]), len(first["validation"])) == (8, 2)
    assert len(split_examples(examples[:3], 0.1, 0)["validation"]) == 1


def test_journal_replay_restores_state_and_never_reuses_ids(tmp_path: Path):
    journal = Journal(tmp_path)
    journal.record("req", "h0")
    journal.record("res", "h0", attempts=1, tokens=0)
    journal.record("hints", "h0", topics=["cooking", "space"])
    journal.record("req", "g0")
    journal.record("res", "g0", attempts=2, tokens=30)
    journal.record("gen", "g0", input="a", output="b")
    journal.accept("g0", Example("a", "b"), 1.0)
    journal.record("req", "g1")
    journal.record("res", "g1", attempts=1, tokens=10)
    journal.record("drop", "g1", reason="exact_duplicate")
    journal.record("move", "d0")
    journal.record("req", "g2")
    journal.record("res", "g2", attempts=1, tokens=10)
    journal.record("gen", "g2", input="c", output="d")
    journal.record("req", "s2.0")
    journal.record("res", "s2.0", attempts=1, tokens=5)
    journal.record("sc", "s2.0", output="d")
    journal.record("req", "j2.0")
    journal.record("res", "j2.0", attempts=1, tokens=0)
    journal.record("judge", "j2.0", score=4)
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
    assert state.pending["g2"].judge_score == 4 and state.pending["g2"].next_judge == 1
    assert state.next_gen == 4
    assert state.requests == 1 + 2 + 1 + 1 + 1 + 1 + 2  # attempts + two sent, never answered
    assert state.hints == ["cooking", "space"] and state.hint_requests == 1
    assert state.moved == [0]
    assert state.tokens == 55
    again = Journal(tmp_path)
    again.record("round", "r1")  # as journals before the push was recorded
    assert Journal(tmp_path).replay().push == 0.0
    again.record("round", "r2", push=1.5)
    again.close()
    resumed = Journal(tmp_path).replay()
    assert resumed.rounds == 2  # the torn line did not swallow the first
    assert resumed.push == 1.5  # the last round's temperature push goes on where it was


def test_invariants_in_a_request_are_given_rules_unset_are_learned():
    learned = options_from_pb(generator_pb2.GenerateOptions())
    assert learned.invariants is None and learned.check_invariants
    rules = generator_pb2.Invariants(input_markers=["Question:"], output_in_input=True)
    given = options_from_pb(generator_pb2.GenerateOptions(invariants=rules))
    assert given.invariants == Invariants(input_markers=("Question:",), output_in_input=True)
    empty = options_from_pb(generator_pb2.GenerateOptions(invariants=generator_pb2.Invariants()))
    assert empty.invariants == Invariants()
    off = options_from_pb(generator_pb2.GenerateOptions(disable_invariants=True))
    assert not off.check_invariants


def test_answers_are_greedy_unless_a_temperature_is_set_and_then_voted_on():
    unset = options_from_pb(generator_pb2.GenerateOptions())
    assert unset.answer_temperature is None  # the task's: ``answer_sampling``
    assert answer_sampling(unset, Invariants()).answer_temperature == 0.0
    assert answer_sampling(unset, Invariants()).samples_per_input == 1
    warm = options_from_pb(generator_pb2.GenerateOptions(answer_temperature=0.7))
    assert warm.answer_temperature == 0.7 and warm.samples_per_input == 3
    assert GenerateOptions(answer_temperature=0.7, self_consistency=False).samples_per_input == 1
    zero = options_from_pb(generator_pb2.GenerateOptions(answer_temperature=0.0))
    assert zero.answer_temperature == 0.0 and zero.samples_per_input == 1


SQUAD_LIKE = TaskSpec(
    "Answer the question from the context.",
    tuple(
        Example(f"Question: Who built {town}? Context: {who} built {town} in {year}.", who)
        for town, who, year in (
            ("Alba", "Anna Berg", 1756),
            ("Brest", "Carl Dahl", 1802),
            ("Cork", "Eva Fors", 1911),
        )
    ),
)


def test_span_outputs_are_voted_on_by_default_and_a_set_temperature_stands():
    spans = Invariants(output_in_input=True)
    voted = answer_sampling(GenerateOptions(), spans)
    assert (voted.answer_temperature, voted.samples_per_input) == (
        SPAN_VOTE_TEMPERATURE,
        SPAN_VOTE_SAMPLES,
    )
    three = answer_sampling(GenerateOptions(self_consistency_samples=3), spans)
    assert three.samples_per_input == 3  # a count asked for stands
    greedy = answer_sampling(GenerateOptions(answer_temperature=0.0), spans)
    assert greedy.samples_per_input == 1 and greedy.answer_temperature == 0.0
    unvoted = answer_sampling(GenerateOptions(self_consistency=False), spans)
    assert unvoted.answer_temperature == 0.0 and unvoted.samples_per_input == 1
    learned = infer(SQUAD_LIKE)
    assert learned.output_in_input
    assert answer_sampling(GenerateOptions(), learned).answer_temperature == SPAN_VOTE_TEMPERATURE


def test_answer_generated_examples_unset_means_none_and_out_of_range_names_the_field():
    assert options_from_pb(generator_pb2.GenerateOptions()).answer_generated_examples == 0
    two = generator_pb2.GenerateOptions(answer_generated_examples=2)
    assert options_from_pb(two).answer_generated_examples == 2
    with pytest.raises(InvalidInput) as info:
        options_from_pb(generator_pb2.GenerateOptions(answer_generated_examples=65))
    assert info.value.field == "options.answer_generated_examples"


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"input_prefix": "(unclosed"}, "options.invariants.input_prefix"),
        ({"output_language": "cobol"}, "options.invariants.output_language"),
    ],
)
def test_bad_invariants_in_a_request_name_the_field(rules: dict[str, str], field: str):
    message = generator_pb2.GenerateOptions(invariants=generator_pb2.Invariants(**rules))
    with pytest.raises(InvalidInput) as info:
        options_from_pb(message)
    assert info.value.field == field


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    return SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)


def test_a_reworded_input_is_a_duplicate_by_meaning_an_unrelated_one_is_not(minilm):
    index = MeaningIndex(minilm, 0.8)
    assert not index.similar("What is the capital of France?")  # nothing seen yet
    index.add("What is the capital of France?")
    index.add_all(["The battery died after a week.", "How do I sort a list in Python?"])
    assert len(index) == 3
    assert index.similar("What's the capital city of France?")
    assert not index.similar("Who painted the Mona Lisa?")
    assert not MeaningIndex(minilm, 0.999).similar("Which city is the capital of France?")


def test_token_limits_follow_the_demonstrations_lengths():
    short = [Example("Great battery.", "positive"), Example("Broke.", "negative")]
    long_input = [Example("Question: who? Context: " + "word " * 400, "a span")]
    assert answer_tokens(short) == ANSWER_FLOOR
    assert (
        example_tokens(long_input) > 2 * example_tokens(short) and example_tokens(long_input) > 256
    )
    japanese = [Example("リスト内の単語を数える", "Counter(word_list)")]
    assert estimated_tokens("単語") >= 2  # about one token a character
    assert answer_tokens(japanese, explicit=100) == 100
    assert answer_tokens([]) == 256 and example_tokens([]) == 512


def test_near_duplicate_share_counts_inputs_close_to_another_by_word_trigrams():
    texts = [
        "the cat sat on the mat today",
        "the cat sat on the mat yesterday",  # 4 of 6 trigrams shared with the first
        "a completely different sentence about dogs",
        "short",
    ]
    assert near_duplicate_share(texts) == 0.5
    assert near_duplicate_share(texts, threshold=0.9) == 0.0
    assert near_duplicate_share([]) == 0.0


def test_a_judge_grade_is_read_only_when_it_is_an_integer_in_range():
    assert score_of({"score": 4, "reason": "fine"}) == 4
    assert score_of({"score": 4.0}) == 4
    assert score_of({"score": 9}) is None and score_of({"score": True}) is None
    assert score_of({"reason": "none"}) is None and score_of("4") is None
    text = judge_messages("Label it.", DEMOS, Example("a new input", "out"))[-1]["content"]
    assert "input: a new input\noutput: out" in text and "5: the input is" in text


def test_every_way_to_stop_short_is_explained_to_the_person():
    from p2m.gateway.stages import _STOPPED_SHORT as GATEWAY_SAYS
    from p2m.generator.cli import _STOPPED_SHORT as CLI_SAYS
    from p2m.generator.service import _STOP_REASONS
    from prompt2model.v1 import generator_pb2

    short = {name for name in _STOP_REASONS if name != "target_reached"}
    assert set(CLI_SAYS) == short
    reached = generator_pb2.GENERATION_STOP_REASON_TARGET_REACHED
    assert set(GATEWAY_SAYS) == {_STOP_REASONS[name] for name in short} - {reached}
    assert set(_STOP_REASONS.values()) | {0} == set(generator_pb2.GenerationStopReason.values())


def test_an_unreadable_answer_is_journalled_by_its_start_and_end():
    looped = "Context: " + "It is the second largest planet. " * 100 + "(65,936"
    excerpt = unreadable_excerpt(looped)
    assert len(excerpt) < 420
    assert excerpt.startswith("Context: It is") and excerpt.endswith("(65,936")
    assert unreadable_excerpt("short answer") == "short answer"


def _raw_json_string(value: str) -> str:
    """What llama.cpp matches a string's pattern against: the JSON text between the quotes."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def test_the_input_pattern_holds_a_json_string_whole_as_llama_cpp_reads_it():
    learned = Invariants(input_prefix="Question:", input_one_line=True)
    pattern = re.compile(input_schema(learned)["properties"]["input"]["pattern"])
    quoted = 'Question: Who wrote "Dune"? Context: Frank Herbert wrote "Dune" (a C:\\ path).'
    assert pattern.fullmatch(_raw_json_string(quoted))  # escaped quotes and backslashes pass
    # A raw quote would end the JSON string early: the grammar must not let one through.
    assert not pattern.fullmatch('Question: Who wrote "Dune"? Context: Herbert.')
    assert not pattern.fullmatch(_raw_json_string("Question: sky?\nContext: blue"))  # 2 lines
    assert not pattern.fullmatch("Question: sky?\nContext: blue")  # a raw line break: no JSON
    assert not pattern.fullmatch(_raw_json_string("Context: no question"))
    several_lines = Invariants(input_prefix="Question:", input_one_line=False)
    pattern = re.compile(input_schema(several_lines)["properties"]["input"]["pattern"])
    assert pattern.fullmatch(_raw_json_string("Question: sky?\nContext: blue"))
    assert input_schema(Invariants())["properties"]["input"] == {"type": "string"}


def test_a_learned_first_character_is_decoded_by_where_no_prefix_is_learned():
    latin = Invariants(input_starts_with=("latin",), input_one_line=True)
    pattern = re.compile(input_schema(latin)["properties"]["input"]["pattern"])
    assert pattern.fullmatch(_raw_json_string("How do I top up?"))
    assert pattern.fullmatch(_raw_json_string("\u00c9t\u00e9 card"))
    assert not pattern.fullmatch(_raw_json_string("# How do I top up?"))
    assert not pattern.fullmatch(_raw_json_string("$100.00 limit"))
    japanese = re.compile(
        input_schema(Invariants(input_starts_with=("kana", "han")))["properties"]["input"][
            "pattern"
        ]
    )
    assert japanese.fullmatch(_raw_json_string("辞書を表示する"))
    assert not japanese.fullmatch(_raw_json_string("print(d)"))
    prefixed = Invariants(input_prefix="Question:", input_starts_with=("latin",))
    assert input_schema(prefixed) == input_schema(Invariants(input_prefix="Question:"))


def test_a_sentence_end_is_checked_not_decoded_by():
    """A grammar that cannot end an input mid-sentence kept a small teacher writing to its cap."""
    plain = Invariants(input_prefix="Question:", input_one_line=True)
    ended = replace(plain, input_sentence_end=True)
    assert input_schema(ended) == input_schema(plain)
    assert input_schema(Invariants(input_sentence_end=True)) == input_schema(Invariants())
    assert ended.input_violation("Question: Why? Context: the league emphasized the") == (
        "input_sentence_end"
    )


def test_a_demonstration_copied_twice_is_shown_last_and_the_set_shown_stays():
    demonstrations = [Example(f"question number {n} about the bank card", "x") for n in range(4)]
    order = DemonstrationOrder(demonstrations, 3, 0.8, 0.5)
    assert order.shown() == demonstrations[:3]
    assert order.note_copy("Question number 0 about the bank card!") is None  # one copy
    assert order.note_copy("something else entirely, written anew") is None
    assert order.note_copy("question number 3 about the bank card") is None  # not shown
    assert order.note_copy("question number 0 about the bank card") == 0  # the second
    assert order.shown() == [demonstrations[1], demonstrations[2], demonstrations[0]]
    assert order.note_copy("question number 1 about the bank card") is None  # counts anew
    assert order.note_copy("question number 1 about the bank card") == 1
    for _ in range(3):  # the one shown last stays last
        assert order.note_copy("question number 1 about the bank card") is None
    assert order.moved == [0, 1]
    resumed = DemonstrationOrder(demonstrations, 3, 0.8, 0.5, moved=order.moved)
    assert resumed.shown() == order.shown() == [demonstrations[i] for i in (2, 0, 1)]
