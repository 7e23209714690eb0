"""Evaluation: predict a split with the student or the teacher, score it, keep the worst examples.

Independent of gRPC: the service and the ``p2m evaluate`` command both call :class:`Evaluator`.
A result is stored in the artifact store (kind "evaluation") under a key over everything that
decides it, so the same evaluation asked for again is answered from the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2m.common.artifacts import ArtifactStore, sha256_file, sha256_tree
from p2m.common.budget import Budget
from p2m.common.errors import BudgetExhausted, FailedPrecondition, InvalidInput, NotFound
from p2m.common.llm import LLMClient, UsageCounters
from p2m.common.model_store import WEIGHT_SUFFIXES
from p2m.common.output_form import FREE
from p2m.common.ranges import Within, check_ranges
from p2m.common.settings import Settings
from p2m.common.splits import read_examples
from p2m.common.student import Decoding, Student
from p2m.common.teacher_prompt import PROMPT_VERSION, teacher_instruction
from p2m.common.text_scores import chrf_sentence
from p2m.common.types import Example, TaskSpec
from p2m.evaluator.metrics import (
    CHRF,
    DEFAULT_METRICS,
    BertScore,
    check_metrics,
    choose_bertscore_encoder,
    score,
    shipped_bertscore_encoder,
)
from p2m.evaluator.teacher import TeacherPredictor
from p2m.llamacpp.runtime import (
    AUTO,
    DEFAULT_PRECISION,
    LLAMA_CPP,
    UNSET,
    ServingRuntime,
    check_choice,
    resolve,
)
from p2m.llamacpp.student import LlamaCppStudent

log = logging.getLogger(__name__)

# Changing how results are produced changes this, so old stored results are not reused.
EVALUATOR_VERSION = 1
SPLITS = ("test", "validation", "train")
DEFAULT_SPLIT = "test"
DEFAULT_NUM_WORST = 5
DEFAULT_STUDENT_BATCH_SIZE = Decoding().batch_size
DEFAULT_TEACHER_MAX_NEW_TOKENS = 128
RESULT_KIND = "evaluation"

LLMSource = Callable[[], Awaitable[LLMClient]]


@dataclass(frozen=True)
class EvaluateOptions:
    """How to evaluate (see evaluator.proto; a zero means the documented default).

    Attributes:
        metrics: Metric names, in the order the report lists them; the first one ranks the
            worst examples.
        max_examples: Score only the first this many examples (0: all).
        max_new_tokens: Tokens generated per prediction (0: the student's own limit from its
            spec, or 128 for the teacher).
        num_beams: Beams of beam search (1: greedy); ignored for the teacher.
        batch_size: Examples per forward pass, or the teacher's requests in flight (0: 8 for a
            student, the LLM client's concurrency for the teacher).
        num_worst_examples: Lowest-scoring examples kept in the report.
        runtime: What decodes a student: "auto" (llama.cpp for a decoder-only student decoded
            greedily on the CPU, as the model server does; transformers otherwise), "llama.cpp"
            or "transformers"; unset (""): the serving default (``P2M_SERVING_RUNTIME``, auto),
            as the deployer's.
        precision: llama.cpp's weights ("f32": the same answers as transformers); unset (""):
            the serving default (``P2M_SERVING_PRECISION``, q8_0), so that the report scores
            what the model server serves; f32 where transformers decodes.
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    max_examples: int = 0
    max_new_tokens: int = 0
    num_beams: int = 1
    batch_size: int = 0
    num_worst_examples: int = DEFAULT_NUM_WORST
    runtime: str = UNSET
    precision: str = UNSET

    def validate(self) -> None:
        """Raise InvalidInput naming the first field out of range (paths as in the proto)."""
        if not self.metrics:
            raise InvalidInput("options.metrics", "must name at least one metric")
        check_metrics(self.metrics)
        check_ranges(
            [
                Within("options.max_examples", self.max_examples, 0, 100_000),
                Within("options.decoding.max_new_tokens", self.max_new_tokens, 0, 4096),
                Within("options.decoding.num_beams", self.num_beams, 1, 16),
                Within("options.decoding.batch_size", self.batch_size, 0, 1024),
                Within("options.num_worst_examples", self.num_worst_examples, 0, 100),
            ]
        )
        check_choice(self.runtime or AUTO, self.precision)
        check_greedy(self.runtime, self.num_beams)


