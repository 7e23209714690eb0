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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.budget import Budget
from p2m.common.errors import BudgetExhausted, LLMError, LLMOutputError, Unavailable
from p2m.common.llm import ChatResult, LLMClient, UsageCounters
from p2m.common.splits import read_rows
from p2m.common.types import Example, TaskSpec
from p2m.generator.dataset import REPORT_FILE, write_dataset
from p2m.generator.filters import DuplicateIndex, copies_input, field_problem, majority_vote
from p2m.generator.journal import Candidate, Journal
from p2m.generator.options import GenerateOptions, generation_key
from p2m.generator.prompts import (
    EXAMPLE_SCHEMA,
    OUTPUT_SCHEMA,
    answer_messages,
    new_example_messages,
    pick_examples,
)

log = logging.getLogger(__name__)

DROP_REASONS = (
    "exact_duplicate",
    "near_duplicate",
    "empty",
    "too_long",
    "copies_input",
    "unparseable",
)
NO_PROGRESS_ROUNDS = 4
# Each round in a row without a new example raises the temperature by this share of its span.
STALL_STEP = 0.25
# Why a request gave no value.
UNPARSEABLE, FAILED, UNSENT = "unparseable", "failed", "unsent"


@dataclass(frozen=True)
class GenerationReport:
    """What a generation did and spent (mirrors generator.proto's GenerationReport)."""

    requested: int
    accepted: int
    dropped: dict[str, int]
    self_consistency_agreement: float
    usage: UsageCounters
    resumed_from: int
    cached: bool
    stop_reason: str
    rounds: int
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationReport:
        """Inverse of ``to_json``."""
        return cls(**{**data, "usage": UsageCounters(**data["usage"])})


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


@dataclass
class _Run:
    """The mutable state of one generate call."""

    task: TaskSpec
    options: GenerateOptions
    journal: Journal
    budget: Budget
    duplicates: DuplicateIndex
    accepted: list[tuple[str, Example, float]]
    dropped: Counter[str]
    pending: dict[str, Candidate]
    next_gen: int
    rounds: int
    usage: UsageCounters = field(default_factory=UsageCounters)
    budget_spent: bool = False
    failures: int = 0

    @property
    def examples(self) -> list[Example]:
        return [example for _, example, _ in self.accepted]


