"""The search's drawn settings and its ASHA, which stops trials through their control actor."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from p2m.trainer.options import TrainOptions
from p2m.trainer.search import _asha_stopping_by_control, trial_settings


def test_each_trial_has_its_own_slice_of_the_range_and_the_seed_fixes_them() -> None:
    options = TrainOptions(
        epochs=4, search_trials=8, search_min_learning_rate=1e-5, search_max_learning_rate=1e-3
    )
    settings = trial_settings(options)
    assert settings == trial_settings(options)
    assert settings != trial_settings(TrainOptions(**{**options.__dict__, "seed": 7}))
    # One rate in each eighth of the log range (up to the rounding to 2 figures).
    slices = sorted(
        math.floor(8 * math.log(s.learning_rate / 1e-5) / math.log(100)) for s in settings
    )
    assert slices == list(range(8))
    assert sorted(s.epochs for s in settings) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert [s.learning_rate for s in settings] != sorted(s.learning_rate for s in settings)


@dataclass
class _Control:
    stops: int = 0

    @property
    def stop(self) -> Any:
        control = self

        class Remote:
            def remote(self) -> None:
                control.stops += 1

        return Remote()


@dataclass
class _Trial:
    index: int
    trial_id: str = ""
    config: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trial_id = f"t{self.index}"
        self.config = {"trial": self.index}


def test_asha_stops_a_trial_behind_the_others_through_its_control() -> None:
    from ray.tune.schedulers import TrialScheduler

    controls = [_Control() for _ in range(3)]
    asha = _asha_stopping_by_control(controls, max_epochs=3)
    asha.set_search_properties("best_eval_loss", "min")
    trials = [_Trial(i) for i in range(3)]
    for trial in trials:
        asha.on_trial_add(None, trial)

    def report(index: int, epoch: float, loss: float) -> str:
        return asha.on_trial_result(None, trials[index], {"epoch": epoch, "best_eval_loss": loss})

    assert report(0, 1.0, 1.0) == TrialScheduler.CONTINUE
    assert report(1, 1.0, 0.8) == TrialScheduler.CONTINUE
    assert report(2, 1.0, 5.0) == TrialScheduler.CONTINUE  # Tune never kills the run itself
    assert [c.stops for c in controls] == [0, 0, 1]
    assert asha.stopped == {2}
    report(2, 1.5, 5.0)  # a report on its way before the stop landed: asked once only
    assert controls[2].stops == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"search_trials": -1}, "options.search_trials"),
        ({"search_min_learning_rate": 0.0}, "options.search_min_learning_rate"),
        (
            {"search_min_learning_rate": 1e-3, "search_max_learning_rate": 1e-4},
            "options.search_max_learning_rate",
        ),
    ],
)
def test_bad_search_options_name_the_field(change: dict[str, Any], field: str) -> None:
    from p2m.common.errors import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        TrainOptions(**change).validate()
    assert caught.value.field == field
