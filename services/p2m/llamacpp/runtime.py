"""Which runtime decodes a served student, in which precision, and why.

``llama.cpp`` serves a decoder-only student exported to GGUF (``gguf_export``): about a third of
transformers' time per token on a CPU in ``f32`` (the same greedy answers), a fifth in ``q8_0``
(int8, the default: within a point of f32 on the paper's three dev halves). ``transformers``
serves anything a trainer writes (encoder-decoders included) in fp32. ``auto`` takes llama.cpp
where the student can be exported and transformers otherwise, saying why. An unset precision
("") is the default where llama.cpp serves and f32 where transformers does; one asked for is
never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from p2m.common.errors import FailedPrecondition, InvalidInput
from p2m.common.settings import DEFAULT_SERVING_PRECISION, SERVING_RUNTIMES
from p2m.common.student import StudentSpec
from p2m.llamacpp.gguf_export import ARCHITECTURES, PRECISIONS, Unsupported, pre_tokenizer

RUNTIMES = SERVING_RUNTIMES
AUTO, LLAMA_CPP, TRANSFORMERS = RUNTIMES
TRANSFORMERS_PRECISION = "f32"  # the only one transformers serves
DEFAULT_PRECISION = DEFAULT_SERVING_PRECISION  # llama.cpp's when none is asked for
UNSET = ""


@dataclass(frozen=True)
class ServingRuntime:
    """A resolved choice.

    Attributes:
        runtime: ``llama.cpp`` or ``transformers``.
        precision: The weights' precision as served (transformers: always ``f32``).
        reason: Why this runtime, when ``auto`` chose transformers; empty otherwise.
    """

    runtime: str
    precision: str
    reason: str = ""

    @property
    def label(self) -> str:
        """E.g. "llama.cpp f32"."""
        return f"{self.runtime} {self.precision}"


def check_choice(runtime: str, precision: str, prefix: str = "options.") -> None:
    """Check the names alone (before any model is looked at).

    ``precision`` may be ``UNSET``.

    Raises:
        InvalidInput: An unknown runtime or precision, or transformers asked for another
            precision than f32 (named ``<prefix>runtime`` / ``<prefix>precision``).
    """
    if runtime not in RUNTIMES:
        raise InvalidInput(f"{prefix}runtime", f"must be one of {list(RUNTIMES)}, got {runtime!r}")
    if precision != UNSET and precision not in PRECISIONS:
        raise InvalidInput(
            f"{prefix}precision", f"must be one of {list(PRECISIONS)}, got {precision!r}"
        )
    if runtime == TRANSFORMERS and precision not in (UNSET, TRANSFORMERS_PRECISION):
        raise InvalidInput(f"{prefix}precision", f"transformers serves f32 only, got {precision!r}")


def resolve(
    folder: Path,
    runtime: str = AUTO,
    precision: str = UNSET,
    prefix: str = "options.",
    *,
    default_precision: str = DEFAULT_PRECISION,
    transformers_because: str = "",
) -> ServingRuntime:
    """The runtime that serves the student in ``folder``.

    An unset ``precision`` is ``default_precision`` where llama.cpp serves and f32 where
    transformers does. ``transformers_because`` names a reason of the caller's for ``auto`` to
    take transformers whatever the student (a GPU to decode on, beam search).

    Raises:
        InvalidInput: A bad name (see ``check_choice``), or llama.cpp asked for a student it
            cannot serve (the message says why).
    """
    check_choice(runtime, precision, prefix)
    if runtime == TRANSFORMERS:
        return ServingRuntime(TRANSFORMERS, TRANSFORMERS_PRECISION)
    why_not = (transformers_because if runtime == AUTO else "") or llama_cpp_unfit(folder)
    if why_not is None:
        return ServingRuntime(LLAMA_CPP, precision or default_precision)
    if runtime == LLAMA_CPP:
        raise InvalidInput(f"{prefix}runtime", f"llama.cpp cannot serve this student: {why_not}")
    if precision not in (UNSET, TRANSFORMERS_PRECISION):
        raise InvalidInput(
            f"{prefix}precision",
            f"{precision} needs llama.cpp, which cannot serve this student: {why_not}",
        )
    return ServingRuntime(TRANSFORMERS, TRANSFORMERS_PRECISION, f"not llama.cpp: {why_not}")


def llama_cpp_unfit(folder: Path) -> str | None:
    """Why llama.cpp cannot serve the student in ``folder``, or None when it can."""
    try:
        spec = StudentSpec.load(folder)
    except FailedPrecondition as exc:
        return str(exc)
    if spec.architecture != "decoder-only":
        return f"it is an {spec.architecture} model"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable config or tokenizer: {exc}"
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        return f"{model_type!r} is not one of the exportable {sorted(ARCHITECTURES)}"
    if not list(folder.glob("*.safetensors")):
        return "its weights are not in safetensors files"
    try:
        pre_tokenizer(tokenizer)
    except Unsupported as exc:
        return str(exc)
    return None
