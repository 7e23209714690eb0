"""A student decoded by llama.cpp (in-process, through xllamacpp) from its GGUF export.

It predicts as ``p2m.common.student.Student`` does: the same input text, tokenized by the
student's own tokenizer (truncated from the left, sent to llama.cpp as token ids), greedy
decoding, special tokens left out of the text. Only the arithmetic moves to llama.cpp, so in
``f32`` the answers are the same. The text is llama.cpp's own detokenization of the output: the
ids its log-probabilities list leave out tokens that end inside a UTF-8 character.

The GGUF is written once per model and precision into a cache folder (the model folder itself is
a content-addressed artifact and stays untouched). llama.cpp runs in its own process
(``p2m.llamacpp.worker``) serving on a free loopback port; the requests go there.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import math
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2m.common.procs import usable_cpus
from p2m.common.student import Decoding, StudentSpec, encode_prompts, ensure_pad_token
from p2m.llamacpp.gguf_export import export_gguf

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
# Room in each slot's context beyond the input and output limits (llama.cpp's own tokens).
CONTEXT_MARGIN = 16
START_TIMEOUT_S = 300.0
STOP_GRACE_S = 10.0
REQUEST_TIMEOUT_S = 600.0


def cached_export(folder: Path, precision: str, cache_dir: Path) -> Path:
    """The student's GGUF in ``precision``: from the cache, or exported into it now."""
    stamp = [EXPORT_VERSION, str(folder.resolve()), precision]
    for path in sorted(folder.iterdir()):
        if path.suffix in {".safetensors", ".json"} and path.is_file():
            stat = path.stat()
            stamp.append([path.name, stat.st_size, stat.st_mtime_ns])
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:20]
    target = cache_dir / f"student-{key}-{precision}.gguf"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    return export_gguf(folder, target, precision).path


class LlamaCppStudent:
    """A loaded student served by llama.cpp; ``predict`` as ``Student.predict``.

    ``predict`` may be called from several threads at once: llama.cpp decodes the calls
    together in its ``parallel`` slots, each slot keeping the KV cache of its last prompt, so
    the instruction every input starts with is computed once per slot, not once per call.
    """

    def __init__(
        self,
        folder: Path,
        precision: str,
        cache_dir: Path,
        *,
        parallel: int = 8,
        threads: int = 0,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        """Export (or reuse) the GGUF; start llama.cpp on it with ``parallel`` decoding slots.

        Raises:
            RuntimeError: llama.cpp could not load the GGUF (its reason), or took longer than
                ``start_timeout_s``.
        """
        from transformers import AutoTokenizer

        self.folder = folder
        self.spec = StudentSpec.load(folder)
        self.precision = precision
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        ensure_pad_token(self.tokenizer)
        self._tokenizer_lock = threading.Lock()
        self.gguf_path = cached_export(folder, precision, cache_dir)
        self.parallel = max(1, parallel)
        self.threads = threads or usable_cpus()
        per_slot = self.spec.max_input_tokens + self.spec.max_output_tokens + CONTEXT_MARGIN
        argv = [sys.executable, "-m", "p2m.llamacpp.worker"]
        argv += ["--model", str(self.gguf_path), "--parallel", str(self.parallel)]
        argv += ["--ctx", str(self.parallel * per_slot), "--threads", str(self.threads)]
        self._worker: subprocess.Popen[str] | None = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        address = _first_line(self._worker, start_timeout_s)
        if not address.startswith("http://127.0.0.1:"):
            self.close()
            raise RuntimeError(f"llama.cpp could not serve {self.gguf_path}: {address}")
        self.port = int(address.rsplit(":", 1)[1])
        log.info(
            "llama.cpp student loaded",
            extra={
                "gguf": str(self.gguf_path),
                "precision": precision,
                "threads": self.threads,
                "parallel": self.parallel,
                "pid": self._worker.pid,
            },
        )

    @property
    def num_parameters(self) -> int:
        """Parameters of the model (from its safetensors headers; shared weights once)."""
        from safetensors import safe_open

        total = 0
        for path in sorted(self.folder.glob("*.safetensors")):
            with safe_open(path, framework="np") as weights:
                for name in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    total += math.prod(weights.get_slice(name).get_shape())
        return total

    @property
    def pid(self) -> int | None:
        """The llama.cpp process, while it runs."""
        return self._worker.pid if self._worker is not None else None

    def predict(self, inputs: Sequence[str], decoding: Decoding | None = None) -> list[str]:
        """Greedy outputs for raw ``inputs``, in order, held to the spec's output form.

        The instruction is added here.
        """
        if not inputs:
            return []
        decoding = decoding or Decoding(max_new_tokens=self.spec.max_output_tokens)
        if decoding.num_beams != 1:
            raise ValueError("llama.cpp decodes greedily (num_beams=1)")
        with self._tokenizer_lock:  # a fast tokenizer's settings are not shared across threads
            prompts = encode_prompts(self.tokenizer, self.spec, inputs)
        body = {
            "prompt": prompts,
            "n_predict": decoding.max_new_tokens,
            "temperature": 0.0,
            "top_k": 1,
            "cache_prompt": True,
        }
        answer = self._post("/v1/completions", body)
        choices = answer.get("choices")
        if not isinstance(choices, list) or len(choices) != len(prompts):
            raise RuntimeError(f"llama.cpp answered {str(answer)[:300]}")
        outputs = [""] * len(prompts)
        for choice in choices:
            outputs[int(choice["index"])] = str(choice.get("text", "")).strip()
        return self.spec.hold(inputs, outputs)

    def close(self) -> None:
        """Stop the llama.cpp process (it leaves when its input closes; killed if it lingers)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(OSError):
            if worker.stdin is not None:
                worker.stdin.close()
        try:
            worker.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()

    def __del__(self) -> None:
        """Never leave the process behind."""
        with contextlib.suppress(Exception):
            self.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._worker is None or self._worker.poll() is not None:
            raise RuntimeError("the llama.cpp process is not running")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            reply = connection.getresponse()
            data = json.loads(reply.read())
        finally:
            connection.close()
        if reply.status != 200 or not isinstance(data, dict):
            raise RuntimeError(f"llama.cpp answered HTTP {reply.status}: {str(data)[:300]}")
        return data


def _first_line(worker: subprocess.Popen[str], timeout_s: float) -> str:
    """The worker's first line of output (its address, or why it failed)."""
    assert worker.stdout is not None
    ready, _, _ = select.select([worker.stdout], [], [], timeout_s)
    if not ready:
        worker.kill()
        return f"no answer within {timeout_s:g} s"
    line = worker.stdout.readline().strip()
    return line or f"it exited with code {worker.wait()}"
