"""Repeated answers: does capping how often one output repeats make a better student?

A teacher repeats the answers it knows: the paper's generated SQuAD set (gpt-3.5-turbo) answers
"Jupiter" to 474 of its 5,000 questions, and a student trained on its first 2,000 learned the
common answers rather than to find the span. The generator now caps each open output's share
(``p2m.generator.output_share``). Two arms, trained alike and scored on the task's dev half with
the paper's metric, over several seeds:

- ``as generated``: the first ``--train-limit`` examples of the paper's generated set;
- ``capped``: the generated set walked in order, an example skipped when its output already has
  its cap at ``--share``, until as many are kept: what the generator keeps with the cap on.

    .venv/bin/python bench/output_share.py [--task squad] [--train-limit 1000] [--share 0.02]
        [--eval-limit 200] [--epochs 1] [--seeds 1,2] [--precision auto] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import benchkit
import paperdata
from paper import student_on_dev

from p2m.common.types import Example, TaskSpec
from p2m.generator.output_share import DEFAULT_SHARE, OutputCounts
from p2m.trainer.options import TrainOptions

ARMS = ("as generated", "capped")
QUICK = {"train_limit": 12, "eval_limit": 4, "epochs": 1, "max_steps": 2, "seeds": "1"}


def outputs_of(rows: list[Example]) -> dict[str, Any]:
    """How the rows' outputs spread: distinct, the commonest and its share."""
    counts = OutputCounts(row.output for row in rows)
    common = Counter(row.output for row in rows).most_common(3)
    return {
        "distinct": len({row.output for row in rows}),
        "commonest_share": round(counts.commonest_share(), 3),
        "commonest": [[output, n] for output, n in common],
    }


def train_and_score(
    args: argparse.Namespace, work: Path, task: TaskSpec, arm: str, rows: list[Example], seed: int
) -> dict[str, Any]:
    """Train the student on ``rows`` (arm ``arm``) with ``seed``; its score on the dev half."""
    options = TrainOptions(
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=8,
        seed=seed,
        precision=args.precision,
    )
    return {"seed": seed, **student_on_dev(args, work, task, rows, arm, options)}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Both arms' training sets, then each trained and scored once per seed."""
    task = paperdata.task_spec(args.shared_data, args.task)
    pool = paperdata.generated(args.shared_data, args.task, paperdata.POOL)
    args.metric = paperdata.PAPER[args.task].metric
    args.dev = paperdata.dev(args.shared_data, args.task, args.eval_limit)
    sets = {
        "as generated": pool[: args.train_limit],
        "capped": paperdata.capped(pool, task, args.train_limit, args.share),
    }
    seeds = [int(seed) for seed in args.seeds.split(",")]
    arms: dict[str, Any] = {}
    for arm in ARMS:
        rows = sets[arm]
        runs = [train_and_score(args, work, task, arm, rows, seed) for seed in seeds]
        scores = [run["dev"]["score"] for run in runs]
        arms[arm] = {
            "examples": len(rows),
            "outputs": outputs_of(rows),
            "runs": runs,
            "mean": round(statistics.fmean(scores), 2),
        }
    return {
        "task": args.task,
        "metric": args.metric,
        "share": args.share,
        "epochs": args.epochs,
        "precision": args.precision,
        "dev_examples": len(args.dev),
        "dev_rows": paperdata.DEV_ROWS,
        "arms": arms,
    }


def show(figures: dict[str, Any]) -> None:
    """The figures for people."""
    print(f"machine: {benchkit.machine_line(figures['machine'])}")
    print(f"{figures['task']}, cap {figures['share']:.0%}, {figures['epochs']} epoch(s)")
    header = f"{'arm':<14}{'examples':>9}{'distinct':>9}{'top share':>10}"
    print(f"{header}{figures['metric'] + ' by seed':>22}{'mean':>8}")
    for arm, entry in figures["arms"].items():
        outputs = entry["outputs"]
        by_seed = " / ".join(str(run["dev"]["score"]) for run in entry["runs"])
        print(
            f"{arm:<14}{entry['examples']:>9}{outputs['distinct']:>9}"
            f"{outputs['commonest_share']:>10.0%}{by_seed:>22}{entry['mean']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", choices=paperdata.TASKS, default="squad")
    parser.add_argument("--train-limit", type=int, default=1000, help="training examples")
    parser.add_argument("--share", type=float, default=DEFAULT_SHARE, help="the cap")
    parser.add_argument("--eval-limit", type=int, default=200, help="dev examples")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="stop training here (0: none)")
    parser.add_argument("--seeds", default="1,2", help="comma-separated training seeds")
    parser.add_argument(
        "--precision", default="auto", help="training arithmetic (the same in both arms)"
    )
    parser.add_argument("--max-output-tokens", type=int, default=64)
    args = benchkit.parse_arguments(parser, QUICK)
    load_start = benchkit.load_average()
    with tempfile.TemporaryDirectory(prefix="p2m-bench-share-", ignore_cleanup_errors=True) as t:
        figures = measure(args, Path(t))
    benchkit.finish("output_share", args, load_start, figures, show)


if __name__ == "__main__":
    main()
