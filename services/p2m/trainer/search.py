"""A search over learning rate and epochs: Ray Tune trials, each a Ray Train run, ASHA judging.

The trials' settings are drawn once from the seed (a rerun draws the same, so each trial
resumes from its own checkpoints). Tune runs them, as many at once as the cluster fits, and
ASHA compares the validation loss of their kept weights at each epoch (the lowest, or one tied
with it, ``keep_best_tolerance``): a trial behind the others is asked to stop at its next step
through its control actor, so its Ray Train run ends cleanly and frees its workers (Tune's own
stop would kill the run's controller and strand its placement group). The model is the trial
whose kept weights have the lowest validation loss, with those weights.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from p2m.common.errors import Aborted, Cancelled
from p2m.trainer.base_model import BaseModel
from p2m.trainer.checkpoints import latest_complete
from p2m.trainer.events import TrainEvent
from p2m.trainer.options import TrainOptions
from p2m.trainer.ray_run import (
    RayRun,
    check_gpus,
    fit_watched,
    saved_state,
    short_error,
    torch_trainer,
    worker_resources,
)
from p2m.trainer.ray_runtime import cluster_cpus, ensure_ray, start_control
from p2m.trainer.run_types import TrainJob, TrainReport

# What the trials are compared by: the kept weights' validation loss (each worker report has it).
METRIC = "best_eval_loss"


@dataclass(frozen=True)
class TrialSetting:
    """What one trial tries."""

    learning_rate: float
    epochs: int


def trial_settings(options: TrainOptions) -> list[TrialSetting]:
    """``options.search_trials`` settings spread over the space, drawn from ``options.seed``.

    A Latin hypercube: each trial has its own slice of the log learning rate range and of the
    epochs (1 to ``options.epochs``), at a random place in it, the slices paired at random;
    rates kept to 2 figures.
    """
    count = options.search_trials
    rng = random.Random(options.seed)
    low = math.log(options.search_min_learning_rate)
    high = math.log(options.search_max_learning_rate)
    rates = [math.exp(low + (high - low) * (i + rng.random()) / count) for i in range(count)]
    epochs = [1 + int((i + rng.random()) * options.epochs / count) for i in range(count)]
    rng.shuffle(rates)
    rng.shuffle(epochs)
    return [TrialSetting(float(f"{r:.2g}"), e) for r, e in zip(rates, epochs, strict=True)]


class SearchRun:
    """Tune over RayRuns; ``execute`` answers like one RayRun, with the trials in the report."""

    def __init__(
        self,
        name: str,
        work_root: Path,
        base: BaseModel,
        job: TrainJob,
        data: Any,
        emit: Callable[[TrainEvent], None],
        cancel: threading.Event,
    ) -> None:
        """A search named ``name``; trial ``i``'s run is ``{name}-t{i}`` under ``work_root``."""
        self.name = name
        self.work_root = work_root
        self.options = job.options
        self.cancel = cancel
        self.settings = trial_settings(job.options)
        count = len(self.settings)
        self.trials = [
            RayRun(
                f"{name}-t{number}",
                work_root,
                base,
                replace(job, options=_trial_options(job.options, setting)),
                data,
                _tagged(emit, number, count),
                cancel,
            )
            for number, setting in enumerate(self.settings, start=1)
        ]
        self.chosen: RayRun | None = None

    def trained_options(self) -> TrainOptions:
        """The chosen trial's options (after ``execute``)."""
        if self.chosen is None:
            raise RuntimeError("no trial chosen yet")
        return self.chosen.job.options

    def folders(self) -> list[Path]:
        """What the search leaves on disk: each trial's run and Tune's experiment."""
        return [trial.run_dir for trial in self.trials] + [self.work_root / self.name]

    def execute(self) -> tuple[Path, TrainReport]:
        """Run the trials; return the chosen one's last checkpoint and its report.

        Raises:
            FailedPrecondition: GPUs were asked for and Ray has too few.
            Cancelled: ``cancel`` was set; each trial's last checkpoint is kept for a retry.
            Aborted: No trial ended with a validation loss.
        """
        # Tune's newer console output prints its header even when asked for silence.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        from ray import tune

        ensure_ray()
        check_gpus(self.options.num_workers, self.options.use_gpu)
        controls = [start_control() for _ in self.trials]
        specs = [trial.spec(control) for trial, control in zip(self.trials, controls, strict=True)]
        scheduler = _asha_stopping_by_control(controls, self.options.epochs)
        self.work_root.mkdir(parents=True, exist_ok=True)
        driver = tune.with_parameters(_trial_driver, specs=specs)
        tuner = tune.Tuner(
            # The driver only waits on its Ray Train run, whose workers hold the resources.
            tune.with_resources(driver, {"CPU": 0, "memory": 1}),
            param_space={"trial": tune.grid_search(list(range(len(specs))))},
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="min",
                scheduler=scheduler,
                max_concurrent_trials=_concurrent_trials(self.options),
            ),
            run_config=tune.RunConfig(name=self.name, storage_path=str(self.work_root), verbose=0),
        )
        started = time.monotonic()
        runs = list(zip(self.trials, controls, strict=True))
        grid, stop_sent = fit_watched(tuner.fit, self.name, runs, self.cancel)
        if stop_sent:
            raise Cancelled(
                "training search cancelled; a retry resumes each trial from its last checkpoint"
            )
        return self._choose(grid, time.monotonic() - started)

    def _choose(self, grid: Any, seconds: float) -> tuple[Path, TrainReport]:
        results = {result.config["trial"]: result for result in grid}
        rows: list[dict[str, Any]] = []
        chosen: int | None = None
        for index, setting in enumerate(self.settings):
            result = results.get(index)
            metrics = (result.metrics or {}) if result is not None else {}
            loss = _number(metrics.get(METRIC))
            if result is None or result.error is not None:
                why = short_error(result.error) if result is not None else "never ran"
                outcome = f"failed: {why}"
            else:
                ended_early = self.trials[index].stopped_at is not None
                outcome = "stopped" if ended_early else "completed"
            rows.append(
                {
                    "trial": index + 1,
                    "learning_rate": setting.learning_rate,
                    "epochs": setting.epochs,
                    "steps": int(metrics.get("step", 0)),
                    "best_eval_loss": loss,
                    "outcome": outcome,
                }
            )
            usable = loss is not None and not outcome.startswith("failed")
            if usable and (chosen is None or loss < rows[chosen]["best_eval_loss"]):
                chosen = index
        if chosen is None:
            reasons = "; ".join(f"trial {r['trial']}: {r['outcome']}" for r in rows)
            raise Aborted(f"no trial of the search ended with a validation loss ({reasons})")
        rows[chosen]["outcome"] = "chosen"
        winner = self.chosen = self.trials[chosen]
        folder = latest_complete(winner.run_dir)
        if folder is None:
            raise Aborted(f"the chosen trial ({chosen + 1}) left no complete checkpoint")
        report = winner.report(results[chosen].metrics, seconds, saved_state(folder))
        return folder, replace(report, search_trials=tuple(rows))


