"""bench/pipeline.py: a task's figures are kept in the data dir, reused by the same code, sizes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pipeline
import pytest


@pytest.fixture(autouse=True)
def commit(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commit the bench reports, as a list a test may change."""
    current = ["abc1234"]
    monkeypatch.setattr(pipeline.benchkit, "git_commit", lambda: current[0])
    return current


def _args(tmp_path: Path, **changed: object) -> argparse.Namespace:
    sizes = {"examples": 80, "epochs": 3, "max_steps": 0, "min_steps": None, "eval_limit": 100}
    sizes |= {"teacher": "qwen", "retrieved_rows": 200, "answer_temperature": None, "seed": None}
    sizes |= {"max_instruction_tokens": 0, "student": None, "learning_rate": None}
    sizes |= {"eval_steps": None, "keep_best_by": None, "span_first": False, "invariants": None}
    sizes |= {"passage_first": False, "self_consistency_samples": None, "prompt_demonstrations": 0}
    return argparse.Namespace(data_dir=tmp_path, **(sizes | changed))


def _figures(state: str = "succeeded", scored: bool = True) -> dict[str, object]:
    score = {"score": 13.1} if scored else None
    return {"task": "mconala_ja", "state": state, "student": score, "teacher": score}


def test_a_scored_task_is_kept_and_reused_only_at_the_same_sizes(tmp_path):
    args = _args(tmp_path)
    assert pipeline.kept_figures(args, "mconala_ja") is None
    pipeline.keep(args, "mconala_ja", _figures())
    kept = pipeline.kept_figures(args, "mconala_ja")
    assert kept is not None and kept["student"] == {"score": 13.1}
    assert set(kept["kept_from"]) == {"commit", "finished"}
    assert pipeline.kept_figures(args, "squad") is None
    assert pipeline.kept_figures(_args(tmp_path, examples=24), "mconala_ja") is None
    assert pipeline.kept_figures(_args(tmp_path, teacher="smollm2"), "mconala_ja") is None
    assert pipeline.kept_figures(_args(tmp_path, min_steps=0), "mconala_ja") is None
    assert pipeline.kept_figures(_args(tmp_path, answer_temperature=0.0), "mconala_ja") is None
    assert pipeline.kept_figures(_args(tmp_path, seed=7), "mconala_ja") is None
    assert pipeline.kept_figures(_args(tmp_path, max_instruction_tokens=32), "mconala_ja") is None
    voted = _args(tmp_path, answer_temperature=1.0, self_consistency_samples=5)
    assert pipeline.kept_figures(voted, "mconala_ja") is None
    assert pipeline.sizes(voted)["self_consistency_samples"] == 5


def test_a_pinned_student_or_rate_keeps_its_own_figures_beside_the_default_run(tmp_path):
    default, smollm2 = _args(tmp_path), _args(tmp_path, student="HuggingFaceTB/SmolLM2")
    slower = _args(tmp_path, student="HuggingFaceTB/SmolLM2", learning_rate=2e-5)
    pipeline.keep(default, "mconala_ja", _figures())
    assert pipeline.kept_figures(smollm2, "mconala_ja") is None  # the default chose another
    pipeline.keep(smollm2, "mconala_ja", {**_figures(), "student": {"score": 9.0}})
    assert pipeline.kept_figures(slower, "mconala_ja") is None
    assert pipeline.kept_figures(smollm2, "mconala_ja")["student"] == {"score": 9.0}
    assert pipeline.kept_figures(default, "mconala_ja")["student"] == {"score": 13.1}
    assert pipeline.kept_path(slower, "mconala_ja").name == (
        "mconala_ja-HuggingFaceTB--SmolLM2-lr2e-05.json"
    )
    by_loss = _args(tmp_path, eval_steps=5, keep_best_by="loss")
    assert pipeline.kept_figures(by_loss, "mconala_ja") is None
    assert pipeline.kept_path(by_loss, "mconala_ja").name == "mconala_ja-eval5-by-loss.json"
    span_first = _args(tmp_path, span_first=True)
    assert pipeline.kept_figures(span_first, "squad") is None
    assert pipeline.kept_path(span_first, "squad").name == "squad-span-first.json"
    passage_first = _args(tmp_path, passage_first=True)
    assert pipeline.kept_path(passage_first, "squad").name == "squad-passage-first.json"
    assert pipeline.sizes(passage_first)["passage_first"] is True
    shown = _args(tmp_path, prompt_demonstrations=6)
    assert pipeline.kept_figures(shown, "mconala_ja") is None
    assert pipeline.kept_path(shown, "mconala_ja").name == "mconala_ja-demos6.json"
    assert "span_first" not in pipeline.sizes(default)  # the default's sizes as they were
    assert "prompt_demonstrations" not in pipeline.sizes(default)
    assert "passage_first" not in pipeline.sizes(default)
    assert "invariants" not in pipeline.sizes(default)
    rules = tmp_path / "rules.json"
    rules.write_text('{"output_key_kinds": 0.0}')
    given = _args(tmp_path, invariants=rules)
    assert pipeline.kept_figures(given, "temporal") is None
    pipeline.keep(given, "temporal", {**_figures(), "task": "temporal"})
    assert pipeline.kept_figures(given, "temporal") is not None
    assert pipeline.kept_path(given, "temporal").name.startswith("temporal-rules")
    rules.write_text('{"output_key_kinds": 0.2}')  # the same file, other rules
    assert pipeline.kept_figures(given, "temporal") is None


def test_figures_are_reused_only_by_the_commit_that_measured_them_with_nothing_uncommitted(
    tmp_path, commit
):
    args = _args(tmp_path)
    pipeline.keep(args, "mconala_ja", _figures())
    commit[0] = "def5678"  # the generator changed since
    assert pipeline.kept_figures(args, "mconala_ja") is None
    commit[0] = "def5678 + uncommitted changes"
    pipeline.keep(args, "mconala_ja", _figures())
    assert pipeline.kept_figures(args, "mconala_ja") is None  # which changes, nobody knows


def test_a_failed_or_unscored_task_is_not_kept_so_the_next_run_measures_it(tmp_path):
    args = _args(tmp_path)
    pipeline.keep(args, "squad", _figures(state="failed"))
    pipeline.keep(args, "temporal", _figures(scored=False))
    assert pipeline.kept_figures(args, "squad") is None
    assert pipeline.kept_figures(args, "temporal") is None


def test_a_run_with_every_task_kept_starts_no_stack(tmp_path, monkeypatch):
    args = _args(tmp_path, tasks=["mconala_ja"])
    pipeline.keep(args, "mconala_ja", _figures())

    def no_stack(*_: object) -> None:
        raise AssertionError("the stack was started")

    monkeypatch.setattr(pipeline, "measure_tasks", no_stack)
    (figures,) = pipeline.measure(args)
    assert figures["task"] == "mconala_ja" and "kept_from" in figures
