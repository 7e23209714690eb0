"""bench/report.py: the plan of bench processes a report run starts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report


def _plan(*argv: str, tmp_path: Path) -> list[tuple[str, list[str]]]:
    args = report.parser().parse_args(["--only", "curves", *argv])
    shared, models, curves = tmp_path / "shared", tmp_path / "models", tmp_path / "curves"
    return report.planned(args, ["curves"], ["mconala_ja"], shared, models, curves, tmp_path)


def test_each_curves_student_gets_its_own_run_and_folder(tmp_path):
    plan = _plan("--students", "smollm2,qwen", "--curves-epochs", "1", tmp_path=tmp_path)
    assert [name for name, _ in plan] == ["curves:mconala_ja", "curves:mconala_ja:qwen"]
    (_, default), (_, qwen) = plan
    flag = {argv[i]: argv[i + 1] for argv in [qwen] for i in range(len(argv) - 1)}
    assert flag["--student"] == "qwen" and flag["--epochs"] == "1"
    assert flag["--data-dir"] == str(tmp_path / "curves" / "mconala_ja-qwen")
    assert default[default.index("--data-dir") + 1] == str(tmp_path / "curves" / "mconala_ja")


def test_the_curves_bench_keeps_its_own_epochs_unless_told(tmp_path):
    ((_, argv),) = _plan(tmp_path=tmp_path)
    assert "--epochs" not in argv and argv[argv.index("--student") + 1] == "smollm2"
