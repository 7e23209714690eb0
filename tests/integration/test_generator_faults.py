"""DatasetGenerator against a deliberately faulty endpoint on loopback.

The endpoint answers with a fixed, seeded mix of HTTP 500s, slow answers past the client's
timeout, garbage text and valid examples. It stands in for failure modes only; the real model
is exercised in test_generator_service.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web

from p2m.common.artifacts import ArtifactStore
from p2m.common.encoder import shipped_encoder
from p2m.common.errors import BudgetExhausted, Unavailable
from p2m.common.llm import LLMClient, LLMConfig
from p2m.common.types import Example, TaskSpec
from p2m.generator.engine import DatasetGenerator, GenerationResult
from p2m.generator.filters import majority_vote, normalise
from p2m.generator.invariants import Invariants
from p2m.generator.journal import Journal
from p2m.generator.options import SPAN_VOTE_SAMPLES, SPAN_VOTE_TEMPERATURE, GenerateOptions

pytestmark = pytest.mark.asyncio(loop_scope="module")

TASK = TaskSpec("Name a colour.", (Example("sky", "blue"), Example("grass", "green")))
SENTIMENT_TASK = TaskSpec(
    'Answer "positive", "neutral" or "negative".',
    (Example("great", "positive"), Example("awful", "negative")),
)
# Inputs that start with "[Day NN]".
DATED_TASK = TaskSpec(
    "Name a colour.",
    (Example("[Day 01] sky", "blue"), Example("[Day 02] grass", "green")),
)
# Inputs with "Question:" then "Context:", outputs a span of the context.
SPAN_TASK = TaskSpec(
    "Answer from the context.",
    (
        Example("Question: sky? Context: the sky is blue", "blue"),
        Example("Question: grass? Context: grass is green", "green"),
    ),
)

# Outputs keyed by the time expressions their inputs hold.
KEYED_TASK = TaskSpec(
    "List each time expression with its date.",
    (
        Example("We met yesterday in Rome.", "yesterday == 2020-01-01"),
        Example("The report is due next month.", "next month == 2020-02"),
        Example("She moved to Oslo last year.", "last year == 2019"),
        Example("Call me tomorrow morning.", "tomorrow morning == 2020-01-02"),
        Example("I visited Lisbon.", "N/A"),
        Example("Nothing happened.", "N/A"),
    ),
)


class FaultyTeacher:
    """Scripted by ``mix``: shares of "error", "slow", "garbage" and "good" answers.

    Besides "good" (inputs "thing number N <random>"), "span" writes inputs in SPAN_TASK's form,
    a request for a passage gets "Anna Berg built TownN in 18NN." and one for a question gets a
    question (one that holds its answer with "telling"); the answer names the passage's town;
    "biased" writes SENTIMENT_TASK reviews, preferring "positive", and "copycat" the first
    example it is shown, word for word. Answers name the colour or
    label their input names ("colour N" for "thing number N"; "parrot" writes TASK's instruction
    as the input and the request's wording as the answer; "sloppy": a near-miss of the label,
    "Positively"; "repetitive": "colour 7" whatever the input; "piece": the answer's last word;
    "keyed" writes KEYED_TASK's sentences and keys half its answers by the place they name). A
    request for topics gets a list of them.
    """

    def __init__(self) -> None:
        self.mix = {"good": 1.0}
        self.requests = 0
        self.rng = random.Random(0)
        self.prompts: list[str] = []
        self.conversations: list[list[dict[str, str]]] = []
        self.bodies: list[dict] = []
        self.input_schemas: list[dict] = []

    async def chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        self.prompts.append(body["messages"][-1]["content"])
        self.conversations.append(body["messages"])
        self.bodies.append(body)
        kind = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if kind == "error":
            return web.json_response({"error": "boom"}, status=500)
        if kind == "slow":
            await asyncio.sleep(1.0)
        wanted = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
        if kind == "garbage":
            content = "I am sorry, I cannot help with that."
        elif "score" in wanted.get("required", []):  # a grade: odd-numbered things are poor
            number = re.search(r"input: thing number (\d+)", body["messages"][-1]["content"])
            content = json.dumps({"score": 2 if number and int(number.group(1)) % 2 else 5})
        elif "topics" in wanted.get("required", []):
            content = json.dumps({"topics": [f"topic {i}" for i in range(5)]})
        elif "passage" in wanted.get("required", []):  # span-first: names and numbers
            n = self.requests
            content = json.dumps({"passage": f"Anna Berg built Town{n} in {1800 + n}. It is old."})
        elif "question" in wanted.get("required", []):  # "telling": the answer given away
            chosen = re.search(r'answer is "([^"]*)"', body["messages"][-1]["content"])
            answer = chosen.group(1) if chosen else "it"  # passage-first: no answer chosen
            question = f"Is it {answer}?" if kind == "telling" else f"Which {self.requests}?"
            content = json.dumps({"question": question})
        elif "input" in wanted.get("required", []):
            self.input_schemas.append(wanted)
            content = json.dumps({"input": self._input(kind, body["messages"][-1]["content"])})
        else:  # an answer: what the input names; as JSON when a schema asks for one
            asked = body["messages"][-1]["content"]
            named = re.search(r"(colour \d+|positive|neutral|negative|Town\d+)[^\n]*$", asked)
            number = re.search(r"thing number (\d+)", asked)
            content = named.group(1) if named else f"colour {number.group(1) if number else 0}"
            if kind == "sloppy":  # a near-miss of the label
                content = content.capitalize() + "ly"
            if kind == "repetitive":  # the one answer a small teacher knows
                content = "colour 7"
            if kind == "piece":  # a piece of the span only: "7" for "colour 7"
                content = content.split()[-1]
            if kind == "parrot":  # the request's own wording
                content = 'print("no explanation, no code fences, no label")'
            if kind == "keyed":  # a date keyed by the time expression, or by the place
                key = self.rng.choice(["next week", "Paris"])
                content = f"{key} == 2020-{self.requests % 12 + 1:02d}-05"
        usage = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content},
                    }
                ],
                "usage": usage,
            }
        )

    def _input(self, kind: str, prompt: str) -> str:
        n, noise = self.requests, self.rng.random()
        if kind == "dated":  # DATED_TASK's form: a "[Day NN]" prefix
            return f"[Day {n % 90 + 10}] thing number {n} {noise}"
        if kind == "span":  # SPAN_TASK's form: the answer is a span of the context
            return f"Question: thing {n}? Context: thing {n} {noise} is colour {n}"
        if kind in ("biased", "stubborn", "sloppy"):  # asked for another label, it may obey
            asked = re.search(r'its correct output must be "(\w+)"', prompt)  # half the time
            obeys = kind == "biased" and self.rng.random() < 0.5  # or never
            label = asked.group(1) if asked and obeys else "positive"
            return f"review {n} {noise} feels {label}"
        if kind == "keyed":  # KEYED_TASK's form: a time expression and a place
            return f"Note {n} ({noise}): next week I fly to Paris."
        if kind == "parrot":  # the task itself, with a topic in front, instead of an instance
            return f"thing {n}: name a colour"
        if kind == "copycat":  # the first example it is shown, word for word
            return re.search(r"^input: (.*)$", prompt, re.MULTILINE).group(1)
        return f"thing number {n} {noise}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def teacher() -> AsyncIterator[tuple[FaultyTeacher, str]]:
    faulty = FaultyTeacher()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", faulty.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield faulty, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


# Six demonstrations whose inputs are easy to find in a prompt.
THINGS = ("sky", "grass", "blood", "snow", "lemon", "coal")
COLOUR_TASK = TaskSpec(
    "Name a colour.",
    tuple(map(Example, THINGS, ("blue", "green", "red", "white", "yellow", "black"))),
)


def _generator(base_url: str, tmp_path: Path) -> tuple[DatasetGenerator, LLMClient]:
    config = LLMConfig(
        base_url=base_url,
        timeout_s=0.5,
        max_retries=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        max_concurrency=8,
    )
    client = LLMClient(config)
    store = ArtifactStore(tmp_path / "artifacts")
    return DatasetGenerator(client, store, tmp_path / "work", "faulty"), client


async def _generate_with(
    teacher: tuple[FaultyTeacher, str],
    tmp_path: Path,
    mix: dict[str, float],
    task: TaskSpec,
    options: GenerateOptions,
) -> GenerationResult:
    """One generation of ``task`` against the scripted teacher answering with ``mix``."""
    faulty, base_url = teacher
    faulty.mix = mix
    generator, client = _generator(base_url, tmp_path)
    async with client:
        return await generator.generate(task, options)


def _dataset_rows(tmp_path: Path, result: GenerationResult) -> list[dict[str, str]]:
    """The rows of the generated dataset's train and validation splits, in that order."""
    folder = ArtifactStore(tmp_path / "artifacts").path(result.dataset.sha256)
    return [
        json.loads(line)
        for name in ("train", "validation")
        for line in (folder / f"{name}.jsonl").read_text().splitlines()
    ]


async def test_mixed_faults_finish_within_the_request_budget(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"error": 0.3, "slow": 0.1, "garbage": 0.2, "good": 0.4}
    faulty.requests = 0
    generator, client = _generator(base_url, tmp_path)
    options = GenerateOptions(num_examples=500, batch_size=8, max_requests=60, seed=1)
    async with client:
        result = await generator.generate(TASK, options)
    report = result.report
    assert faulty.requests <= 60  # the budget held at the endpoint, retries included
    assert report.stop_reason == "budget_exhausted"
    assert 0 < report.accepted < 500
    assert report.dropped["unparseable"] > 0
    assert report.usage.failed_requests > 0 and report.usage.retries > 0
    assert report.usage.requests <= 60
    assert result.rows["train"] + result.rows["validation"] == report.accepted


async def test_token_budget_is_never_exceeded(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"good": 1.0}
    generator, client = _generator(base_url, tmp_path)
    options = GenerateOptions(num_examples=500, max_tokens=3000, max_new_tokens=64, seed=2)
    async with client:
        result = await generator.generate(TASK, options)
    used = result.report.usage.prompt_tokens + result.report.usage.completion_tokens
    assert 0 < used <= 3000
    assert result.report.stop_reason == "budget_exhausted"


async def test_nothing_usable_is_a_clear_error(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"garbage": 1.0}
    generator, client = _generator(base_url, tmp_path)
    async with client:
        with pytest.raises(Unavailable, match="nothing usable"):
            await generator.generate(TASK, GenerateOptions(num_examples=5, batch_size=4))
    # The journal keeps what each unreadable answer said and why it ended, to see what went wrong.
    (journal,) = (tmp_path / "work").rglob("journal.jsonl")
    bad = [e for e in map(json.loads, journal.read_text().splitlines()) if e["e"] == "bad"]
    assert bad and all(e["text"] == "I am sorry, I cannot help with that." for e in bad)
    assert all(e["finish"] == "stop" for e in bad)


async def test_endpoint_down_is_a_clear_error_and_keeps_nothing_half_done(tmp_path: Path):
    generator, client = _generator("http://127.0.0.1:9/v1", tmp_path)
    async with client:
        with pytest.raises(Unavailable, match="every request of the round failed"):
            await generator.generate(TASK, GenerateOptions(num_examples=5, batch_size=4))


async def test_budget_too_small_for_any_example(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"good": 1.0}
    generator, client = _generator(base_url, tmp_path)
    async with client:
        with pytest.raises(BudgetExhausted):
            await generator.generate(TASK, GenerateOptions(num_examples=5, max_tokens=10))


async def test_examples_that_break_the_demonstrations_invariants_are_dropped_and_counted(
    teacher, tmp_path: Path
):
    mix = {"good": 0.5, "span": 0.5}  # half without the markers
    result = await _generate_with(
        teacher, tmp_path, mix, SPAN_TASK, GenerateOptions(num_examples=6, seed=3)
    )
    report = result.report
    assert report.invariants.input_markers == ("Question:", "Context:")
    assert report.invariants.output_in_input
    assert report.accepted == 6
    assert report.dropped["invariant"] == sum(report.invariant_drops.values())
    # The learned "Question:" prefix is a pattern of the schema the endpoint decodes by; this
    # endpoint ignores it, so the invariants drop the inputs without it.
    assert report.invariant_drops["input_prefix"] > 0 and report.dropped["unparseable"] == 0
    rows = _dataset_rows(tmp_path, result)
    assert len(rows) == 6
    for row in rows:
        assert report.invariants.violation(Example(row["input"], row["output"])) is None


def _answers_asked(folder: Path) -> dict[str, list[str]]:
    """Each candidate's answers (its id: their votes), from the run's journal."""
    answers: dict[str, list[str]] = {}
    for line in (folder / "journal.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["e"] == "sc":
            answers.setdefault("g" + record["id"][1:].split(".")[0], []).append(record["output"])
    return answers


async def test_voted_answers_copied_from_the_input_count_their_pieces_for_the_whole(
    teacher, tmp_path: Path
):
    """Outputs that are spans of the input: "7" backs "colour 7", and every answer is asked."""
    options = GenerateOptions(
        num_examples=8, seed=6, self_consistency_samples=3, answer_temperature=0.8
    )
    mix = {"span": 0.4, "piece": 0.6}  # answers "colour N" or "N" (inputs of "piece": dropped)
    result = await _generate_with(teacher, tmp_path, mix, SPAN_TASK, options)
    folder = next((tmp_path / "work").iterdir())
    answers = _answers_asked(folder)
    assert answers and all(len(votes) == 3 for votes in answers.values())  # never settled early
    accepted = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
    assert len(accepted) == result.report.accepted > 0
    for row in accepted:
        votes = answers[row["id"]]
        whole = [v for v in votes if v.startswith("colour")]
        assert row["output"] == (whole[0] if whole else votes[0])
    outvoted = [row for row in accepted if majority_vote(answers[row["id"]])[0] != row["output"]]
    assert outvoted  # where the pieces outnumber the whole span, a plain count picks a piece


async def test_span_first_inputs_keep_the_span_the_teacher_gives_back(teacher, tmp_path: Path):
    options = GenerateOptions(num_examples=6, seed=5, span_first=True)
    mix = {"good": 0.8, "telling": 0.2}
    result = await _generate_with(teacher, tmp_path, mix, SPAN_TASK, options)
    report = result.report
    assert report.accepted == 6
    # Spans the teacher does not give back ("Anna Berg", the year) are dropped, and so are
    # questions that hold their answer.
    assert report.dropped["missed_span"] > 0 and report.dropped["gives_answer"] > 0
    for row in _dataset_rows(tmp_path, result):
        question, passage = re.fullmatch(r"Question: (.*) Context: (.*)", row["input"]).groups()
        assert re.fullmatch(r"Town\d+", row["output"]) and row["output"] in passage
        assert row["output"] not in question
    asked = [p for p in teacher[0].prompts if 'whose answer is "Town' in p]
    assert asked and all(re.search(r"Context: Anna Berg built Town\d+ in", p) for p in asked)


async def test_passage_first_inputs_are_answered_by_the_vote(teacher, tmp_path: Path):
    options = GenerateOptions(num_examples=6, seed=5, passage_first=True)
    before = len(teacher[0].prompts)  # the module's teacher keeps earlier tests' prompts
    result = await _generate_with(teacher, tmp_path, {"good": 1.0}, SPAN_TASK, options)
    report = result.report
    assert report.accepted == 6 and report.dropped["missed_span"] == 0
    for row in _dataset_rows(tmp_path, result):
        question, passage = re.fullmatch(r"Question: (.*) Context: (.*)", row["input"]).groups()
        assert re.fullmatch(r"Which \d+\?", question)  # written after its passage
        assert re.fullmatch(r"Town\d+", row["output"]) and row["output"] in passage
    asked = [p for p in teacher[0].prompts[before:] if 'after "Question:"' in p]
    assert asked and not any('whose answer is "' in p for p in asked)  # none chosen for it
    assert all(re.search(r"Context: Anna Berg built Town\d+ in", p) for p in asked)


async def test_inputs_that_copy_the_instruction_are_dropped_and_counted(teacher, tmp_path: Path):
    options = GenerateOptions(num_examples=4, batch_size=4, seed=13, self_consistency_samples=1)
    result = await _generate_with(teacher, tmp_path, {"good": 0.5, "parrot": 0.5}, TASK, options)
    report = result.report
    assert report.accepted == 4 and report.dropped["copies_instruction"] > 0
    rows = _dataset_rows(tmp_path, result)
    assert len(rows) == 4
    assert not any("name a colour" in row["input"] for row in rows)
    assert not any("code fences" in row["output"] for row in rows)


async def test_given_invariants_replace_the_learned_ones(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"good": 1.0}  # no markers at all
    generator, client = _generator(base_url, tmp_path)
    none = GenerateOptions(num_examples=4, seed=4, invariants=Invariants())
    off = GenerateOptions(num_examples=4, seed=4, check_invariants=False)
    async with client:
        for options in (none, off):
            report = (await generator.generate(SPAN_TASK, options)).report
            assert report.accepted == 4 and report.dropped["invariant"] == 0
            assert report.invariants.empty


async def test_inputs_that_mean_what_an_accepted_one_means_are_dropped(teacher, tmp_path: Path):
    faulty, base_url = teacher
    faulty.mix = {"good": 1.0}  # "thing number N <random>": the same input, reworded
    encoder = shipped_encoder()
    assert encoder is not None
    config = LLMConfig(base_url=base_url, timeout_s=5, max_concurrency=8)
    async with LLMClient(config) as client:
        generator = DatasetGenerator(
            client, ArtifactStore(tmp_path / "artifacts"), tmp_path / "work", "faulty", encoder
        )
        options = GenerateOptions(
            num_examples=20, batch_size=8, seed=5, max_requests=60, meaning_dedup_threshold=0.85
        )
        result = await generator.generate(TASK, options)
    report = result.report
    assert report.dropped["same_meaning"] > 0
    assert report.accepted < 20 and report.stop_reason in ("no_progress", "budget_exhausted")
    inputs = [row["input"] for row in _dataset_rows(tmp_path, result)]
    vectors = encoder.encode(inputs)
    similarity = vectors @ vectors.T
    assert (similarity[~np.eye(len(inputs), dtype=bool)] < 0.85).all()


async def test_keys_of_another_kind_than_the_demonstrations_keys_are_dropped(teacher, tmp_path):
    """Asked for, with the shipped encoder, "Paris == 2020-01-05" is dropped; without, kept."""
    faulty, base_url = teacher
    faulty.mix = {"keyed": 1.0}
    options = GenerateOptions(num_examples=6, batch_size=4, seed=7, dedup=False, key_kinds=True)
    config = LLMConfig(base_url=base_url, timeout_s=5, max_concurrency=8)
    found = {}
    for name, encoder in (("held", shipped_encoder()), ("unheld", None)):
        store = ArtifactStore(tmp_path / name / "artifacts")
        async with LLMClient(config) as client:
            generator = DatasetGenerator(client, store, tmp_path / name, "faulty", encoder)
            result = await generator.generate(KEYED_TASK, options)
        folder = store.path(result.dataset.sha256)
        outputs = [
            json.loads(line)["output"]
            for split in ("train", "validation")
            for line in (folder / f"{split}.jsonl").read_text().splitlines()
        ]
        found[name] = (result.report, outputs)
    held, outputs = found["held"]
    assert held.invariants.output_key_kinds > 0 and held.invariant_drops["output_key_kinds"] > 0
    assert held.accepted == 6 and all(o.startswith("next week == ") for o in outputs), outputs
    unheld, outputs = found["unheld"]
    assert (
        unheld.invariants.output_key_kinds == 0 and "output_key_kinds" not in unheld.invariant_drops
    )
    assert any(o.startswith("Paris == ") for o in outputs), outputs


async def test_a_closed_set_is_balanced_by_asking_for_the_scarcest_label(teacher, tmp_path: Path):
    options = GenerateOptions(num_examples=12, batch_size=6, seed=6, self_consistency_samples=1)
    result = await _generate_with(teacher, tmp_path, {"biased": 1.0}, SENTIMENT_TASK, options)
    report = result.report
    assert report.invariants.output_choices == ("positive", "neutral", "negative")
    assert report.accepted == 12
    assert sum(report.label_counts.values()) == 12
    assert max(report.label_counts.values()) <= 1.5 * 12 / 3  # at most 1.5x the fair share
    assert min(report.label_counts.values()) > 0


async def test_closed_set_answers_are_read_as_the_closest_label(teacher, tmp_path: Path):
    # Inputs come from the "biased" teacher; answers are near-misses ("Positively").
    options = GenerateOptions(num_examples=4, batch_size=4, seed=10, self_consistency_samples=2)
    mix = {"biased": 0.5, "sloppy": 0.5}
    result = await _generate_with(teacher, tmp_path, mix, SENTIMENT_TASK, options)
    assert result.report.accepted == 4
    assert sum(result.report.label_counts.values()) == 4  # every output is one of the labels
    assert not result.report.invariant_drops


async def test_new_inputs_are_asked_for_with_the_learned_prefix_as_a_pattern(
    teacher, tmp_path: Path
):
    faulty, _ = teacher
    faulty.input_schemas, faulty.rng = [], random.Random(12)  # its draws, whatever ran before
    options = GenerateOptions(num_examples=4, batch_size=4, seed=12, self_consistency_samples=1)
    mix = {"dated": 0.5, "good": 0.5}  # "good" inputs lack the prefix: the invariants drop them
    result = await _generate_with(teacher, tmp_path, mix, DATED_TASK, options)
    report = result.report
    assert report.accepted == 4 and report.invariant_drops["input_prefix"] > 0
    assert report.dropped["unparseable"] == 0  # the answer is read by the plain schema
    patterns = {s["properties"]["input"].get("pattern") for s in faulty.input_schemas}
    assert patterns == {r'^\[Day [0-9]{2}\]([^"\\\x00-\x1f]|\\[^nr])+$'}  # one line, as the demos


async def test_a_label_that_reached_its_quota_takes_no_more(teacher, tmp_path: Path):
    options = GenerateOptions(num_examples=12, batch_size=6, seed=7, self_consistency_samples=1)
    stubborn = {"stubborn": 1.0}  # "positive", whatever it is asked for
    report = (await _generate_with(teacher, tmp_path, stubborn, SENTIMENT_TASK, options)).report
    assert report.label_counts == {"positive": 6, "neutral": 0, "negative": 0}  # 1.5 x 12 / 3
    assert report.dropped["over_quota"] > 0
    assert report.stop_reason == "no_progress"


async def test_an_open_output_stops_at_its_share_and_new_inputs_are_asked_to_avoid_it(
    teacher, tmp_path: Path
):
    faulty, _ = teacher
    options = GenerateOptions(num_examples=10, batch_size=4, seed=8, self_consistency_samples=1)
    before = len(faulty.prompts)
    report = (await _generate_with(teacher, tmp_path, {"repetitive": 1.0}, TASK, options)).report
    assert not report.invariants.output_choices  # open outputs: no labels' quota
    assert report.accepted == 2  # 2% of 10 is below the floor of 2 examples an output may have
    assert report.dropped["repeated_output"] > 0
    assert report.commonest_output_share == 1.0
    assert report.stop_reason == "no_progress"
    asked = [p for p in faulty.prompts[before:] if p.startswith("Task:")]
    assert any('its correct output must not be "colour 7"' in p for p in asked)

    uncapped = replace(options, max_output_share=0.0)
    report = (await _generate_with(teacher, tmp_path, {"repetitive": 1.0}, TASK, uncapped)).report
    assert report.accepted == 10 and report.dropped["repeated_output"] == 0


async def test_two_generations_of_the_same_data_at_once_run_one_after_the_other(
    teacher, tmp_path: Path
):
    faulty, base_url = teacher
    faulty.mix = {"good": 1.0}
    options = GenerateOptions(num_examples=6, batch_size=3, seed=23)
    first, first_client = _generator(base_url, tmp_path)  # as two processes on one data dir
    second, second_client = _generator(base_url, tmp_path)
    async with first_client, second_client:
        results = await asyncio.gather(
            first.generate(COLOUR_TASK, options), second.generate(COLOUR_TASK, options)
        )
    assert results[0].dataset == results[1].dataset
    assert sorted(r.report.cached for r in results) == [False, True]  # the second waited
    (journal,) = (tmp_path / "work").rglob("journal.jsonl")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    sent = Counter(r["id"] for r in records if r["e"] == "req")
    assert sent and max(sent.values()) == 1  # no request id sent twice
    ids = [json.loads(line)["id"] for line in (journal.parent / "examples.jsonl").open()]
    assert len(ids) == len(set(ids)) == 6


async def test_a_stalled_generation_stops_with_what_it_made_and_resumes_on_request(
    teacher, tmp_path: Path
):
    options = GenerateOptions(
        num_examples=12, batch_size=6, seed=7, self_consistency_samples=1, stall_timeout_s=0.01
    )
    stubborn = {"stubborn": 1.0}  # only "positive": no new example once its quota is full
    stalled = await _generate_with(teacher, tmp_path, stubborn, SENTIMENT_TASK, options)
    assert stalled.report.stop_reason == "stalled"
    assert stalled.report.accepted == 6 and stalled.report.rounds < 4  # before "no_progress"
    assert stalled.rows["train"] + stalled.rows["validation"] == 6
    patient = replace(options, stall_timeout_s=0)  # a speed setting: the same generation
    resumed = await _generate_with(teacher, tmp_path, {"biased": 1.0}, SENTIMENT_TASK, patient)
    assert not resumed.report.cached and resumed.report.resumed_from == 6
    assert resumed.report.accepted == 12 and resumed.report.stop_reason == "target_reached"


async def test_the_teacher_plans_topics_once_and_each_new_input_request_gets_one(
    teacher, tmp_path: Path
):
    faulty, base_url = teacher
    faulty.mix, faulty.prompts = {"good": 1.0}, []
    generator, client = _generator(base_url, tmp_path)
    async with client:
        await generator.generate(TASK, GenerateOptions(num_examples=4, batch_size=4, seed=8))
        journal = Journal(next((tmp_path / "work").iterdir())).replay()
    assert journal.hints is not None and journal.hints[:5] == [f"topic {i}" for i in range(5)]
    assert sum("everyday topics" in prompt for prompt in faulty.prompts) == 1
    new_inputs = [p for p in faulty.prompts if "Write one new input" in p]
    assert new_inputs and all(
        any(f"touching on: {topic}" in p for topic in journal.hints) for p in new_inputs
    )


async def test_one_greedy_answer_by_default_voted_ones_at_a_set_temperature_or_for_spans(
    teacher, tmp_path: Path
):
    """Unset, the temperature is the task's: greedy, or five voted at 1.0 for span outputs."""
    faulty, base_url = teacher

    default = GenerateOptions(num_examples=4, batch_size=4, seed=8)
    cases = (
        (TASK, default, 0.0),
        (TASK, replace(default, answer_temperature=0.9), 0.9),
        (SPAN_TASK, default, SPAN_VOTE_TEMPERATURE),
    )
    for index, (task, options, temperature) in enumerate(cases):
        faulty.mix, faulty.bodies = {"span" if task is SPAN_TASK else "good": 1.0}, []
        generator, client = _generator(base_url, tmp_path / str(index))
        async with client:
            result = await generator.generate(task, options)
        assert result.report.accepted == 4
        asked = [b for b in faulty.bodies if "response_format" not in b]  # answers: free text
        inputs = [b for b in faulty.bodies if "input" in _required(b)]
        assert {b["temperature"] for b in asked} == {temperature}
        assert {b["temperature"] for b in inputs} != {temperature}  # still annealed
        if temperature == 0.0:  # every sample would be the same: one per input
            assert len(asked) == result.report.accepted
        elif task is SPAN_TASK:  # all five asked: a nested vote is never settled early
            answers = _answers_asked(next((tmp_path / str(index) / "work").iterdir()))
            assert answers and {len(votes) for votes in answers.values()} == {SPAN_VOTE_SAMPLES}
            assert result.report.self_consistency_agreement > 0  # the votes are reported
        else:
            assert len(asked) >= 2 * result.report.accepted


def _required(body: dict) -> list[str]:
    return (
        body.get("response_format", {}).get("json_schema", {}).get("schema", {}).get("required", [])
    )


async def test_a_new_input_request_shows_fewer_demonstrations_than_an_answer_request(
    teacher, tmp_path: Path
):
    faulty, base_url = teacher
    faulty.mix, faulty.conversations = {"good": 1.0}, []
    things, task = THINGS, COLOUR_TASK
    options = GenerateOptions(
        num_examples=4, batch_size=4, seed=13, input_demonstrations=2, few_shot_demonstrations=5
    )
    generator, client = _generator(base_url, tmp_path)
    async with client:
        await generator.generate(task, options)
    asks = [c[-1]["content"] for c in faulty.conversations if "Write one new input" in str(c)]
    answers = [c for c in faulty.conversations if c[0]["content"].startswith("Name a colour")]
    assert asks and answers
    for ask in asks:  # the first two demonstrations, always; never the later ones
        assert "input: sky" in ask and "input: grass" in ask
        assert not any(f"input: {thing}\n" in ask for thing in things[2:])
    for conversation in answers:  # five demonstrations as turns, then the input
        shown = [m["content"] for m in conversation if m["role"] == "user"][:-1]
        assert shown[:5] == list(things[:5])


async def test_a_demonstration_the_teacher_copies_twice_is_shown_behind_the_others(
    teacher, tmp_path: Path
):
    faulty, base_url = teacher
    faulty.mix, faulty.conversations = {"good": 0.5, "copycat": 0.5}, []
    options = GenerateOptions(num_examples=8, batch_size=4, seed=17, input_demonstrations=2)
    generator, client = _generator(base_url, tmp_path)
    async with client:
        result = await generator.generate(COLOUR_TASK, options)
    asks = [c[-1]["content"] for c in faulty.conversations if "Write one new input" in str(c)]
    for ask in asks:  # the same two shown throughout, only their order changes
        assert "input: sky\n" in ask and "input: grass\n" in ask
        assert not any(f"input: {thing}\n" in ask for thing in THINGS[2:])
    firsts = [re.search(r"^input: (.*)$", ask, re.MULTILINE).group(1) for ask in asks]
    assert firsts[0] == "sky" and "grass" in firsts  # "sky", copied twice, went behind "grass"
    assert result.report.accepted == 8
    (journal,) = (tmp_path / "work").rglob("journal.jsonl")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    moves = [int(r["id"][1:]) for r in records if r["e"] == "move"]
    assert moves[:1] == [0] and all(a != b for a, b in pairwise(moves))
    assert Journal(journal.parent).replay().moved == moves


@pytest.mark.parametrize("extra", [0, 2])
async def test_an_answer_request_shows_the_demonstrations_then_answer_generated_examples(
    teacher, tmp_path: Path, extra: int
):
    faulty, base_url = teacher
    faulty.mix, faulty.conversations = {"good": 1.0}, []
    things, task = THINGS, COLOUR_TASK
    options = GenerateOptions(
        num_examples=8,
        batch_size=4,
        seed=15,
        few_shot_demonstrations=3,
        answer_generated_examples=extra,
    )
    generator, client = _generator(base_url, tmp_path)
    async with client:
        result = await generator.generate(task, options)
    accepted = {row["input"] for row in _dataset_rows(tmp_path, result)}
    answers = [c for c in faulty.conversations if c[0]["content"].startswith("Name a colour")]
    shown = [[m["content"] for m in c if m["role"] == "user"][:-1] for c in answers]
    assert shown and all(turns[:3] == list(things[:3]) for turns in shown)
    tails = [turns[3:] for turns in shown]
    if extra == 0:  # the demonstrations only: one prompt up to the input
        assert not any(tails)
    else:  # later rounds add accepted examples, never more than asked
        assert any(tails) and all(len(tail) <= extra for tail in tails)
        assert all(text in accepted for tail in tails for text in tail)


async def test_only_a_request_for_a_new_input_carries_the_frequency_penalty(
    teacher, tmp_path: Path
):
    faulty, base_url = teacher
    faulty.mix, faulty.bodies = {"good": 1.0}, []
    options = GenerateOptions(num_examples=4, batch_size=4, seed=14, input_frequency_penalty=0.7)
    generator, client = _generator(base_url, tmp_path)
    async with client:
        await generator.generate(TASK, options)
    asks = [b for b in faulty.bodies if "Write one new input" in b["messages"][-1]["content"]]
    others = [b for b in faulty.bodies if b not in asks]
    assert asks and all(b["frequency_penalty"] == 0.7 for b in asks)
    assert others and not any("frequency_penalty" in b for b in others)


async def test_the_judge_drops_the_examples_it_grades_below_the_threshold(teacher, tmp_path: Path):
    options = GenerateOptions(num_examples=6, batch_size=6, seed=9, judge=True)
    result = await _generate_with(teacher, tmp_path, {"good": 1.0}, TASK, options)
    report = result.report
    assert report.accepted == 6 and report.dropped["judged_low"] > 0
    assert 2 < report.judge_mean_score < 5
    inputs = [row["input"] for row in _dataset_rows(tmp_path, result)]
    assert all(int(text.split()[2]) % 2 == 0 for text in inputs)  # only the ones graded 5


async def test_answers_are_asked_until_the_vote_is_settled(teacher, tmp_path: Path):
    """Three answers voted per input: a third is asked only where the first two disagree."""
    options = GenerateOptions(
        num_examples=8, batch_size=4, seed=14, self_consistency_samples=3, answer_temperature=0.8
    )
    mix = {"good": 0.6, "repetitive": 0.4}  # answers "colour N", or at times "colour 7"
    result = await _generate_with(teacher, tmp_path, mix, TASK, options)
    folder = next((tmp_path / "work").iterdir())
    answers = _answers_asked(folder)
    sizes = Counter(len(votes) for votes in answers.values())
    assert set(sizes) == {2, 3}, sizes  # settled by two, and three where they split
    assert all((len(v) == 3) == (normalise(v[0]) != normalise(v[1])) for v in answers.values())
    accepted = [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]
    assert len(accepted) == result.report.accepted > 0
    assert all(row["output"] == majority_vote(answers[row["id"]])[0] for row in accepted)
