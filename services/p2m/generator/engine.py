"""Generation rounds: ask the teacher for new examples, filter, vote, accept, persist."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.budget import Budget
from p2m.common.errors import BudgetExhausted, LLMError, LLMOutputError, Unavailable
from p2m.common.file_lock import exclusive
from p2m.common.llm import STOPPED_EARLY, ChatResult, LLMClient, UsageCounters
from p2m.common.settings import Settings
from p2m.common.splits import read_rows
from p2m.common.teacher_prompt import (
    REPLY_RULE,
    answer_messages,
    ask_answer,
    teacher_instruction,
)
from p2m.common.types import Example, TaskSpec
from p2m.generator import labels
from p2m.generator.copied import DemonstrationOrder
from p2m.generator.dataset import REPORT_FILE, write_dataset
from p2m.generator.filters import (
    DuplicateIndex,
    copies_input,
    copies_instruction,
    ends_in_a_loop,
    field_problem,
    instructions_to_screen,
    majority_vote,
    near_duplicate_share,
    repeats_itself,
    samples_to_settle,
)
from p2m.generator.grounded import (
    PASSAGE_SCHEMA,
    QUESTION_SCHEMA,
    InputLayout,
    answer_spans,
    copies_a_passage,
    gives_answer,
    passage_messages,
    pick_span,
    question_messages,
    same_answer,
)
from p2m.generator.hints import HINTS_SCHEMA, clean_hints, hint_for, hints_messages, salvage_hints
from p2m.generator.hints import TEMPERATURE as HINT_TEMPERATURE
from p2m.generator.invariants import Invariants
from p2m.generator.journal import Candidate, Journal
from p2m.generator.judge import JUDGE_SCHEMA, JUDGE_TOKENS, judge_messages, score_of
from p2m.generator.key_kinds import KeyKinds
from p2m.generator.limits import answer_tokens, example_tokens
from p2m.generator.meaning import Encoder, MeaningIndex
from p2m.generator.options import (
    GenerateOptions,
    answer_sampling,
    applied_invariants,
    generation_key,
    span_first_layout,
)
from p2m.generator.output_share import OutputCap, OutputCounts
from p2m.generator.prompts import (
    INPUT_SCHEMA,
    input_schema,
    new_input_messages,
    pick_examples,
    rule_lines,
)

log = logging.getLogger(__name__)

DROP_REASONS = (
    "exact_duplicate",
    "near_duplicate",
    "empty",
    "too_long",
    "copies_input",
    "copies_instruction",
    "unparseable",
    "invariant",
    "same_meaning",
    "over_quota",
    "judged_low",
    "repeated_output",
    "looped",
    "no_span",
    "gives_answer",
    "missed_span",
)
DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate", "same_meaning")
# A drop by an invariant is journalled as "invariant:<rule>".
INVARIANT_PREFIX = "invariant:"
# Generation stops as stalled after this many rounds in a row without a new example, and at
# least this many requests' worth of them (rounds of 2 requests are over quickly).
NO_PROGRESS_ROUNDS = 4
NO_PROGRESS_REQUESTS = 32
HINT_TOKENS = 512  # room for the list of topics
# A question's token cap: the demonstrations' answers' own, plus room for the question's words.
QUESTION_EXTRA_TOKENS = 64
# Each round in a row without a new example raises the temperature by this share of its span.
STALL_STEP = 0.25
# A round whose candidates are duplicates beyond this share pushes the temperature up (a whole
# round of duplicates as much as a stalled round), one below it lets it back down.
DUPLICATE_TARGET = 0.3


class NoValue(Enum):
    """Why a request gave no value (an answer may be any text, so these are no strings)."""

    UNPARSEABLE = "unparseable"
    LOOPED = "looped"
    FAILED = "failed"
    UNSENT = "unsent"


UNPARSEABLE, LOOPED = NoValue.UNPARSEABLE, NoValue.LOOPED
FAILED, UNSENT = NoValue.FAILED, NoValue.UNSENT


@dataclass(frozen=True)
class GenerationReport:
    """What a generation did and spent (mirrors generator.proto's GenerationReport)."""

    requested: int
    accepted: int
    dropped: dict[str, int]
    invariant_drops: dict[str, int]
    invariants: Invariants
    label_counts: dict[str, int]
    duplicate_share: float
    near_duplicate_share: float
    judge_mean_score: float
    commonest_output_share: float
    self_consistency_agreement: float
    usage: UsageCounters
    resumed_from: int
    cached: bool
    stop_reason: str
    rounds: int
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return {**asdict(self), "invariants": self.invariants.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationReport:
        """Inverse of ``to_json``."""
        return cls(
            **{
                **data,
                "usage": UsageCounters(**data["usage"]),
                "invariants": Invariants.from_json(data["invariants"]),
            }
        )


@dataclass(frozen=True)
class GenerationProgress:
    """A progress snapshot."""

    accepted: int
    requested: int
    dropped: dict[str, int]
    requests: int
    tokens: int
    temperature: float
    rounds: int


@dataclass(frozen=True)
class GenerationResult:
    """The dataset artifact, its split sizes and the report."""

    dataset: ArtifactRef
    rows: dict[str, int]
    report: GenerationReport


ProgressCallback = Callable[[GenerationProgress], None]


def request_seed(seed: int, request_id: str) -> int:
    """The LLM ``seed`` for one request: fixed by the generation seed and the request id."""
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def annealed_temperature(options: GenerateOptions, progress: float) -> float:
    """Temperature rising linearly from start to end with ``progress`` (clipped to [0, 1]).

    Progress is the share of the dataset filled, plus a step per stalled round, so a teacher
    that keeps repeating itself is pushed to sample more widely.
    """
    if not options.annealing:
        return options.temperature_start
    span = options.temperature_end - options.temperature_start
    return round(options.temperature_start + span * min(1.0, max(0.0, progress)), 4)


def duplicate_push(push: float, duplicates: int, candidates: int) -> float:
    """The temperature push (in stalled rounds) after a round of ``candidates`` new inputs.

    A small teacher at a low temperature writes a shown example again, or the same input for
    the same topic: the round's share of duplicates above ``DUPLICATE_TARGET`` adds to the
    push, a share below it takes from it. Kept within [0, 1 / STALL_STEP] (the whole span).
    """
    if not candidates:
        return push
    excess = (duplicates / candidates - DUPLICATE_TARGET) / (1 - DUPLICATE_TARGET)
    return min(1 / STALL_STEP, max(0.0, push + excess))


@dataclass
class _Run:
    """The mutable state of one generate call."""

    task: TaskSpec
    options: GenerateOptions
    invariants: Invariants
    journal: Journal
    budget: Budget
    duplicates: DuplicateIndex
    meaning: MeaningIndex | None
    accepted: list[tuple[str, Example, float]]
    dropped: Counter[str]
    pending: dict[str, Candidate]
    next_gen: int
    rounds: int
    order: DemonstrationOrder  # the demonstrations requests for new inputs show, in order
    push: float = 0.0  # the temperature push after the last round (``duplicate_push``)
    usage: UsageCounters = field(default_factory=UsageCounters)
    budget_spent: bool = False
    failures: int = 0
    hints: list[str] | None = None
    hint_requests: int = 0
    judge_scores: list[int] = field(default_factory=list)
    layout: InputLayout | None = None  # span-first or passage-first inputs are written so
    key_kinds: KeyKinds | None = None  # holds ``invariants.output_key_kinds``
    output_cap: OutputCap = field(init=False)
    outputs: OutputCounts = field(init=False)
    instructions: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.instructions = instructions_to_screen(self.task)
        choices = self.invariants.output_choices  # a closed set has its labels' quota instead
        share = 0.0 if choices else self.options.max_output_share
        self.output_cap = OutputCap.for_demonstrations(
            self.task.demonstrations, self.options.num_examples, share
        )
        self.outputs = OutputCounts(example.output for _, example, _ in self.accepted)

    @property
    def examples(self) -> list[Example]:
        return [example for _, example, _ in self.accepted]


class DatasetGenerator:
    """Writes datasets with the teacher LLM, one work folder per generation key."""

    @classmethod
    def from_settings(
        cls, settings: Settings, llm: LLMClient, encoder: Encoder | None = None
    ) -> DatasetGenerator:
        """The generator ``settings`` describe: their store, work folder and teacher's name."""
        return cls(
            llm,
            ArtifactStore(settings.artifacts_dir),
            settings.cache_dir("generate"),
            settings.teacher_model,
            encoder,
        )

    def __init__(
        self,
        llm: LLMClient,
        store: ArtifactStore,
        work_root: Path,
        model_name: str,
        encoder: Encoder | None = None,
    ) -> None:
        """Use ``llm`` (named ``model_name`` in cache keys), ``store`` and ``work_root``.

        With an ``encoder``, inputs that mean what an earlier one means are dropped too
        (``options.meaning_dedup_threshold``).
        """
        self._llm = llm
        self._store = store
        self._work_root = work_root
        self._model_name = model_name
        self._encoder = encoder

    async def generate(
        self,
        task: TaskSpec,
        options: GenerateOptions,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Generate ``options.num_examples`` examples of ``task`` (or reuse/resume earlier work).

        Raises:
            InvalidInput: Bad options or an empty instruction.
            BudgetExhausted: The budget ran out before any example was accepted.
            Unavailable: The endpoint failed every request of a round, or nothing usable came back.
        """
        options.validate()
        started = time.monotonic()
        key = generation_key(task, options, self._model_name)
        cached = self._store.recall(key)
        if cached is not None:
            return self._cached_result(cached)
        # One generation of a key at a time: two (a restarted gateway resuming its run while a
        # new run asks for the same data) sent the same request ids and wrote examples twice.
        async with exclusive(self._work_root / key / "lock", f"generation {key[:12]}"):
            cached = self._store.recall(key)  # the one waited for may have made it
            if cached is not None:
                return self._cached_result(cached)
            return await self._generate(task, options, key, started, on_progress)

    async def _generate(
        self,
        task: TaskSpec,
        options: GenerateOptions,
        key: str,
        started: float,
        on_progress: ProgressCallback | None,
    ) -> GenerationResult:
        """``generate`` with the key's lock held."""
        run = self._resume(task, options, key)
        options = run.options  # the answers' temperature settled for the task
        resumed_from = len(run.accepted)
        stop_reason = "target_reached"
        stalled, push = 0, run.push
        last_new = time.monotonic()
        try:
            if run.hints is None and options.diverse_prompts:
                await self._plan_hints(run)
            while len(run.accepted) < options.num_examples:
                before = len(run.accepted)
                progress = before / options.num_examples + (stalled + push) * STALL_STEP
                temperature = annealed_temperature(options, progress)
                duplicates, candidates = _duplicates(run.dropped), _candidates(run)
                await self._round(run, temperature)
                push = duplicate_push(
                    push,
                    _duplicates(run.dropped) - duplicates,
                    _candidates(run) - candidates,
                )
                run.rounds += 1
                run.journal.record("round", f"r{run.rounds}", push=round(push, 4))
                if on_progress is not None:
                    on_progress(self._progress(run, temperature))
                if len(run.accepted) >= options.num_examples:
                    break
                if run.budget_spent:
                    stop_reason = "budget_exhausted"
                    break
                stalled = stalled + 1 if len(run.accepted) == before else 0
                if not stalled:
                    last_new = time.monotonic()
                if stalled >= max(NO_PROGRESS_ROUNDS, NO_PROGRESS_REQUESTS // options.batch_size):
                    stop_reason = "no_progress"
                    break
                if stalled and _timed_out(last_new, options.stall_timeout_s):
                    stop_reason = "stalled"
                    log.warning(
                        "generation stalled",
                        extra={"accepted": len(run.accepted), "seconds": options.stall_timeout_s},
                    )
                    break
        finally:
            run.journal.close()
        if not run.accepted:
            if stop_reason == "budget_exhausted":
                raise BudgetExhausted(
                    "the budget ran out before any example was accepted "
                    f"(dropped: {dict(run.dropped)}, failed requests: {run.failures})"
                )
            raise Unavailable(
                "the LLM produced nothing usable: "
                f"dropped {dict(run.dropped)}, failed requests {run.failures}"
            )
        agreements = [agreement for _, _, agreement in run.accepted]
        report = GenerationReport(
            requested=options.num_examples,
            accepted=len(run.accepted),
            dropped=drop_counts(run.dropped),
            invariant_drops=invariant_drops(run.dropped),
            invariants=run.invariants,
            label_counts=_label_counts(run),
            duplicate_share=_duplicate_share(run),
            near_duplicate_share=round(near_duplicate_share([e.input for e in run.examples]), 4),
            judge_mean_score=(
                round(sum(run.judge_scores) / len(run.judge_scores), 3) if run.judge_scores else 0.0
            ),
            commonest_output_share=round(run.outputs.commonest_share(), 4),
            self_consistency_agreement=(
                sum(agreements) / len(agreements) if options.samples_per_input > 1 else 0.0
            ),
            usage=run.usage,
            resumed_from=resumed_from,
            cached=False,
            stop_reason=stop_reason,
            rounds=run.rounds,
            elapsed_s=round(time.monotonic() - started, 3),
        )
        return self._publish(key, run, report, cache=stop_reason != "stalled")

    def _resume(self, task: TaskSpec, options: GenerateOptions, key: str) -> _Run:
        journal = Journal(self._work_root / key)
        state = journal.replay()
        budget = Budget(options.max_requests, options.max_tokens)
        budget.requests, budget.tokens = state.requests, state.tokens
        duplicates = DuplicateIndex(
            options.dedup_similarity_threshold, options.dedup_word_similarity_threshold
        )
        seen = [  # a copy of a demonstration adds nothing either
            *(demonstration.input for demonstration in task.demonstrations),
            *(example.input for _, example, _ in state.accepted),
            *(candidate.input for candidate in state.pending.values()),
        ]
        for text in seen:
            duplicates.add(text)
        meaning = None
        if self._encoder is not None and options.dedup and options.meaning_dedup_threshold < 1:
            meaning = MeaningIndex(self._encoder, options.meaning_dedup_threshold)
            meaning.add_all(seen)
        invariants = applied_invariants(task, options, self._encoder)
        options = answer_sampling(options, invariants)
        if state.accepted or state.pending:
            log.info(
                "resuming generation",
                extra={"key": key, "accepted": len(state.accepted), "pending": len(state.pending)},
            )
        return _Run(
            task=task,
            options=options,
            invariants=invariants,
            journal=journal,
            budget=budget,
            duplicates=duplicates,
            meaning=meaning,
            accepted=state.accepted,
            dropped=state.dropped,
            pending=state.pending,
            next_gen=state.next_gen,
            rounds=state.rounds,
            order=DemonstrationOrder(
                task.demonstrations,
                options.input_demonstrations,
                options.dedup_similarity_threshold,
                options.dedup_word_similarity_threshold,
                state.moved,
            ),
            push=state.push,
            layout=span_first_layout(task, options),
            hints=state.hints,
            hint_requests=state.hint_requests,
            key_kinds=self._key_kinds(task, invariants),
        )

    def _key_kinds(self, task: TaskSpec, invariants: Invariants) -> KeyKinds | None:
        """What holds ``output_key_kinds``; None where it is 0 (or no encoder can hold it)."""
        if not invariants.output_key_kinds:
            return None
        if self._encoder is None:
            log.warning("output_key_kinds is not held: no sentence encoder is installed")
            return None
        keys = invariants.demonstration_keys(task.demonstrations)
        return KeyKinds(self._encoder, keys, invariants.output_key_kinds) if keys else None

    async def _round(self, run: _Run, temperature: float) -> None:
        options = run.options
        missing = options.num_examples - len(run.accepted) - len(run.pending)
        done = run.next_gen
        yield_rate = len(run.accepted) / done if done >= 4 else 1.0
        batch = min(options.batch_size, max(0, math.ceil(missing / max(yield_rate, 0.25))))
        gen_ids = [f"g{run.next_gen + k}" for k in range(batch)]
        run.next_gen += batch
        limit = asyncio.Semaphore(options.max_concurrency)
        wanted: list[str | None] = [None] * len(gen_ids)
        if choices := run.invariants.output_choices:
            so_far = [e.output for e in run.examples] + [c.output for c in run.pending.values()]
            wanted = list(labels.targets(choices, labels.label_counts(so_far, choices), gen_ids))
        avoid = run.outputs.at_cap(run.output_cap)  # outputs the dataset holds enough of
        answers = await asyncio.gather(
            *(
                self._new_example(run, rid, label, avoid, temperature, limit)
                for rid, label in zip(gen_ids, wanted, strict=True)
            )
        )
        for rid, answer in zip(gen_ids, answers, strict=True):
            if isinstance(answer, Example):
                self._screen(run, rid, answer)
        pending = list(run.pending.values())
        temperature = options.answer_temperature or 0.0  # settled: ``answer_sampling``
        answering = (self._samples(run, c, temperature, limit) for c in pending)
        await asyncio.gather(*answering)
        voted = []
        for rid in sorted(run.pending, key=lambda r: int(r[1:])):
            decision = self._vote(run, run.pending[rid])
            if decision is not None:
                voted.append((run.pending[rid], *decision))
        scores: list[int | None] = [None] * len(voted)
        if options.judge and voted:
            scores = list(
                await asyncio.gather(*(self._judge(run, c, ex, limit) for c, ex, _ in voted))
            )
        for (candidate, example, agreement), score in zip(voted, scores, strict=True):
            if score is not None and score < options.judge_threshold:
                self._drop(run, candidate.gen_id, "judged_low")
            else:
                self._accept(run, candidate.gen_id, example, agreement)
        run.pending.clear()
        if gen_ids and all(answer is FAILED for answer in answers):
            raise Unavailable(
                f"every request of the round failed ({len(gen_ids)} requests); "
                f"{len(run.accepted)} examples are kept and a re-run resumes from them"
            )

    async def _plan_hints(self, run: _Run) -> None:
        """Ask the teacher once for topics that vary the inputs (none if nothing usable comes)."""
        rid = f"h{run.hint_requests}"
        run.hint_requests += 1
        messages = hints_messages(teacher_instruction(run.task), run.task.demonstrations)

        demonstrations = run.task.demonstrations

        async def ask() -> tuple[Any, ChatResult]:
            try:
                value, result = await self._llm.chat_json(
                    messages,
                    HINTS_SCHEMA,
                    name="topics",
                    temperature=HINT_TEMPERATURE,
                    max_tokens=HINT_TOKENS,
                    seed=request_seed(run.options.seed, rid),
                    budget=run.budget,
                )
            except LLMOutputError as exc:  # cut short: keep the topics it did write
                if not isinstance(exc.result, ChatResult):
                    raise
                return salvage_hints(exc.result.text, demonstrations), exc.result
            return clean_hints(value, demonstrations), result

        value = await self._ask(run, rid, ask, asyncio.Semaphore(1))
        if value is UNSENT or value is FAILED:
            return  # asked again by a resumed run; meanwhile, inputs without topics
        run.hints = [] if isinstance(value, NoValue) else list(value)
        run.journal.record("hints", rid, topics=run.hints)
        log.info("input topics planned", extra={"topics": len(run.hints)})

    async def _new_example(
        self,
        run: _Run,
        rid: str,
        label: str | None,
        avoid: list[str],
        temperature: float,
        limit: asyncio.Semaphore,
    ) -> Example | NoValue:
        """A new input (output ``label`` if given, none of ``avoid``), or why there is none.

        Its output is left to the answer requests (``_samples``), except for a span-first
        input (written, as a passage-first one is, by ``_passage_first_example``), whose output
        is the span it was written for.
        """
        hint = hint_for(run.hints or (), rid)
        if run.layout is not None and label is None:
            return await self._passage_first_example(run, rid, hint, avoid, temperature, limit)
        rules = rule_lines(run.invariants, run.task.demonstrations)
        messages = new_input_messages(
            teacher_instruction(run.task),
            _shown(run, rid, run.order.shown(), run.options.few_shot_generated),
            rules,
            label,
            hint,
            avoid,
        )

        def ask() -> Awaitable[tuple[Any, ChatResult]]:
            return self._llm.chat_json(
                messages,
                input_schema(run.invariants),
                check=INPUT_SCHEMA,  # the invariants check what the pattern asks
                name="input",
                temperature=temperature,
                max_tokens=example_tokens(run.task.demonstrations, run.options.max_new_tokens),
                seed=request_seed(run.options.seed, rid),
                budget=run.budget,
                frequency_penalty=run.options.input_frequency_penalty,
                stop_when=ends_in_a_loop,  # a loop runs to the token cap: stop paying for it
            )

        value = await self._ask(run, rid, ask, limit)
        if isinstance(value, NoValue):
            if value in (UNPARSEABLE, LOOPED):
                self._drop(run, rid, value.value)
            return value
        example = Example(str(value["input"]).strip(), "")
        run.journal.record("gen", rid, input=example.input, output="")
        return example

    async def _passage_first_example(
        self,
        run: _Run,
        rid: str,
        hint: str | None,
        avoid: list[str],
        temperature: float,
        limit: asyncio.Semaphore,
    ) -> Example | NoValue:
        """A passage (request ``rid``), then the question for it (``q``).

        Span-first: the question is asked for a span of the passage, the example's output; the
        answer requests then check that the teacher gives it back (``_vote``). Passage-first:
        the question is one the passage answers, and the answer requests vote on its output
        (``avoid`` is not asked of its input; the output cap drops a held output after the vote).
        """
        layout = run.layout
        assert layout is not None
        instruction = teacher_instruction(run.task)
        shown = _shown(run, rid, run.order.shown(), run.options.few_shot_generated)
        passages = [parts[layout.passage] for e in shown if (parts := layout.parts(e.input))]
        messages = passage_messages(instruction, layout, passages, hint)

        def ask_passage() -> Awaitable[tuple[Any, ChatResult]]:
            return self._llm.chat_json(
                messages,
                PASSAGE_SCHEMA,
                name="passage",
                temperature=temperature,
                max_tokens=example_tokens(run.task.demonstrations, run.options.max_new_tokens),
                seed=request_seed(run.options.seed, rid),
                budget=run.budget,
                frequency_penalty=run.options.input_frequency_penalty,
                stop_when=ends_in_a_loop,
            )

        value = await self._ask(run, rid, ask_passage, limit)
        if isinstance(value, NoValue):
            if value in (UNPARSEABLE, LOOPED):
                self._drop(run, rid, value.value)
            return value
        passage = " ".join(str(value["passage"]).split())
        known = [
            *(e.input for e in (*run.task.demonstrations, *run.examples)),
            *(c.input for c in run.pending.values()),
        ]
        if copies_a_passage(passage, [p[layout.passage] for i in known if (p := layout.parts(i))]):
            self._drop(run, rid, "near_duplicate")
            return UNPARSEABLE
        span = ""
        if run.options.span_first:
            rng = random.Random(f"{run.options.seed}:{rid}:span")
            span = pick_span(answer_spans(passage), rng, avoid) or ""
            if not span:
                self._drop(run, rid, "no_span")
                return UNPARSEABLE
        qid = f"q{rid[1:]}"
        asking = question_messages(instruction, layout, passage, span)

        def ask_question() -> Awaitable[tuple[Any, ChatResult]]:
            return self._llm.chat_json(
                asking,
                QUESTION_SCHEMA,
                name="question",
                temperature=temperature,
                max_tokens=answer_tokens(run.task.demonstrations, run.options.max_new_tokens)
                + QUESTION_EXTRA_TOKENS,
                seed=request_seed(run.options.seed, qid),
                budget=run.budget,
                stop_when=ends_in_a_loop,
            )

        value = await self._ask(run, qid, ask_question, limit)
        if isinstance(value, NoValue):
            if value in (UNPARSEABLE, LOOPED):
                self._drop(run, rid, value.value)
            return value
        question = " ".join(str(value["question"]).split())
        if not question:
            self._drop(run, rid, "empty")
            return UNPARSEABLE
        if span and gives_answer(question, span):
            self._drop(run, rid, "gives_answer")
            return UNPARSEABLE
        parts = ["", ""]
        parts[layout.passage], parts[layout.question] = passage, question
        example = Example(layout.join(parts), span)
        run.journal.record("gen", rid, input=example.input, output=example.output)
        return example

    async def _samples(
        self, run: _Run, candidate: Candidate, temperature: float, limit: asyncio.Semaphore
    ) -> None:
        """Ask for answers to ``candidate`` in waves until its vote is settled.

        A wave asks for the fewest answers that could settle the vote; no answer is asked once
        the rest could not change the winner, so the voted output is the one all
        ``samples_per_input`` answers would give.
        """
        left = run.options.samples_per_input - len(candidate.samples)

        async def one(sid: str) -> None:
            shown = _shown(
                run,
                sid,
                run.task.demonstrations[: run.options.few_shot_demonstrations],
                run.options.answer_generated_examples,
            )
            messages = answer_messages(teacher_instruction(run.task), shown, candidate.input)

            async def ask() -> tuple[str, ChatResult]:
                output, result = await ask_answer(
                    self._llm,
                    messages,
                    shown,
                    choices=run.invariants.output_choices,
                    temperature=temperature,
                    max_tokens=answer_tokens(run.task.demonstrations, run.options.max_new_tokens),
                    seed=request_seed(run.options.seed, sid),
                    budget=run.budget,
                )
                if not output:
                    error = LLMOutputError("the teacher answered nothing usable")
                    error.result = result
                    raise error
                return output, result

            value = await self._ask(run, sid, ask, limit)
            if not isinstance(value, NoValue):
                run.journal.record("sc", sid, output=value)
                candidate.samples.append(value)

        nested = run.invariants.output_in_input
        while wave := samples_to_settle(self._valid_votes(run, candidate), max(0, left), nested):
            ids = [f"s{candidate.gen_id[1:]}.{candidate.next_sample + k}" for k in range(wave)]
            candidate.next_sample += wave
            left -= wave
            await asyncio.gather(*(one(sid) for sid in ids))

    @staticmethod
    def _valid_votes(run: _Run, candidate: Candidate) -> list[str]:
        """The candidate's outputs so far that keep the output invariants.

        A span-first candidate's own output is the span it was written for, not a vote.
        """
        votes = candidate.samples if candidate.output else [candidate.output, *candidate.samples]
        return [v for v in votes if v and _output_rule(run, candidate.input, v) is None]

    async def _ask(
        self,
        run: _Run,
        rid: str,
        send: Callable[[], Awaitable[tuple[Any, ChatResult]]],
        limit: asyncio.Semaphore,
    ) -> Any:
        """One LLM call: its value, or a NoValue (UNPARSEABLE, LOOPED, FAILED or UNSENT)."""
        if run.budget_spent:
            return UNSENT
        async with limit:
            if run.budget_spent:
                return UNSENT
            run.journal.record("req", rid)
            try:
                value, result = await send()
            except BudgetExhausted:
                run.budget_spent = True
                run.journal.record("unsent", rid)
                return UNSENT
            except LLMOutputError as exc:
                answered = exc.result if isinstance(exc.result, ChatResult) else None
                attempts = answered.attempts if answered is not None else 1
                run.usage.add(answered, attempts, ok=True)
                run.journal.record(
                    "bad",
                    rid,
                    attempts=attempts,
                    tokens=_tokens(answered),
                    finish=answered.finish_reason if answered is not None else "",
                    text=unreadable_excerpt(answered.text if answered is not None else str(exc)),
                )
                looped = answered is not None and answered.finish_reason == STOPPED_EARLY
                return LOOPED if looped else UNPARSEABLE
            except LLMError as exc:
                run.usage.add(None, exc.attempts, ok=False)
                run.failures += 1
                run.journal.record("fail", rid, attempts=exc.attempts)
                log.warning("request %s failed: %s", rid, exc)
                return FAILED
        run.usage.add(result, result.attempts, ok=True)
        run.journal.record("res", rid, attempts=result.attempts, tokens=_tokens(result))
        return value

    def _screen(self, run: _Run, rid: str, example: Example) -> None:
        """Input-side filters; a survivor becomes a candidate awaiting its vote."""
        max_chars = run.options.max_field_chars
        reason = field_problem(example.input, max_chars)
        if reason is None and repeats_itself(example.input):
            reason = "looped"
        if reason is None and copies_instruction(example.input, run.instructions):
            reason = "copies_instruction"
        if reason is None and (rule := run.invariants.input_violation(example.input)):
            reason = INVARIANT_PREFIX + rule
        if reason is None and run.options.dedup:
            reason = run.duplicates.check(example.input)
        if reason is None and run.meaning is not None and run.meaning.similar(example.input):
            reason = "same_meaning"
        if reason is not None:
            self._drop(run, rid, reason)
            if reason in ("exact_duplicate", "near_duplicate"):
                self._note_copy(run, example.input)
            return
        run.duplicates.add(example.input)
        if run.meaning is not None:
            run.meaning.add(example.input)
        run.pending[rid] = Candidate(rid, example.input, example.output)

    def _vote(self, run: _Run, candidate: Candidate) -> tuple[Example, float] | None:
        """The example the outputs that keep the invariants vote for, and its agreement.

        None (the candidate dropped) when no output keeps them or the winner fails a filter.
        """
        if candidate.output:
            return self._round_trip(run, candidate)
        votes = [vote for vote in (candidate.output, *candidate.samples) if vote]
        if not votes:
            self._drop(run, candidate.gen_id, "unparseable")  # no answer came back
            return None
        kept = self._valid_votes(run, candidate)
        if not kept:  # every vote broke a rule: the first one's names the drop
            rule = _output_rule(run, candidate.input, votes[0])
            self._drop(run, candidate.gen_id, INVARIANT_PREFIX + str(rule))
            return None
        output, share = majority_vote(kept, nested=run.invariants.output_in_input)
        reason = field_problem(output, run.options.max_field_chars)
        if reason is None and copies_input(candidate.input, output):
            reason = "copies_input"
        if reason is None and copies_instruction(output, (REPLY_RULE,)):
            reason = "copies_instruction"  # the request's own wording, echoed as the answer
        if reason is not None:
            self._drop(run, candidate.gen_id, reason)
            return None
        if choices := run.invariants.output_choices:
            output = labels.label_of(output, choices) or output  # the label as the set spells it
        return Example(candidate.input, output), share * len(kept) / len(votes)

    def _round_trip(self, run: _Run, candidate: Candidate) -> tuple[Example, float] | None:
        """A span-first candidate, its span as the output, if an answer gives the span back.

        Its agreement is the share of the answers that do; none that does drops it
        (``missed_span``: the question asks for something else, or the teacher cannot tell).
        """
        if not candidate.samples:
            self._drop(run, candidate.gen_id, "unparseable")  # no answer came back
            return None
        answers = self._valid_votes(run, candidate)
        agreeing = [answer for answer in answers if same_answer(answer, candidate.output)]
        if not agreeing:
            self._drop(run, candidate.gen_id, "missed_span")
            return None
        return Example(candidate.input, candidate.output), len(agreeing) / len(candidate.samples)

    def _accept(self, run: _Run, rid: str, example: Example, agreement: float) -> None:
        """Keep ``example`` unless the target, its label's quota or its output's cap is reached."""
        if len(run.accepted) >= run.options.num_examples:
            self._drop(run, rid, "surplus")
            return
        choices = run.invariants.output_choices
        if choices and run.outputs.count(example.output) >= labels.quota(
            run.options.num_examples, choices
        ):
            self._drop(run, rid, "over_quota")
            return
        if run.outputs.full(example.output, run.output_cap):
            self._drop(run, rid, "repeated_output")
            return
        run.journal.accept(rid, example, agreement)
        run.accepted.append((rid, example, agreement))
        run.outputs.add(example.output)

    async def _judge(
        self, run: _Run, candidate: Candidate, example: Example, limit: asyncio.Semaphore
    ) -> int | None:
        """The teacher's 1-5 grade of ``example`` (journalled), or None when it gave none."""
        if candidate.judge_score is not None:
            return candidate.judge_score  # graded before a restart
        rid = f"j{candidate.gen_id[1:]}.{candidate.next_judge}"
        candidate.next_judge += 1
        messages = judge_messages(teacher_instruction(run.task), run.task.demonstrations, example)

        def ask() -> Awaitable[tuple[Any, ChatResult]]:
            return self._llm.chat_json(
                messages,
                JUDGE_SCHEMA,
                name="grade",
                temperature=0.0,
                max_tokens=JUDGE_TOKENS,
                seed=request_seed(run.options.seed, rid),
                budget=run.budget,
            )

        score = score_of(await self._ask(run, rid, ask, limit))
        if score is not None:
            run.journal.record("judge", rid, score=score)
            run.judge_scores.append(score)
        return score

    @staticmethod
    def _note_copy(run: _Run, text: str) -> None:
        """Move a demonstration ``text`` copies behind the others once copied again."""
        moved = run.order.note_copy(text)
        if moved is not None:
            run.journal.record("move", f"d{moved}")
            log.info("demonstration %d copied again: shown last for new inputs", moved)

    @staticmethod
    def _drop(run: _Run, rid: str, reason: str) -> None:
        run.dropped[reason] += 1
        run.journal.record("drop", rid, reason=reason)

    def _progress(self, run: _Run, temperature: float) -> GenerationProgress:
        return GenerationProgress(
            accepted=len(run.accepted),
            requested=run.options.num_examples,
            dropped=drop_counts(run.dropped),
            requests=run.budget.requests,
            tokens=run.budget.tokens,
            temperature=temperature,
            rounds=run.rounds,
        )

    def _publish(
        self, key: str, run: _Run, report: GenerationReport, *, cache: bool
    ) -> GenerationResult:
        """Store the dataset; with ``cache``, as the answer to every later request like this."""
        folder = self._work_root / key / "dataset"
        rows = write_dataset(
            run.examples, folder, run.options.validation_fraction, run.options.seed
        )
        (folder / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
        ref = self._store.put_dir(folder, "dataset")
        if cache:
            self._store.remember(key, ref)
        log.info("generation finished", extra={"key": key, "rows": rows, "artifact": ref.uri})
        return GenerationResult(ref, rows, report)

    def _cached_result(self, ref: ArtifactRef) -> GenerationResult:
        folder = self._store.path(ref.sha256)
        saved = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        report = GenerationReport.from_json(
            {**saved, "cached": True, "usage": asdict(UsageCounters())}
        )
        return GenerationResult(ref, read_rows(folder), report)


def _shown(
    run: _Run, request_id: str, demonstrations: Sequence[Example], n_generated: int
) -> list[Example]:
    """The examples request ``request_id`` shows: ``demonstrations``, then a sample.

    The sample (``n_generated`` accepted examples) is drawn with a seed fixed by the request's id.
    """
    options = run.options
    return pick_examples(
        demonstrations,
        run.examples,
        random.Random(f"{options.seed}:{request_id}"),
        n_generated=n_generated,
        diverse=options.diverse_prompts,
    )


def _timed_out(since: float, limit_s: float) -> bool:
    """Whether ``limit_s`` seconds (0: no limit) have passed since ``since`` (monotonic)."""
    return limit_s > 0 and time.monotonic() - since >= limit_s


def unreadable_excerpt(text: str, head: int = 240, tail: int = 160) -> str:
    """The start and end of an answer that could not be read, for the journal."""
    if len(text) <= head + tail + 5:
        return text
    return f"{text[:head]} ... {text[-tail:]}"


def _tokens(result: ChatResult | None) -> int:
    return 0 if result is None else result.prompt_tokens + result.completion_tokens


def _duplicates(dropped: Counter[str]) -> int:
    """Candidates dropped as duplicates (exact, near or by meaning)."""
    return sum(dropped.get(reason, 0) for reason in DUPLICATE_REASONS)


def _candidates(run: _Run) -> int:
    """Candidates decided so far: accepted or dropped."""
    return len(run.accepted) + sum(run.dropped.values())


def _duplicate_share(run: _Run) -> float:
    """Share of the candidate inputs dropped as duplicates (exact, near or by meaning)."""
    candidates = _candidates(run)
    return round(_duplicates(run.dropped) / candidates, 4) if candidates else 0.0


def _label_counts(run: _Run) -> dict[str, int]:
    """Accepted examples per label of a closed set (empty without one)."""
    choices = run.invariants.output_choices
    return dict(labels.label_counts([e.output for e in run.examples], choices))


def drop_counts(dropped: Counter[str]) -> dict[str, int]:
    """Drops by reason (every rule of the invariants under "invariant")."""
    counts = {reason: dropped.get(reason, 0) for reason in DROP_REASONS}
    counts["invariant"] = sum(invariant_drops(dropped).values())
    return counts


def invariant_drops(dropped: Counter[str]) -> dict[str, int]:
    """Drops by invariant rule."""
    return {
        reason.removeprefix(INVARIANT_PREFIX): count
        for reason, count in sorted(dropped.items())
        if reason.startswith(INVARIANT_PREFIX)
    }


def _output_rule(run: _Run, input_text: str, output: str) -> str | None:
    """The first output rule ``output`` (the answer to ``input_text``) breaks, or None."""
    if (rule := run.invariants.output_violation(input_text, output)) is not None:
        return rule
    if run.key_kinds is not None and run.key_kinds.unlike(run.invariants.output_keys(output)):
        return "output_key_kinds"
    return None