class DatasetGenerator:
    """Writes datasets with the teacher LLM, one work folder per generation key."""

    def __init__(
        self, llm: LLMClient, store: ArtifactStore, work_root: Path, model_name: str
    ) -> None:
        """Use ``llm`` (named ``model_name`` in cache keys), ``store`` and ``work_root``."""
        self._llm = llm
        self._store = store
        self._work_root = work_root
        self._model_name = model_name

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
        run = self._resume(task, options, key)
        resumed_from = len(run.accepted)
        stop_reason = "target_reached"
        stalled = 0
        try:
            while len(run.accepted) < options.num_examples:
                before = len(run.accepted)
                progress = before / options.num_examples + stalled * STALL_STEP
                temperature = annealed_temperature(options, progress)
                await self._round(run, temperature)
                run.rounds += 1
                run.journal.record("round", f"r{run.rounds}")
                if on_progress is not None:
                    on_progress(self._progress(run, temperature))
                if len(run.accepted) >= options.num_examples:
                    break
                if run.budget_spent:
                    stop_reason = "budget_exhausted"
                    break
                stalled = stalled + 1 if len(run.accepted) == before else 0
                if stalled >= NO_PROGRESS_ROUNDS:
                    stop_reason = "no_progress"
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
            dropped={reason: run.dropped.get(reason, 0) for reason in DROP_REASONS},
            self_consistency_agreement=(
                sum(agreements) / len(agreements) if options.self_consistency else 0.0
            ),
            usage=run.usage,
            resumed_from=resumed_from,
            cached=False,
            stop_reason=stop_reason,
            rounds=run.rounds,
            elapsed_s=round(time.monotonic() - started, 3),
        )
        return self._publish(key, run, report)

    def _resume(self, task: TaskSpec, options: GenerateOptions, key: str) -> _Run:
        journal = Journal(self._work_root / key)
        state = journal.replay()
        budget = Budget(options.max_requests, options.max_tokens)
        budget.requests, budget.tokens = state.requests, state.tokens
        duplicates = DuplicateIndex(options.dedup_similarity_threshold)
        for demonstration in task.demonstrations:  # a copy of a demonstration adds nothing
            duplicates.add(demonstration.input)
        for _, example, _ in state.accepted:
            duplicates.add(example.input)
        for candidate in state.pending.values():
            duplicates.add(candidate.input)
        if state.accepted or state.pending:
            log.info(
                "resuming generation",
                extra={"key": key, "accepted": len(state.accepted), "pending": len(state.pending)},
            )
        return _Run(
            task=task,
            options=options,
            journal=journal,
            budget=budget,
            duplicates=duplicates,
            accepted=state.accepted,
            dropped=state.dropped,
            pending=state.pending,
            next_gen=state.next_gen,
            rounds=state.rounds,
        )

    async def _round(self, run: _Run, temperature: float) -> None:
        options = run.options
        missing = options.num_examples - len(run.accepted) - len(run.pending)
        done = run.next_gen
        yield_rate = len(run.accepted) / done if done >= 4 else 1.0
        batch = min(options.batch_size, max(0, math.ceil(missing / max(yield_rate, 0.25))))
        gen_ids = [f"g{run.next_gen + k}" for k in range(batch)]
        run.next_gen += batch
        limit = asyncio.Semaphore(options.max_concurrency)
        answers = await asyncio.gather(
            *(self._new_example(run, rid, temperature, limit) for rid in gen_ids)
        )
        for rid, answer in zip(gen_ids, answers, strict=True):
            if isinstance(answer, Example):
                self._screen(run, rid, answer)
        await asyncio.gather(
            *(self._samples(run, c, temperature, limit) for c in list(run.pending.values()))
        )
        for rid in sorted(run.pending, key=lambda r: int(r[1:])):
            self._decide(run, run.pending[rid])
        run.pending.clear()
        if gen_ids and all(answer == FAILED for answer in answers):
            raise Unavailable(
                f"every request of the round failed ({len(gen_ids)} requests); "
                f"{len(run.accepted)} examples are kept and a re-run resumes from them"
            )

    async def _new_example(
        self, run: _Run, rid: str, temperature: float, limit: asyncio.Semaphore
    ) -> Example | str:
        """A new example, or why there is none (FAILED, UNSENT or "unparseable")."""
        messages = new_example_messages(run.task.instruction, _shown(run, rid))
        value = await self._ask(run, rid, messages, EXAMPLE_SCHEMA, temperature, limit)
        if isinstance(value, str):
            if value == UNPARSEABLE:
                self._drop(run, rid, UNPARSEABLE)
            return value
        example = Example(str(value["input"]).strip(), str(value["output"]).strip())
        run.journal.record("gen", rid, input=example.input, output=example.output)
        return example

    async def _samples(
        self, run: _Run, candidate: Candidate, temperature: float, limit: asyncio.Semaphore
    ) -> None:
        wanted = run.options.samples_per_input - 1 - len(candidate.samples)
        ids = []
        for _ in range(max(0, wanted)):
            ids.append(f"s{candidate.gen_id[1:]}.{candidate.next_sample}")
            candidate.next_sample += 1

        async def one(sid: str) -> None:
            messages = answer_messages(run.task.instruction, _shown(run, sid), candidate.input)
            value = await self._ask(run, sid, messages, OUTPUT_SCHEMA, temperature, limit)
            if isinstance(value, dict):
                output = str(value["output"]).strip()
                run.journal.record("sc", sid, output=output)
                candidate.samples.append(output)

        await asyncio.gather(*(one(sid) for sid in ids))

    async def _ask(
        self,
        run: _Run,
        rid: str,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        temperature: float,
        limit: asyncio.Semaphore,
    ) -> dict[str, Any] | str:
        """One LLM call: the parsed value, or UNPARSEABLE, FAILED or UNSENT (out of budget)."""
        if run.budget_spent:
            return UNSENT
        async with limit:
            if run.budget_spent:
                return UNSENT
            run.journal.record("req", rid)
            try:
                value, result = await self._llm.chat_json(
                    messages,
                    schema,
                    name="example",
                    temperature=temperature,
                    max_tokens=run.options.max_new_tokens,
                    seed=request_seed(run.options.seed, rid),
                    budget=run.budget,
                )
            except BudgetExhausted:
                run.budget_spent = True
                run.journal.record("unsent", rid)
                return UNSENT
            except LLMOutputError as exc:
                answered = exc.result if isinstance(exc.result, ChatResult) else None
                attempts = answered.attempts if answered is not None else 1
                run.usage.add(answered, attempts, ok=True)
                run.journal.record("bad", rid, attempts=attempts, tokens=_tokens(answered))
                return UNPARSEABLE
            except LLMError as exc:
                run.usage.add(None, exc.attempts, ok=False)
                run.failures += 1
                run.journal.record("fail", rid, attempts=exc.attempts)
                log.warning("request %s failed: %s", rid, exc)
                return FAILED
        run.usage.add(result, result.attempts, ok=True)
        run.journal.record("res", rid, attempts=result.attempts, tokens=_tokens(result))
        return dict(value)

    def _screen(self, run: _Run, rid: str, example: Example) -> None:
        """Input-side filters; a survivor becomes a candidate awaiting its vote."""
        max_chars = run.options.max_field_chars
        reason = field_problem(example.input, max_chars) or field_problem(example.output, max_chars)
        if reason is None and run.options.dedup:
            reason = run.duplicates.check(example.input)
        if reason is not None:
            self._drop(run, rid, reason)
            return
        run.duplicates.add(example.input)
        run.pending[rid] = Candidate(rid, example.input, example.output)

    def _decide(self, run: _Run, candidate: Candidate) -> None:
        """Vote on the outputs, apply the output filters, accept or drop."""
        output, agreement = majority_vote([candidate.output, *candidate.samples])
        reason = field_problem(output, run.options.max_field_chars)
        if reason is None and copies_input(candidate.input, output):
            reason = "copies_input"
        if reason is not None:
            self._drop(run, candidate.gen_id, reason)
            return
        if len(run.accepted) >= run.options.num_examples:
            self._drop(run, candidate.gen_id, "surplus")
            return
        example = Example(candidate.input, output)
        run.journal.accept(candidate.gen_id, example, agreement)
        run.accepted.append((candidate.gen_id, example, agreement))

    @staticmethod
    def _drop(run: _Run, rid: str, reason: str) -> None:
        run.dropped[reason] += 1
        run.journal.record("drop", rid, reason=reason)

    def _progress(self, run: _Run, temperature: float) -> GenerationProgress:
        return GenerationProgress(
            accepted=len(run.accepted),
            requested=run.options.num_examples,
            dropped={reason: run.dropped.get(reason, 0) for reason in DROP_REASONS},
            requests=run.budget.requests,
            tokens=run.budget.tokens,
            temperature=temperature,
            rounds=run.rounds,
        )

    def _publish(self, key: str, run: _Run, report: GenerationReport) -> GenerationResult:
        folder = self._work_root / key / "dataset"
        rows = write_dataset(
            run.examples, folder, run.options.validation_fraction, run.options.seed
        )
        (folder / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
        ref = self._store.put_dir(folder, "dataset")
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


def _shown(run: _Run, request_id: str) -> list[Example]:
    """The examples request ``request_id`` shows, sampled with a seed fixed by its id."""
    options = run.options
    return pick_examples(
        run.task.demonstrations,
        run.examples,
        random.Random(f"{options.seed}:{request_id}"),
        n_demos=options.few_shot_demonstrations,
        n_generated=options.few_shot_generated,
        diverse=options.diverse_prompts,
    )


def _tokens(result: ChatResult | None) -> int:
    return 0 if result is None else result.prompt_tokens + result.completion_tokens
