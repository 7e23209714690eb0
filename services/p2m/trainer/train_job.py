"""`p2m train-job`: the entrypoint of a training's KubeRay RayJob.

It reads the job file the trainer wrote on the shared volume, trains with the same code as the
local backend (``ModelTrainer`` without a runner; KubeRay sets ``RAY_ADDRESS`` for the
entrypoint, so ``ensure_ray`` joins the RayJob's cluster instead of starting one) and appends
every progress event to the progress file beside the job file, which the trainer tails. The
model goes to the artifact store on the same volume under the training key, where the trainer
finds it once the RayJob has succeeded. Run locally (no ``RAY_ADDRESS``) it trains on a local
Ray, which is how it is tested.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from p2m.cliutil import LogLevel, fail, load_settings
from p2m.common.errors import InvalidInput, P2MError
from p2m.common.log import setup_logging

log = logging.getLogger(__name__)

# How long the job waits for its Ray worker pods to join before training anyway.
WORKERS_WAIT_S = 300.0


def train_job(
    job: Annotated[Path, typer.Option(help="The job file the trainer wrote (JSON).")],
    data_dir: Annotated[Path, typer.Option(help="The data dir (the shared volume).")],
    log_level: LogLevel = None,
) -> None:
    """Run one training handed over by the trainer (a RayJob's entrypoint); exit 0 on success."""
    from p2m.common.artifacts import ArtifactStore
    from p2m.trainer.engine import ModelTrainer
    from p2m.trainer.jobfile import JobFile, ProgressWriter, progress_path

    settings = load_settings(data_dir=data_dir, log_level=log_level)
    setup_logging(settings.log_level, settings.log_format)
    try:
        spec = JobFile.read(job)
    except InvalidInput as exc:
        fail(str(exc), 2)
    progress = ProgressWriter(progress_path(job))
    store = ArtifactStore(settings.artifacts_dir)
    trainer = ModelTrainer.from_settings(settings, ray_job_name=spec.ray_job_name)
    try:
        if os.environ.get("RAY_ADDRESS"):
            _wait_for_workers(spec.job.options.num_workers, spec.job.options.use_gpu)
        outcome = trainer.train(spec.job, progress.event)
    except P2MError as exc:
        progress.error(str(exc))
        fail(str(exc), 1)
    if store.recall(spec.key) is None:
        message = (
            f"the model {outcome.model.uri} was stored under another training key than the "
            f"trainer's {spec.key[:12]}... (a different base model or data on this node?)"
        )
        progress.error(message)
        fail(message, 1)
    progress.done(outcome.model)
    print(json.dumps({"model": outcome.model.uri, "report": asdict(outcome.report)}))


def _wait_for_workers(workers: int, use_gpu: bool) -> None:
    """Wait until the head and ``workers`` worker nodes (with a GPU each) have joined Ray."""
    import ray

    from p2m.trainer.ray_runtime import cluster_gpus, ensure_ray

    ensure_ray()
    deadline = time.monotonic() + WORKERS_WAIT_S
    while time.monotonic() < deadline:
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        if nodes > workers and (not use_gpu or cluster_gpus() >= workers):
            return
        time.sleep(2.0)
    log.warning("not every Ray worker joined; training anyway", extra={"workers": workers})
