"""Settings of one generation, validated, and the key that names its result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from p2m.common.errors import InvalidInput
from p2m.common.ranges import Within, check_ranges
from p2m.common.teacher_prompt import teacher_instruction
from p2m.common.types import TaskSpec
from p2m.generator.grounded import InputLayout, input_layout
from p2m.generator.invariants import Invariants, infer
from p2m.generator.judge import DEFAULT_THRESHOLD as DEFAULT_JUDGE_THRESHOLD
from p2m.generator.judge import MAX_SCORE, MIN_SCORE
from p2m.generator.key_kinds import MIN_KEYS
from p2m.generator.meaning import DEFAULT_THRESHOLD, Encoder
from p2m.generator.output_share import DEFAULT_SHARE as DEFAULT_OUTPUT_SHARE

# Changing how results are produced changes this, so old cache entries are not reused.
GENERATOR_VERSION = 20
# Answers voted on per input where self-consistency votes (``samples_per_input``).
DEFAULT_SAMPLES = 3
# Where every output is a span of its input and the request leaves the answer temperature
# unset, this many answers at this temperature are voted on (``answer_sampling``).
SPAN_VOTE_SAMPLES = 5
SPAN_VOTE_TEMPERATURE = 1.0


@dataclass(frozen=True)
class GenerateOptions:
    """How to generate. See generator.proto for each field's meaning."""

    num_examples: int = 100
    batch_size: int = 16
    max_concurrency: int = 4
    temperature_start: float = 0.3
    temperature_end: float = 1.4
    self_consistency_samples: int = 0  # 0: by the task (``answer_sampling``)
    few_shot_demonstrations: int = 8
    input_demonstrations: int = 3
    input_frequency_penalty: float = 0.5
    few_shot_generated: int = 3
    answer_generated_examples: int = 0
    answer_temperature: float | None = None  # None: by the task (``answer_sampling``)
    max_requests: int = 0
    max_tokens: int = 0
    seed: int = 0
    dedup_similarity_threshold: float = 0.8
    dedup_word_similarity_threshold: float = 0.5
    meaning_dedup_threshold: float = DEFAULT_THRESHOLD
    max_field_chars: int = 2000
    validation_fraction: float = 0.1
    max_new_tokens: int = 0
    diverse_prompts: bool = True
    annealing: bool = True
    self_consistency: bool = True
    dedup: bool = True
    check_invariants: bool = True
    invariants: Invariants | None = None
    judge: bool = False
    judge_threshold: int = DEFAULT_JUDGE_THRESHOLD
    max_output_share: float = DEFAULT_OUTPUT_SHARE
    stall_timeout_s: float = 900.0
    span_first: bool = False
    passage_first: bool = False
    key_kinds: bool = False  # learn ``output_key_kinds`` (off: it cost Temporal's student)

    def validate(self) -> None:
        """Raise InvalidInput naming the first field out of range (paths as in the proto)."""
        check_ranges(
            Within(f"options.{name}", _or_zero(getattr(self, name)), low, high, above)
            for name, low, high, above in (
                ("num_examples", 1, 100_000, False),
                ("batch_size", 1, 1000, False),
                ("max_concurrency", 1, 256, False),
                ("temperature_start", 0.0, 2.0, False),
                ("temperature_end", self.temperature_start, 2.0, False),
                ("self_consistency_samples", 0, 16, False),
                ("few_shot_demonstrations", 0, 64, False),
                ("input_demonstrations", 0, 64, False),
                ("input_frequency_penalty", 0.0, 2.0, False),
                ("few_shot_generated", 0, 64, False),
                ("answer_generated_examples", 0, 64, False),
                ("answer_temperature", 0.0, 2.0, False),
                ("max_requests", 0, 2**63 - 1, False),
                ("max_tokens", 0, 2**63 - 1, False),
                ("dedup_similarity_threshold", 0.0, 1.0, True),
                ("dedup_word_similarity_threshold", 0.0, 1.0, True),
                ("meaning_dedup_threshold", 0.0, 1.0, True),
                ("judge_threshold", MIN_SCORE, MAX_SCORE, False),
                ("max_output_share", 0.0, 1.0, False),
                ("max_field_chars", 1, 1_000_000, False),
                ("validation_fraction", 0.0, 0.5, False),
                ("stall_timeout_s", 0.0, 86_400.0, False),
            )
        )
        tokens = self.max_new_tokens
        if tokens != 0 and not 16 <= tokens <= 8192:
            rule = "must be 0 (follow the demonstrations) or within 16..8192"
            raise InvalidInput("options.max_new_tokens", f"{rule}, got {tokens}")
        if self.invariants is not None:
            self.invariants.validate("options.invariants")
        if self.span_first and self.passage_first:
            raise InvalidInput("options.passage_first", "cannot be set with span_first")

    @property
    def samples_per_input(self) -> int:
        """Outputs voted on per input (1 when self-consistency is off or answers are greedy)."""
        voting = self.self_consistency and bool(self.answer_temperature)
        return (self.self_consistency_samples or DEFAULT_SAMPLES) if voting else 1


