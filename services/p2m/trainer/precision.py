"""The arithmetic a training runs in: bf16 autocast where the hardware does bf16, fp32 otherwise.

Weights, gradients and optimizer state stay in fp32 either way; bf16 autocast runs the matrix
products of the forward pass in bf16, about twice as fast on CPUs with AVX512-BF16 or AMX.
Without them a CPU emulates bf16, slower than fp32, so ``auto`` picks fp32 there.
"""

from __future__ import annotations

import contextlib
from typing import Any


def bf16_supported(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") runs bf16 natively."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    return any(
        getattr(cpu, probe, lambda: False)()
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def resolve_precision(choice: str, device_type: str) -> str:
    """``choice`` ("auto", "fp32" or "bf16") as the precision used on ``device_type``."""
    if choice != "auto":
        return choice
    return "bf16" if bf16_supported(device_type) else "fp32"


def autocast(precision: str, device_type: str) -> Any:
    """A context running the forward pass in ``precision`` (a no-op for fp32)."""
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)
