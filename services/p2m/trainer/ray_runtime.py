"""The Ray the trainer runs on, and the actor that carries progress and stop requests.

Locally Ray is started inside the trainer's process on loopback, with as many CPUs as the
machine has, usage stats off and no dashboard. With ``RAY_ADDRESS`` set it joins that cluster.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from p2m.common.errors import Unavailable
from p2m.common.procs import usable_cpus
from p2m.trainer.events import WorkerEvent

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
START_ATTEMPTS = 3


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start (or join, with ``RAY_ADDRESS``) Ray once per process."""
    import ray

    with _LOCK:
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
            return
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                ray.init(
                    address="local",
                    num_cpus=num_cpus or usable_cpus(),
                    num_gpus=None,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=False,
                    configure_logging=False,
                )
                return
            except Exception as error:  # Ray gives its raylet 30 s, too short on a busy machine
                ray.shutdown()
                if attempt == START_ATTEMPTS:
                    raise Unavailable(f"Ray did not start ({attempt} attempts): {error}") from None
                log.warning("Ray did not start; trying again", extra={"attempt": attempt})


def cluster_cpus() -> float:
    """CPUs Ray can schedule on."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    """GPUs Ray can schedule on."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


class TrainControl:
    """A mailbox between the trainer and its workers: progress events out, a stop flag in."""

    def __init__(self) -> None:
        """Start with no events and no stop request."""
        self._events: list[WorkerEvent] = []
        self._stop = False

    def push(self, event: WorkerEvent) -> None:
        """Add a progress event (called by the rank-0 worker)."""
        self._events.append(event)

    def drain(self) -> list[WorkerEvent]:
        """Take every event pushed since the last call."""
        events, self._events = self._events, []
        return events

    def stop(self) -> None:
        """Ask the workers to stop at their next step."""
        self._stop = True

    def should_stop(self) -> bool:
        """Whether a stop was asked for."""
        return self._stop


def start_control() -> Any:
    """A new TrainControl actor (no CPU reserved), on the driver's node."""
    import ray

    return ray.remote(num_cpus=0)(TrainControl).remote()
