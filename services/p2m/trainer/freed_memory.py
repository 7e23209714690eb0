"""Give freed tensors' memory back to the system at once, so training's peak stays its own.

glibc's malloc serves an allocation above its mmap threshold (128 KiB at first) with its own
mapping, returned to the system when freed; but each such free raises the threshold (up to
32 MiB), after which blocks of that size come from the heap and, once freed, stay with the
process. A training step frees its gradients (``zero_grad(set_to_none=True)``) and its
activations every step; with the threshold raised, Qwen2.5-Coder-0.5B's (tensors of 3 to 17
MiB) stayed in the heap: its resident memory after a step was 10.3 GB, and its peak in the next
step's backward 13.0 GB, where its weights and AdamW's two moments are 7.5 GB. Fixing the
threshold (``mallopt(M_MMAP_THRESHOLD, 128 KiB)``, which also ends its adjustment) kept it at
7.6 GB after a step and 10.6 to 10.9 GB at the peak. It costs time, each step's tensors mapped
afresh (page faults): Qwen's steps took 29% longer, SmolLM2-135M's 33% (one run, Intel Xeon, 2
cores). So a worker fixes it only where memory is tight (``memory_is_tight``): where its training
state, grown as the heap grows it, would not fit the memory left to it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial threshold, kept from then on
STATE_BYTES_PER_PARAMETER = 12  # a trained parameter's fp32 gradient and AdamW's two moments
HEAP_GROWTH = 1.3  # Qwen2.5-Coder-0.5B's steps peaked 1.3x above its weights and state
HEADROOM_BYTES = 1 << 30  # activations, the batch, Python
MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")  # cgroup v2: a container's limit and use


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold in this process; False where the C library has no mallopt."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in the C library: freed memory returns as the allocator decides")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def memory_is_tight(
    trainable_parameters: int, workers_here: int = 1, available: int | None = None
) -> bool:
    """Whether a worker's gradients and AdamW state, as the heap grows them, may not fit.

    Called with the model loaded: ``available`` (``available_memory_bytes`` when None) is
    shared by the ``workers_here`` on this machine. Unknown memory: not tight.
    """
    if available is None:
        available = available_memory_bytes()
    if available is None:
        return False
    need = trainable_parameters * STATE_BYTES_PER_PARAMETER * HEAP_GROWTH + HEADROOM_BYTES
    return need > available / max(1, workers_here)


def available_memory_bytes() -> int | None:
    """Memory this process may still take: the system's available, within its cgroup's limit."""
    found = []
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, min(found)) if found else None
