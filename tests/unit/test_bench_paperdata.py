"""bench/paperdata.py: a limited dev half is spread over a sorted file, not its first rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import paperdata


def _shared(tmp_path: Path, outputs: list[str]) -> Path:
    folder = tmp_path / "benchmarks" / "temporal"
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"input_col": f"[Posted: 2013-03-22] row {i}", "output_col": out})
        for i, out in enumerate(outputs)
    ]
    (folder / "dev.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_a_limit_takes_rows_across_a_sorted_file_in_its_order(tmp_path):
    shared = _shared(tmp_path, ["2013 == 2013"] * 6 + ["N/A"] * 4)
    rows = paperdata.dev(shared, "temporal", 5)
    assert [row.input.rsplit(" ", 1)[1] for row in rows] == ["0", "2", "4", "6", "8"]
    assert sum(row.output == "N/A" for row in rows) == 2  # the head would hold none
    assert (
        len(paperdata.dev(shared, "temporal", 0))
        == len(paperdata.dev(shared, "temporal", 99))
        == 10
    )
