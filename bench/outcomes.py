"""What one bench process gave, and how a report run keeps it (``outcomes.json``)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Other processes taking more than this many cores on average make a figure noisy.
FOREIGN_NOISY_CORES = 0.5


@dataclass
class Outcome:
    """What one bench process gave."""

    name: str
    argv: list[str]
    status: str = "pending"  # ok | failed | timeout | pending
    figures: dict[str, Any] | None = None
    wall_s: float = 0.0
    own_cpu_s: float = 0.0
    foreign_cores: float = 0.0
    load_start: list[float] = field(default_factory=list)
    load_end: list[float] = field(default_factory=list)
    error_tail: str = ""
    log: str = ""

    @property
    def noisy(self) -> bool:
        """Other work on the machine while it ran was enough to disturb the figures.

        Judged by the CPU other processes took, not by the load average, which counts the
        bench itself (and, for a minute or so, the bench before it).
        """
        return self.foreign_cores > FOREIGN_NOISY_CORES


def save_outcomes(path: Path, context: dict[str, Any], outcomes: list[Outcome]) -> None:
    """Keep what the run gave, so RESULTS.md can be written again without running anything."""
    data = {
        "context": {
            k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in context.items()
        },
        "outcomes": [asdict(o) for o in outcomes],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def load_outcomes(path: Path) -> tuple[dict[str, Any], list[Outcome]]:
    """The context and outcomes ``save_outcomes`` kept."""
    data = json.loads(path.read_text(encoding="utf-8"))
    context = dict(data["context"])
    for key in ("started", "finished"):
        if context.get(key):
            context[key] = dt.datetime.fromisoformat(context[key])
    return context, [Outcome(**o) for o in data["outcomes"]]