def _or_zero(value: float | None) -> float:
    """An unset (None) setting is checked as 0."""
    return 0.0 if value is None else value


def answer_sampling(options: GenerateOptions, invariants: Invariants) -> GenerateOptions:
    """``options`` with the answer temperature the request left unset settled for the task.

    Greedy (one answer per input), except where every output is a span of its input
    (``invariants.output_in_input``) and self-consistency is on: there ``SPAN_VOTE_SAMPLES``
    answers at ``SPAN_VOTE_TEMPERATURE`` are voted on, nested answers counted together
    (``filters.majority_vote``). SQuAD through the pipeline (80 examples, SmolLM2, 100 dev
    rows), greedy against voted at three seeds: dev Exact Match 14.0 / 25.0, 22.0 / 24.0 and
    23.0 / 23.0 (mean 19.7 / 24.0), in two to three times the requests.
    """
    if options.answer_temperature is not None:
        return options
    if options.self_consistency and invariants.output_in_input:
        samples = options.self_consistency_samples or SPAN_VOTE_SAMPLES
        return replace(
            options, answer_temperature=SPAN_VOTE_TEMPERATURE, self_consistency_samples=samples
        )
    return replace(options, answer_temperature=0.0)


# Fields that never change which examples come out for a given seed: speed, and when a stalled
# run gives up (a stalled result is not cached, so the same request again resumes it).
_SPEED_ONLY = ("max_concurrency", "stall_timeout_s")


def applied_invariants(
    task: TaskSpec, options: GenerateOptions, encoder: Encoder | None = None
) -> Invariants:
    """The rules a generation holds examples to: the options' own, else the inferred ones.

    Rules by meaning (``output_key_kinds``) are inferred only with ``options.key_kinds`` and an
    ``encoder``.
    """
    if not options.check_invariants:
        return Invariants()
    if options.invariants is not None:
        return options.invariants
    return infer(task, encoder if options.key_kinds else None)


def span_first_layout(task: TaskSpec, options: GenerateOptions) -> InputLayout | None:
    """The layout span-first (or passage-first) inputs are written in, or None: not applied."""
    if not (options.span_first or options.passage_first):
        return None
    return input_layout(task.demonstrations, applied_invariants(task, options))


def generation_key(task: TaskSpec, options: GenerateOptions, model: str) -> str:
    """The sha256 naming this generation: same task, options, seed and model, same result."""
    # In the key only where they apply (below).
    own_key = ("span_first", "passage_first", "key_kinds")
    settings = {k: v for k, v in asdict(options).items() if k not in (*_SPEED_ONLY, *own_key)}
    payload: dict[str, object] = {
        "version": GENERATOR_VERSION,
        "instruction": teacher_instruction(task),
        "demonstrations": [[d.input, d.output] for d in task.demonstrations],
        "options": settings,
        "model": model,
    }
    if span_first_layout(task, options) is not None:  # other tasks keep their earlier keys
        payload["passage_first" if options.passage_first else "span_first"] = True
    rules = applied_invariants(task, options)
    if not rules.item_rules.empty:  # likewise
        payload["output_items"] = True
        learned = options.invariants is None  # rules given as they are ignore key_kinds
        keys = rules.demonstration_keys(task.demonstrations)
        if learned and options.key_kinds and len(keys) >= MIN_KEYS:
            payload["key_kinds"] = True  # held where the shipped encoder is installed
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
