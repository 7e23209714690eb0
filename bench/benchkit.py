"""What every benchmark records beside its figures: the machine, the load on it, one JSON line.

Figures measured while other processes use the CPU are noisy, so each figure carries the load
average (1, 5 and 15 minutes) read when it was measured, and ``noisy`` says when that load is
high for the machine's cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# A 1-minute load average above this share of the cores counts as a busy machine.
BUSY_SHARE = 0.5
# The curves bench's student when none is named (a shipped model's short name); another one's
# runs, files and RESULTS.md section carry its name.
DEFAULT_STUDENT = "smollm2"


def load_average() -> list[float]:
    """``os.getloadavg()`` rounded: 1, 5 and 15 minutes."""
    return [round(value, 2) for value in os.getloadavg()]


def noisy(load: list[float], cores: int | None = None) -> bool:
    """True when the 1-minute load was high enough for other work to disturb a figure."""
    return load[0] > BUSY_SHARE * (cores or os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's word for it elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    """Physical memory in GiB (0 when it cannot be read)."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return 0.0


def machine() -> dict[str, Any]:
    """The machine a figure was measured on."""
    torch_version = ""
    if "torch" in sys.modules or _importable("torch"):
        import torch

        torch_version = torch.__version__
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
        "torch": torch_version,
        "gpu": _gpu(),
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line for people: CPU, cores, RAM, Python."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    return (
        f"{info['cpu']} ({info['arch']}), {info['cores']} cores, {info['ram_gib']} GiB RAM"
        f"{gpu}, Python {info['python']}"
    )


def load_note(load: list[float]) -> str:
    """`` (load 1.2/1.0/0.9, busy: noisy)`` style suffix for a human line."""
    mark = ", busy: figures noisy" if noisy(load) else ""
    return f"load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}{mark}"


def emit(figures: dict[str, Any]) -> None:
    """Print ``figures`` as one JSON line on stdout (what ``report.py`` reads)."""
    print(json.dumps(figures, ensure_ascii=False), flush=True)


def finish(
    bench: str,
    args: Any,
    load_start: list[float],
    figures: dict[str, Any],
    show: Callable[[dict[str, Any]], None],
) -> None:
    """Add what every bench records (name, machine, load); print JSON (--json) or a table."""
    whole = {
        "bench": bench,
        "quick": args.quick,
        "machine": machine(),
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
        **figures,
    }
    if args.json:
        emit(whole)
    else:
        show(whole)


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, by linear interpolation (0 when empty)."""
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _gpu() -> str:
    if "torch" not in sys.modules:
        return ""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return ""


def stop_ray() -> None:
    """Shut down the Ray this process started (before its temporary folders go)."""
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()


def parse_arguments(
    parser: argparse.ArgumentParser, quick: dict[str, Any], shared: bool = True
) -> argparse.Namespace:
    """Add the common flags, parse, and with --quick take ``quick``'s sizes."""
    common_arguments(parser, "tiny sizes: " + str(quick), shared)
    args = parser.parse_args()
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    return args


def common_arguments(parser: argparse.ArgumentParser, quick_help: str, shared: bool = True) -> None:
    """The flags every bench has: --quick, --json and (with ``shared``) --shared-data."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    if shared:
        parser.add_argument(
            "--shared-data",
            type=Path,
            default=Path(os.environ.get("P2M_SHARED_DATA", "../shared/data")),
        )


def git_commit() -> str:
    """HEAD's short hash, with "+ uncommitted changes" when the work tree differs."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head} + uncommitted changes" if dirty else head


def utc_now() -> str:
    """The time now, to the minute, for people: "2026-12-02 15:40 UTC"."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