def _asha_stopping_by_control(controls: list[Any], max_epochs: int) -> Any:
    """ASHA (by epoch, halving) whose stop goes through the trial's control actor.

    Its ``stopped`` holds the indices of the trials it stopped.
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class StopByControl(ASHAScheduler):
        def __init__(self) -> None:
            super().__init__(
                time_attr="epoch",
                max_t=max_epochs,
                grace_period=1,
                reduction_factor=2,
                stop_last_trials=False,
            )
            self.stopped: set[int] = set()

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            index = trial.config["trial"]
            if decision == TrialScheduler.STOP and index not in self.stopped:
                self.stopped.add(index)
                controls[index].stop.remote()
            return TrialScheduler.CONTINUE

    return StopByControl()


def _trial_driver(config: dict[str, Any], specs: list[dict[str, Any]]) -> None:
    """One Tune trial: fit its Ray Train run, passing each report on to Tune."""
    import ray
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = specs[config["trial"]]
    if ray.get(spec["config"]["control"].should_stop.remote()):
        return  # the search was cancelled before this trial began
    torch_trainer(spec, [TuneReportCallback()]).fit()


def _trial_options(options: TrainOptions, setting: TrialSetting) -> TrainOptions:
    """A trial runs its own epochs: ``min_steps`` would raise the search's short ones."""
    return replace(
        options,
        learning_rate=setting.learning_rate,
        epochs=setting.epochs,
        min_steps=0,
        search_trials=0,
    )


def _tagged(emit: Callable[[TrainEvent], None], trial: int, trials: int) -> Callable:
    return lambda event: emit(replace(event, trial=trial, trials=trials))


def _concurrent_trials(options: TrainOptions) -> int:
    """As many trials at once as the cluster has CPUs for (each worker takes its share)."""
    per_trial = worker_resources(options)["CPU"] * options.num_workers
    fits = int(cluster_cpus() // per_trial) if per_trial else 1
    return max(1, min(fits, options.search_trials))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