def check_greedy(runtime: str, num_beams: int) -> None:
    """Refuse beams for llama.cpp, which decodes greedily (InvalidInput naming options.runtime)."""
    if runtime == LLAMA_CPP and num_beams != 1:
        raise InvalidInput("options.runtime", "llama.cpp decodes greedily: num_beams must be 1")


@dataclass(frozen=True)
class EvalData:
    """The examples to score and what names them.

    Attributes:
        examples: Input and reference output pairs, in order.
        key: sha256 (hex) naming the data: the dataset artifact and split, or the file's
            content and the fields read.
        source: Where the examples came from, for people.
    """

    examples: tuple[Example, ...]
    key: str
    source: str


@dataclass(frozen=True)
class StudentSubject:
    """A trained model folder (``p2m_student.json`` beside the weights) and its content hash."""

    folder: Path
    sha256: str

    @classmethod
    def from_store(cls, store: ArtifactStore, uri: str, field: str = "model.uri") -> StudentSubject:
        """The model artifact ``uri`` of ``store``.

        Raises:
            InvalidInput: Not an artifact URI, or a file rather than a folder.
            NotFound: No such artifact.
        """
        try:
            ref = store.ref(uri)
        except InvalidInput as exc:
            raise InvalidInput(field, exc.problem) from exc
        folder = store.path(ref.sha256)
        if not folder.is_dir():
            raise InvalidInput(field, f"artifact {ref.sha256} is a file, not a model folder")
        return cls(folder, ref.sha256)

    @classmethod
    def from_folder(cls, folder: Path) -> StudentSubject:
        """A model folder outside the store, named by its content hash.

        Raises:
            InvalidInput: Not a folder, or it holds links or special files.
        """
        if not folder.is_dir():
            raise InvalidInput("model", f"not a folder: {folder}")
        sha, _ = sha256_tree(folder)
        return cls(folder, sha)


@dataclass(frozen=True)
class TeacherSubject:
    """The teacher LLM.

    Attributes:
        model: Model name on the endpoint; empty means the configured one.
        max_requests: Most requests to spend, retries included (0: no limit of its own).
    """

    model: str = ""
    max_requests: int = 0

    def __post_init__(self) -> None:
        """Check the budget (named as in the request)."""
        check_ranges([Within("teacher.max_requests", self.max_requests, 0, 10_000_000)])


Subject = StudentSubject | TeacherSubject


@dataclass(frozen=True)
class ScoredExample:
    """One prediction with its scores."""

    input: str
    reference: str
    prediction: str
    scores: dict[str, float]


@dataclass(frozen=True)
class Latency:
    """Prediction time per example (a batch's time divided by its size), in milliseconds."""

    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    total_seconds: float = 0.0


