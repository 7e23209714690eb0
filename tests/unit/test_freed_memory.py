"""Freed tensors' memory leaves the process once glibc's mmap threshold is fixed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from p2m.trainer.freed_memory import (
    available_memory_bytes,
    memory_is_tight,
    return_freed_memory,
)

# Raise glibc's threshold (a freed 16 MiB mapping), then free 8 MiB blocks held between live
# 256 KiB ones, as a step frees its gradients between tensors that stay; print the resident
# memory (MiB) freed by that.
_SCRIPT = """
import sys
from pathlib import Path
from p2m.trainer.freed_memory import (
    available_memory_bytes,
    memory_is_tight,
    return_freed_memory,
)

def resident_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

if sys.argv[1] == "fixed":
    assert return_freed_memory()
first = bytearray(16 << 20)
del first
big, small = [], []
for _ in range(40):
    big.append(bytearray(8 << 20))
    small.append(bytearray(256 << 10))
held = resident_mib()
big.clear()
print(held - resident_mib())
"""


def _freed_mib(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_leave_the_process_only_with_the_threshold_fixed() -> None:
    assert return_freed_memory()
    assert _freed_mib("default") < 100  # of 320 MiB freed, the heap kept them
    assert _freed_mib("fixed") > 300


def test_memory_is_tight_where_the_state_would_not_fit_the_memory_left() -> None:
    qwen, smollm2, gib = 630_000_000, 135_000_000, 1 << 30
    # 630M trained parameters: 7.6 GB of gradients and AdamW state, ~10.9 GB as the heap grows.
    assert not memory_is_tight(qwen, available=18 * gib)
    assert memory_is_tight(qwen, available=9 * gib)
    assert memory_is_tight(qwen, workers_here=2, available=18 * gib)  # two workers share it
    assert not memory_is_tight(smollm2, workers_here=2, available=18 * gib)


def test_available_memory_is_known_here() -> None:
    found = available_memory_bytes()
    assert found is not None and 0 < found < 1 << 50
