"""The KServe model that serves a student: v1 and v2 (REST and gRPC) inference, micro-batched.

v1: ``POST /v1/models/<name>:predict`` with ``{"instances": ["text", {"input": "text"}, ...]}``
answers ``{"predictions": ["output", ...]}``.
v2 (Open Inference Protocol, REST and gRPC): one BYTES input tensor named "input" (or "text")
of shape [n] answers one BYTES output tensor "output" of shape [n].

Concurrent requests are gathered by a ``MicroBatcher`` into one ``Student.predict`` call that
runs in a worker thread, so the event loop keeps accepting requests while the model works. The
batcher's counters are exported on ``GET /metrics`` (``p2m_batches_total``,
``p2m_batch_requests_total``, ``p2m_batch_inputs_total``, labelled by model name).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Info

from p2m.common.student import Decoding, Student
from p2m.llamacpp.runtime import LLAMA_CPP, TRANSFORMERS, ServingRuntime
from p2m.llamacpp.student import LlamaCppStudent

log = logging.getLogger(__name__)

MAX_INSTANCES = 1_024
MAX_INPUT_CHARS = 100_000
V2_INPUT_NAMES = ("input", "text")
V2_OUTPUT_NAME = "output"

# Prometheus metrics live in the process-wide registry that KServe's /metrics serves; they are
# labelled by model name, so one definition serves every model of the process.
BATCHES = Counter("p2m_batches", "Batches the micro-batcher ran.", ["model_name"])
BATCH_REQUESTS = Counter("p2m_batch_requests", "Requests answered in batches.", ["model_name"])
BATCH_INPUTS = Counter("p2m_batch_inputs", "Inputs predicted in batches.", ["model_name"])
RUNTIME = Info("p2m_model_runtime", "Runtime and precision serving the model.", ["model_name"])
# Most llama.cpp decoding slots (concurrent sequences) a server opens.
MAX_LLAMA_CPP_SLOTS = 64


@dataclass(frozen=True)
class Batching:
    """Server-side batching of requests.

    Attributes:
        max_batch_size: Most requests answered in one batch; 0 or 1 turns batching off.
        max_latency_s: Longest the first request of a batch waits for others to join.
    """

    max_batch_size: int = 0
    max_latency_s: float = 0.0

    @property
    def enabled(self) -> bool:
        """True when more than one request may share a batch."""
        return self.max_batch_size > 1


@dataclass
class BatchStats:
    """Running totals of a ``MicroBatcher``."""

    batches: int = 0
    requests: int = 0
    inputs: int = 0
    largest_batch: int = 0


@dataclass
class _Pending:
    inputs: list[str]
    future: asyncio.Future[list[str]] = field(repr=False)


class MicroBatcher:
    """Gathers concurrent requests into calls of a blocking ``predict`` run in threads.

    A batch starts with the first waiting request and takes others until it holds
    ``max_batch_size`` requests or ``max_latency_s`` has passed since it started; then their
    inputs go to ``predict`` in one call and the outputs are split back in order. At most
    ``in_flight`` batches run at once: 1 for a model that is not shared between threads
    (transformers), more for a runtime that decodes concurrent calls together (llama.cpp's
    slots). With batching off every request is a batch of one, still run off the event loop.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], list[str]],
        batching: Batching,
        on_batch: Callable[[int, int], None] | None = None,
        in_flight: int = 1,
    ) -> None:
        """Batch calls to ``predict``; ``on_batch(requests, inputs)`` is told of every batch."""
        self._predict = predict
        self._max_size = max(1, batching.max_batch_size)
        self._max_latency_s = batching.max_latency_s if batching.enabled else 0.0
        self._on_batch = on_batch
        self._in_flight = max(1, in_flight)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.stats = BatchStats()

    async def submit(self, inputs: Sequence[str]) -> list[str]:
        """Predict ``inputs`` (in order), sharing a batch with concurrent callers."""
        if not inputs:
            return []
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue), name="micro-batcher")
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(list(inputs), future))
        return await future

    async def close(self) -> None:
        """Stop the worker; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._running):
            task.cancel()
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self._in_flight)
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self._max_latency_s
            while len(batch) < self._max_size:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            await slots.acquire()
            task = asyncio.create_task(self._answer([p for p in batch if not p.future.cancelled()]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _answer(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        inputs = [text for pending in batch for text in pending.inputs]
        try:
            outputs = await asyncio.to_thread(self._predict, inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"predict returned {len(outputs)} outputs for {len(inputs)}")
        except Exception as exc:  # every caller of the batch gets the error
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self._count(len(batch), len(inputs))
        start = 0
        for pending in batch:
            end = start + len(pending.inputs)
            if not pending.future.done():
                pending.future.set_result(outputs[start:end])
            start = end

    def _count(self, requests: int, inputs: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.requests += requests
        stats.inputs += inputs
        stats.largest_batch = max(stats.largest_batch, requests)
        log.debug("batch", extra={"batch_requests": requests, "batch_inputs": inputs})
        if self._on_batch is not None:
            try:
                self._on_batch(requests, inputs)
            except Exception:  # counting must never stop the batcher
                log.exception("batch callback failed")


def v1_inputs(payload: Any) -> list[str]:
    """The texts of a v1 body ``{"instances": [str | {"input": str}, ...]}``.

    Raises:
        InvalidInput: The body has another shape (HTTP 400), saying what was expected.
    """
    if isinstance(payload, bytes | str):  # a body sent without a JSON content type
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise InvalidInput(f'expected a JSON object {{"instances": [...]}}: {exc}') from exc
    if not isinstance(payload, dict):
        raise InvalidInput('expected a JSON object {"instances": [...]}')
    instances = payload.get("instances")
    if instances is None:
        raise InvalidInput('missing "instances": expected {"instances": ["text", ...]}')
    if not isinstance(instances, list):
        raise InvalidInput('"instances" must be a list of strings or {"input": string} objects')
    if len(instances) > MAX_INSTANCES:
        raise InvalidInput(f'"instances" holds {len(instances)} items; at most {MAX_INSTANCES}')
    texts = []
    for index, instance in enumerate(instances):
        if isinstance(instance, dict):
            text = instance.get("input")
            if not isinstance(text, str):
                raise InvalidInput(f'instances[{index}]: an object needs a string "input"')
        elif isinstance(instance, str):
            text = instance
        else:
            kind = type(instance).__name__
            raise InvalidInput(
                f'instances[{index}]: expected a string or {{"input": string}}, got {kind}'
            )
        texts.append(_check_text(text, f"instances[{index}]"))
    return texts


def v2_inputs(request: InferRequest) -> list[str]:
    """The texts of a v2 request: a BYTES tensor "input" (or "text") of shape [n].

    Raises:
        InvalidInput: No such tensor, another datatype or shape, or bytes that are not UTF-8.
    """
    names = [tensor.name for tensor in request.inputs]
    tensor = next((t for t in request.inputs if t.name in V2_INPUT_NAMES), None)
    if tensor is None:
        raise InvalidInput(f'expected a BYTES input tensor named "input" or "text"; got {names}')
    if tensor.datatype != "BYTES":
        raise InvalidInput(f'input "{tensor.name}": datatype must be BYTES, got {tensor.datatype}')
    shape = list(tensor.shape)
    if len(shape) != 1:
        raise InvalidInput(f'input "{tensor.name}": shape must be [n], got {shape}')
    if shape[0] > MAX_INSTANCES:
        raise InvalidInput(f'input "{tensor.name}": at most {MAX_INSTANCES} items')
    try:
        values = tensor.as_numpy().reshape(-1).tolist()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f'input "{tensor.name}": data does not match shape {shape}') from exc
    texts = []
    for index, value in enumerate(values):
        where = f'input "{tensor.name}"[{index}]'
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{where}: not UTF-8 text") from exc
        if not isinstance(value, str):
            raise InvalidInput(f"{where}: expected a string, got {type(value).__name__}")
        texts.append(_check_text(value, where))
    return texts


def v2_response(request: InferRequest, model_name: str, outputs: list[str]) -> InferResponse:
    """A v2 response with the BYTES tensor "output" of shape [n]."""
    tensor = InferOutput(
        name=V2_OUTPUT_NAME,
        shape=[len(outputs)],
        datatype="BYTES",
        data=list(outputs),  # a list: gRPC answers in bytes_contents, unless sent raw
    )
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=[tensor],
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )


def _check_text(text: str, where: str) -> str:
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidInput(f"{where}: at most {MAX_INPUT_CHARS} characters, got {len(text)}")
    return text


class StudentModel(Model):
    """A student model folder served by KServe; ``load()`` reads it, then ``ready`` is True.

    ``runtime`` says what decodes it: transformers (the default here; on the GPU when one is
    visible) or llama.cpp from a GGUF export written to ``cache_dir`` (default: a folder under
    the system's temp dir; see ``p2m.llamacpp.runtime``).
    """

    def __init__(
        self,
        name: str,
        folder: Path,
        batching: Batching | None = None,
        runtime: ServingRuntime | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """Prepare (not load) the model in ``folder`` under ``name``."""
        super().__init__(name)
        self.folder = folder
        self.batching = batching or Batching()
        self.runtime = runtime or ServingRuntime(TRANSFORMERS, "f32")
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "p2m-gguf"
        self._student: Student | LlamaCppStudent | None = None
        self._decoding = Decoding()
        # llama.cpp decodes concurrent calls together in its slots; transformers one at a time.
        in_flight = self._llama_cpp_slots if self.runtime.runtime == LLAMA_CPP else 1
        self._batcher = MicroBatcher(
            self._predict_batch, self.batching, self._export_batch, in_flight
        )

    @property
    def stats(self) -> BatchStats:
        """The micro-batcher's running totals."""
        return self._batcher.stats

    @property
    def _batch_size(self) -> int:
        return max(Decoding().batch_size, self.batching.max_batch_size)

    @property
    def _llama_cpp_slots(self) -> int:
        return min(self._batch_size, MAX_LLAMA_CPP_SLOTS)

    def load(self) -> bool:
        """Load the tokenizer and weights (CPU); the model is ready afterwards."""
        batch_size = self._batch_size
        student: Student | LlamaCppStudent
        if self.runtime.runtime == LLAMA_CPP:
            student = LlamaCppStudent(
                self.folder,
                self.runtime.precision,
                self.cache_dir,
                parallel=self._llama_cpp_slots,
            )
        else:
            import torch

            student = Student(self.folder, "cuda" if torch.cuda.is_available() else "cpu")
        self._decoding = Decoding(
            max_new_tokens=student.spec.max_output_tokens, num_beams=1, batch_size=batch_size
        )
        self._student = student
        self.ready = True
        RUNTIME.labels(model_name=self.name).info(
            {"runtime": self.runtime.runtime, "precision": self.runtime.precision}
        )
        log.info(
            "model loaded",
            extra={
                "model_name": self.name,
                "folder": str(self.folder),
                "architecture": student.spec.architecture,
                "answers_held_to": student.spec.form.describe(),
                "runtime": self.runtime.label,
                "runtime_reason": self.runtime.reason,
                "max_batch_size": self.batching.max_batch_size,
                "max_latency_s": self.batching.max_latency_s,
            },
        )
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        """v2 metadata: one BYTES tensor of any length."""
        return [{"name": V2_INPUT_NAMES[0], "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """v2 metadata: one BYTES tensor as long as the input."""
        return [{"name": V2_OUTPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """Answer a v1 body (dict) or a v2 request (``InferRequest``, from REST or gRPC).

        Raises:
            InvalidInput: A malformed payload (HTTP 400, gRPC INVALID_ARGUMENT).
        """
        if isinstance(payload, InferRequest):
            outputs = await self.infer_texts(v2_inputs(payload))
            return v2_response(payload, self.name, outputs)
        outputs = await self.infer_texts(v1_inputs(payload))
        return {"predictions": outputs}

    async def infer_texts(self, texts: Sequence[str]) -> list[str]:
        """Predict ``texts`` through the micro-batcher."""
        return await self._batcher.submit(texts)

    def stop(self) -> None:
        """Mark the model unready and stop llama.cpp's process (KServe calls this on shutdown)."""
        self.ready = False
        if isinstance(self._student, LlamaCppStudent):
            self._student.close()

    def _predict_batch(self, inputs: list[str]) -> list[str]:
        if self._student is None:
            raise RuntimeError("the model is not loaded")
        return self._student.predict(inputs, self._decoding)

    def _export_batch(self, requests: int, inputs: int) -> None:
        BATCHES.labels(model_name=self.name).inc()
        BATCH_REQUESTS.labels(model_name=self.name).inc(requests)
        BATCH_INPUTS.labels(model_name=self.name).inc(inputs)