@dataclass(frozen=True)
class EvaluationResult:
    """Scores and costs of one evaluation (mirrors evaluator.proto's EvaluateResponse).

    Attributes:
        metrics: Aggregate score by metric name (exact_match 0..1, chrf 0..100,
            bertscore_f1 about 0..1).
        num_examples: Examples scored (without those the teacher's budget left unsent).
        worst_examples: The lowest-scoring ones, lowest first.
        notes: How scores were computed (encoder, ChrF++ signature, decoding).
        latency: Prediction time per example.
        model_size_bytes: Bytes of the weight files (0 for the teacher).
        num_parameters: Parameters (0 for the teacher).
        usage: LLM requests and tokens this call spent (zero for a student or a stored result).
        cached: True when the result came from the artifact store.
    """

    metrics: dict[str, float]
    num_examples: int
    worst_examples: tuple[ScoredExample, ...]
    notes: dict[str, str]
    latency: Latency
    model_size_bytes: int = 0
    num_parameters: int = 0
    usage: UsageCounters = field(default_factory=UsageCounters)
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: ``{metrics, num_examples, latency, model_size_bytes, ...}``."""
        return {
            "metrics": dict(self.metrics),
            "num_examples": self.num_examples,
            "latency": asdict(self.latency),
            "model_size_bytes": self.model_size_bytes,
            "num_parameters": self.num_parameters,
            "notes": dict(self.notes),
            "worst_examples": [asdict(example) for example in self.worst_examples],
            "llm_usage": asdict(self.usage),
            "cached": self.cached,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluationResult:
        """Inverse of ``to_json``."""
        return cls(
            metrics={k: float(v) for k, v in data["metrics"].items()},
            num_examples=int(data["num_examples"]),
            worst_examples=tuple(ScoredExample(**e) for e in data["worst_examples"]),
            notes=dict(data["notes"]),
            latency=Latency(**data["latency"]),
            model_size_bytes=int(data["model_size_bytes"]),
            num_parameters=int(data["num_parameters"]),
            usage=UsageCounters(**data["llm_usage"]),
            cached=bool(data["cached"]),
        )


@dataclass(frozen=True)
class EvaluationProgress:
    """Examples predicted so far, of ``total``."""

    done: int
    total: int


ProgressCallback = Callable[[EvaluationProgress], None]


def read_split(store: ArtifactStore, dataset_uri: str, split: str = DEFAULT_SPLIT) -> EvalData:
    """The rows of ``<split>.jsonl`` in a dataset artifact (as the Retriever and Generator write).

    Raises:
        InvalidInput: An empty or malformed URI, an unknown split name, a file artifact, or a
            malformed row.
        NotFound: No such artifact, or it has no such split.
    """
    if not dataset_uri:
        raise InvalidInput("dataset.uri", "is empty")
    if split not in SPLITS:
        raise InvalidInput("split", f"must be one of {', '.join(SPLITS)} (empty: test)")
    try:
        ref = store.ref(dataset_uri)
    except InvalidInput as exc:
        raise InvalidInput("dataset.uri", exc.problem) from exc
    folder = store.path(ref.sha256)
    if not folder.is_dir():
        raise InvalidInput("dataset.uri", f"artifact {ref.sha256} is a file, not a dataset")
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise NotFound(f"dataset {ref.sha256} has no {split!r} split")
    examples = read_examples(path, "input", "output", "dataset")
    key = _sha({"dataset": ref.sha256, "split": split})
    return EvalData(examples, key, f"{ref.uri} ({split})")


def inline_data(examples: Sequence[Example], source: str) -> EvalData:
    """Examples given in a request, keyed by their content."""
    key = _sha({"examples": [[e.input, e.output] for e in examples]})
    return EvalData(tuple(examples), key, source)


def read_jsonl(path: Path, input_field: str = "input", output_field: str = "output") -> EvalData:
    """A person's JSONL file: one object per line with ``input_field`` and ``output_field``.

    Raises:
        InvalidInput: The file cannot be read, or a line is not an object with both fields
            (the line number is named).
    """
    try:
        digest = sha256_file(path)
    except FileNotFoundError:
        raise InvalidInput("test", "file not found") from None
    except IsADirectoryError:
        raise InvalidInput("test", "is a folder, not a JSONL file") from None
    except OSError as exc:
        raise InvalidInput("test", f"cannot read it: {exc.strerror}") from None
    examples = read_examples(path, input_field, output_field, "test")
    key = _sha({"file": digest, "input_field": input_field, "output_field": output_field})
    return EvalData(examples, key, str(path))


def model_size_bytes(folder: Path) -> int:
    """Bytes of the weight files (``*.safetensors``, ``*.bin``) under ``folder``."""
    return sum(
        path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES
    )


def latency_of(per_example_s: Sequence[float], total_s: float) -> Latency:
    """Mean, median and 95th percentile (linear interpolation) of per-example seconds, in ms."""
    if not per_example_s:
        return Latency(total_seconds=round(total_s, 6))
    ms = sorted(1000.0 * s for s in per_example_s)
    return Latency(
        mean_ms=round(sum(ms) / len(ms), 3),
        p50_ms=round(_percentile(ms, 0.50), 3),
        p95_ms=round(_percentile(ms, 0.95), 3),
        total_seconds=round(total_s, 6),
    )


def _percentile(ordered: Sequence[float], q: float) -> float:
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def worst_examples(
    examples: Sequence[Example],
    predictions: Sequence[str],
    per_example: Sequence[dict[str, float]],
    metrics: Sequence[str],
    n: int,
) -> tuple[ScoredExample, ...]:
    """The ``n`` lowest by the first metric; ties by sentence ChrF++, then by position."""
    first = metrics[0]

    def rank(i: int) -> tuple[float, float, int]:
        tie = per_example[i].get(CHRF)
        if tie is None:
            tie = chrf_sentence(predictions[i], examples[i].output)
        return per_example[i][first], tie, i

    order = sorted(range(len(examples)), key=rank)[:n]
    return tuple(
        ScoredExample(examples[i].input, examples[i].output, predictions[i], dict(per_example[i]))
        for i in order
    )


def evaluation_key(
    subject: Subject,
    data: EvalData,
    options: EvaluateOptions,
    task: TaskSpec | None,
    teacher_model: str,
    bertscore_model: str,
) -> str:
    """The sha256 naming an evaluation: same model, data, options (and prompt), same result."""
    payload: dict[str, Any] = {
        "version": EVALUATOR_VERSION,
        "data": data.key,
        "options": asdict(options),
        "bertscore_model": bertscore_model,
    }
    if isinstance(subject, StudentSubject):
        payload["model"] = subject.sha256
    else:
        task = task or TaskSpec("")
        payload["teacher"] = {
            "model": teacher_model,
            "max_requests": subject.max_requests,
            "instruction": teacher_instruction(task),
            "demonstrations": [[d.input, d.output] for d in task.demonstrations],
            "prompt": PROMPT_VERSION,
        }
    return _sha(payload)


def _sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _Predictions:
    examples: tuple[Example, ...]
    predictions: tuple[str, ...]
    latencies_s: tuple[float, ...]
    wall_s: float
    notes: dict[str, str]
    model_size_bytes: int = 0
    num_parameters: int = 0
    usage: UsageCounters = field(default_factory=UsageCounters)


class Evaluator:
    """Scores students and the teacher; stores every result in the artifact store."""

    @classmethod
    def from_settings(cls, settings: Settings, llm: LLMSource | None = None) -> Evaluator:
        """The evaluator ``settings`` describe: their store, teacher name and BERTScore encoder.

        BERTScore uses the shipped all-MiniLM-L6-v2 unless ``settings.bertscore_hub_model`` asks
        for XLM-R large (the paper's multilingual choice) and the hub may be used.
        """
        encoder = choose_bertscore_encoder(settings.bertscore_hub_model, settings.offline)
        return cls(
            ArtifactStore(settings.artifacts_dir),
            llm=llm,
            teacher_model=settings.teacher_model,
            bertscore=BertScore(encoder),
            gguf_cache=settings.cache_dir("gguf"),
            serving_runtime=settings.serving_runtime,
            serving_precision=settings.serving_precision,
        )

    def __init__(
        self,
        store: ArtifactStore,
        *,
        llm: LLMSource | None = None,
        teacher_model: str = "",
        bertscore: BertScore | None = None,
        device: str = "cpu",
        gguf_cache: Path | None = None,
        serving_runtime: str = AUTO,
        serving_precision: str = DEFAULT_PRECISION,
    ) -> None:
        """Evaluate into ``store``.

        Args:
            store: Where results are kept and found again.
            llm: Gives the LLM client the teacher is asked through (called only for the teacher).
            teacher_model: The configured teacher's name, for cache keys and notes.
            bertscore: The BERTScore scorer (default: the shipped all-MiniLM-L6-v2, loaded when
                first needed).
            device: Where students run ("cpu", "cuda").
            gguf_cache: Where students exported for llama.cpp are kept (default: a folder in
                the system's temp dir).
            serving_runtime: What decodes a student where options leave the runtime unset (as
                the deployer's setting of the same name).
            serving_precision: llama.cpp's weights where options leave the precision unset (as
                the deployer's setting of the same name).
        """
        self._store = store
        self._gguf_cache = gguf_cache or Path(tempfile.gettempdir()) / "p2m-gguf"
        self._llm = llm
        self._teacher_model = teacher_model
        self._bertscore = bertscore
        self._device = device
        self._serving_runtime = serving_runtime
        self._serving_precision = serving_precision

    @property
    def bertscore(self) -> BertScore:
        """The BERTScore scorer (created, not loaded, on first access)."""
        if self._bertscore is None:
            self._bertscore = BertScore(shipped_bertscore_encoder(), device=self._device)
        return self._bertscore

    async def evaluate(
        self,
        subject: Subject,
        data: EvalData,
        options: EvaluateOptions,
        task: TaskSpec | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> EvaluationResult:
        """Predict ``data`` with ``subject``, score, keep the worst examples; reuse a stored result.

        Args:
            subject: The student folder, or the teacher.
            data: The examples; the first ``options.max_examples`` are scored.
            options: Metrics, decoding and report size.
            task: The task's instruction and demonstrations (required for the teacher, whose
                prompt they make; a student carries its own instruction in its spec).
            on_progress: Called with examples predicted so far.

        Raises:
            InvalidInput: Bad options, or the teacher without an instruction.
            FailedPrecondition: No examples to score, or the folder is not a student.
            BudgetExhausted: The teacher's budget ran out before any example was answered.
            Unavailable: The teacher's endpoint failed.
        """
        options.validate()
        if isinstance(subject, TeacherSubject) and (task is None or not task.instruction.strip()):
            raise InvalidInput("task.instruction", "is empty; the teacher's prompt needs it")
        examples = data.examples[: options.max_examples or None]
        if not examples:
            raise FailedPrecondition(f"{data.source} has no examples to score")
        needs_bertscore = "bertscore_f1" in options.metrics
        bertscore_model = self.bertscore.encoder.name if needs_bertscore else ""
        teacher_model = ""
        if isinstance(subject, StudentSubject):
            options = dataclasses.replace(options, runtime=options.runtime or self._serving_runtime)
            decoder = self._decoder(subject, options)
            options = dataclasses.replace(options, precision=decoder.precision)  # in the key
        else:
            teacher_model = subject.model or self._teacher_model
        key = evaluation_key(subject, data, options, task, teacher_model, bertscore_model)
        stored = self._store.recall(key)
        if stored is not None:
            saved = json.loads(self._store.path(stored.sha256).read_text(encoding="utf-8"))
            result = EvaluationResult.from_json(saved)
            log.info("evaluation answered from the store", extra={"key": key})
            return dataclasses.replace(result, cached=True, usage=UsageCounters())

        def progress(done: int) -> None:
            if on_progress is not None:
                on_progress(EvaluationProgress(done, len(examples)))

        progress(0)
        if isinstance(subject, StudentSubject):
            predicted = await self._predict_student(subject, decoder, examples, options, progress)
        else:
            predicted = await self._predict_teacher(
                subject, teacher_model, task or TaskSpec(""), examples, options, progress
            )
        scores = await asyncio.to_thread(
            score,
            predicted.predictions,
            [e.output for e in predicted.examples],
            options.metrics,
            self.bertscore if needs_bertscore else None,
        )
        result = EvaluationResult(
            metrics=scores.aggregate,
            num_examples=len(predicted.examples),
            worst_examples=worst_examples(
                predicted.examples,
                predicted.predictions,
                scores.per_example,
                options.metrics,
                options.num_worst_examples,
            ),
            notes={**predicted.notes, **scores.notes},
            latency=latency_of(predicted.latencies_s, predicted.wall_s),
            model_size_bytes=predicted.model_size_bytes,
            num_parameters=predicted.num_parameters,
            usage=predicted.usage,
        )
        ref = self._store.put_bytes(
            json.dumps(result.to_json(), ensure_ascii=False, indent=1).encode(), RESULT_KIND
        )
        self._store.remember(key, ref)
        log.info(
            "evaluation finished",
            extra={"key": key, "examples": result.num_examples, "metrics": result.metrics},
        )
        return result

    def _decoder(self, subject: StudentSubject, options: EvaluateOptions) -> ServingRuntime:
        """What decodes ``subject`` under ``options``, as the model server would choose it."""
        check_greedy(options.runtime, options.num_beams)  # a runtime from P2M_SERVING_RUNTIME
        because = ""
        if options.num_beams != 1 or self._device != "cpu":
            because = "beam search, or a GPU to decode on"
        return resolve(
            subject.folder,
            options.runtime,
            options.precision,
            default_precision=self._serving_precision,
            transformers_because=because,
        )

    async def _predict_student(
        self,
        subject: StudentSubject,
        chosen: ServingRuntime,
        examples: tuple[Example, ...],
        options: EvaluateOptions,
        progress: Callable[[int], None],
    ) -> _Predictions:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no bars in a service's log or a CLI's stderr
        batch_size = options.batch_size or DEFAULT_STUDENT_BATCH_SIZE
        student: Student | LlamaCppStudent
        if chosen.runtime == LLAMA_CPP:
            student = await asyncio.to_thread(
                LlamaCppStudent,
                subject.folder,
                chosen.precision,
                self._gguf_cache,
                parallel=batch_size,
            )
        else:
            student = await asyncio.to_thread(Student, subject.folder, self._device)
        decoding = Decoding(
            max_new_tokens=options.max_new_tokens or student.spec.max_output_tokens,
            num_beams=options.num_beams,
            batch_size=batch_size,
        )
        predictions: list[str] = []
        latencies: list[float] = []
        started = time.monotonic()
        try:
            for start in range(0, len(examples), decoding.batch_size):
                batch = [e.input for e in examples[start : start + decoding.batch_size]]
                batch_started = time.monotonic()
                predictions.extend(await asyncio.to_thread(student.predict, batch, decoding))
                latencies.extend([(time.monotonic() - batch_started) / len(batch)] * len(batch))
                progress(len(predictions))
        finally:
            if isinstance(student, LlamaCppStudent):
                student.close()
        wall_s = time.monotonic() - started
        notes = {
            "subject": "student",
            "architecture": student.spec.architecture,
            "decoding": _decoding_note(decoding),
            "device": self._device,
            "runtime": chosen.label,
        }
        if chosen.reason and options.runtime == AUTO:
            notes["runtime_reason"] = chosen.reason
        if student.spec.base_model:
            notes["base_model"] = student.spec.base_model
        if student.spec.output_form != FREE:
            notes["answers_held_to"] = student.spec.form.describe()
        return _Predictions(
            examples=examples,
            predictions=tuple(predictions),
            latencies_s=tuple(latencies),
            wall_s=wall_s,
            notes=notes,
            model_size_bytes=model_size_bytes(subject.folder),
            num_parameters=student.num_parameters,
        )

    async def _predict_teacher(
        self,
        subject: TeacherSubject,
        teacher_model: str,
        task: TaskSpec,
        examples: tuple[Example, ...],
        options: EvaluateOptions,
        progress: Callable[[int], None],
    ) -> _Predictions:
        if self._llm is None:
            raise FailedPrecondition("this evaluator has no LLM endpoint for the teacher")
        shared = await self._llm()
        own = None
        if subject.model and subject.model != shared.config.model:
            own = LLMClient(dataclasses.replace(shared.config, model=subject.model))
        llm = own or shared
        max_new_tokens = options.max_new_tokens or DEFAULT_TEACHER_MAX_NEW_TOKENS
        predictor = TeacherPredictor(
            llm,
            task,
            max_new_tokens=max_new_tokens,
            concurrency=options.batch_size or llm.config.max_concurrency,
            budget=Budget(max_requests=subject.max_requests),
        )
        try:
            answers = await predictor.predict([e.input for e in examples], progress)
        finally:
            if own is not None:
                await own.aclose()
        answered = [i for i, p in enumerate(answers.predictions) if p is not None]
        if not answered:
            raise BudgetExhausted(
                f"the teacher's request budget ({subject.max_requests}) ran out before any "
                "example was answered"
            )
        notes = {
            "subject": "teacher",
            "teacher_model": teacher_model,
            "decoding": f"temperature 0, max_new_tokens {max_new_tokens}",
            "few_shot_demonstrations": str(len(task.demonstrations)),
        }
        if len(answered) < len(examples):
            notes["unscored_examples"] = str(len(examples) - len(answered))
        return _Predictions(
            examples=tuple(examples[i] for i in answered),
            predictions=tuple(answers.predictions[i] or "" for i in answered),
            latencies_s=tuple(  # none for an answer the endpoint could not read
                s for i in answered if (s := answers.latencies_s[i]) is not None
            ),
            wall_s=answers.wall_s,
            notes=notes,
            usage=answers.usage,
        )


def _decoding_note(decoding: Decoding) -> str:
    search = "greedy" if decoding.num_beams == 1 else f"beam search ({decoding.num_beams} beams)"
    return f"{search}, max_new_tokens {decoding.max_new_tokens}, batch_size {decoding.batch_size}"
