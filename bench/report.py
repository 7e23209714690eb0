"""Run every benchmark of bench/ and write RESULTS.md from their figures.

Each bench runs as its own process with ``--json`` (and ``--quick`` when given), one after the
other, under a time limit; its one JSON line is collected and RESULTS.md is rewritten after every
bench, so a long run can be watched and a killed one leaves what it had. A bench that fails or
runs out of time is reported as such, with the tail of its error output.

Every figure is shown with the machine it ran on and the load it ran under: beside the load
average, the report measures how much CPU *other* processes took while each bench ran (all CPU
time on the machine, from /proc/stat, less the bench's own), since on a shared machine that is
what makes a figure noisy.

    .venv/bin/python bench/report.py [--quick] [--only paper,serving] [--tasks squad,temporal]
        [--out RESULTS.md] [--render-from LOG_DIR/outcomes.json] [--curves-dir DIR]
        [--pipeline-dir DIR] [--students smollm2,qwen] [--curves-epochs N]

Each run keeps its outcomes in ``LOG_DIR/outcomes.json``; ``--render-from`` writes RESULTS.md
again from them, running nothing.

With ``--only``, the sections of the benches not run are kept from the RESULTS.md already there
(a full run takes longer than a working day: the pipeline bench alone runs for hours), each
under a line naming the earlier run it came from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchkit
import paperdata
from outcomes import Outcome, load_outcomes, save_outcomes
from results_md import write

from p2m.common.procs import signal_group

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BENCHES = (
    "retrieval",
    "generation",
    "teacher",
    "judge",
    "output_share",
    "training",
    "paper",
    "curves",
    "pipeline",
    "serving",
)
# Seconds each bench may run: (full, --quick).
TIMEOUTS = {
    "retrieval": (3600, 1200),
    "generation": (3600, 1500),
    "training": (3600, 1200),
    "paper": (6 * 3600, 1800),
    "curves": (8 * 3600, 1200),
    "teacher": (3 * 3600, 1200),
    "judge": (2 * 3600, 1200),
    "output_share": (3 * 3600, 1200),
    "pipeline": (8 * 3600, 2400),
    "serving": (1800, 900),
}
TAIL_CHARS = 2500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parser() -> argparse.ArgumentParser:
    """The command line."""
    command = argparse.ArgumentParser(description=__doc__)
    command.add_argument("--quick", action="store_true", help="CI-sized runs of every bench")
    command.add_argument(
        "--only",
        default="",
        help=f"comma-separated, of: {', '.join(BENCHES)} (other sections kept from --out)",
    )
    command.add_argument(
        "--tasks", default=",".join(paperdata.TASKS), help="the paper's tasks (paper, pipeline)"
    )
    command.add_argument("--out", type=Path, default=ROOT / "RESULTS.md")
    command.add_argument("--train-limit", type=int, default=500, help="paper: training examples")
    command.add_argument("--holdout", type=int, default=100, help="paper: generated holdout")
    command.add_argument("--eval-limit", type=int, default=100, help="paper: dev examples (0: all)")
    command.add_argument("--epochs", type=int, default=3, help="paper: training epochs")
    command.add_argument("--teacher", default="qwen", help="paper: teacher model (or none)")
    command.add_argument(
        "--pipeline-examples", type=int, default=80, help="pipeline: examples generated per task"
    )
    command.add_argument(
        "--serving-model",
        type=Path,
        help="serving: a trained student folder (default: untrained SmolLM2), scored on the dev "
        "half per runtime",
    )
    command.add_argument(
        "--rerank",
        type=int,
        default=0,
        help="retrieval: the LLM reranks the top K of every DataFinder query (0: not measured; "
        "its grades kept in LOG_DIR/retrieval-grades.jsonl, so a rerun reuses them)",
    )
    command.add_argument(
        "--students",
        default=benchkit.DEFAULT_STUDENT,
        help="curves: the shipped students to train, comma-separated (smollm2, qwen); each "
        "one other than smollm2 gets its own section",
    )
    command.add_argument(
        "--curves-epochs", type=int, help="curves: training epochs (default: the bench's own)"
    )
    command.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every limit")
    command.add_argument("--log-dir", type=Path, help="keep each bench's stderr here")
    command.add_argument(
        "--curves-dir",
        type=Path,
        help="curves: keep each task's runs in DIR/<task>, so a stopped report resumes them "
        "(default: LOG_DIR/curves)",
    )
    command.add_argument(
        "--pipeline-dir",
        type=Path,
        help="pipeline: keep its runs' data in DIR, so a stopped report resumes them from what "
        "they had, and a task that finished is not run again by the same commit at the same "
        "sizes (default: a temporary folder)",
    )
    command.add_argument(
        "--render-from",
        type=Path,
        help="run nothing: write --out again from a run's outcomes.json (kept in its log dir); "
        "with --only, the other sections are kept from --out as in a run",
    )
    command.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("P2M_SHARED_DATA", ROOT.parent / "shared" / "data")),
    )
    return command


def main() -> None:
    command = parser()
    args = command.parse_args()
    earlier = args.out.read_text(encoding="utf-8") if args.only and args.out.exists() else None
    if args.render_from is not None:
        context, outcomes = load_outcomes(args.render_from)
        write(args.out, context, outcomes, earlier)
        print(f"wrote {args.out} from {args.render_from}", file=sys.stderr)
        return
    only = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHES)
    unknown = sorted(set(only) - set(BENCHES))
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    bad_tasks = sorted(set(tasks) - set(paperdata.TASKS))
    if unknown or bad_tasks:
        command.error(f"unknown bench {unknown} or task {bad_tasks}")
    shared = args.shared_data.resolve()
    env = {**os.environ, "P2M_SHARED_DATA": str(shared)}
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        env.setdefault(key, "1")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="p2m-bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    context = {
        "started": dt.datetime.now(dt.UTC),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "commit": benchkit.git_commit(),
        "machine": benchkit.machine(),
        "load_start": benchkit.load_average(),
        "quick": args.quick,
        "log_dir": str(log_dir),
        "tasks": tasks,
        "shared": str(shared),
    }
    print(f"logs in {log_dir}; writing {args.out}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="p2m-bench-models-", ignore_cleanup_errors=True) as t:
        curves_dir = (args.curves_dir or log_dir / "curves").resolve()
        plan = planned(args, only, tasks, shared, Path(t), curves_dir, log_dir)
        outcomes = [Outcome(name, argv) for name, argv in plan]
        for outcome in outcomes:
            limit = TIMEOUTS[outcome.name.split(":")[0]][1 if args.quick else 0]
            print(
                f"running {outcome.name} (limit {limit * args.timeout_scale:.0f} s)",
                file=sys.stderr,
            )
            run_bench(outcome, env, log_dir, limit * args.timeout_scale)
            print(f"  {outcome.status} in {outcome.wall_s:.0f} s", file=sys.stderr)
            write(args.out, context, outcomes, earlier)
            save_outcomes(log_dir / "outcomes.json", context, outcomes)
    context["load_end"] = benchkit.load_average()
    context["finished"] = dt.datetime.now(dt.UTC)
    write(args.out, context, outcomes, earlier)
    save_outcomes(log_dir / "outcomes.json", context, outcomes)
    print(f"wrote {args.out}", file=sys.stderr)


def students(args: argparse.Namespace) -> list[str]:
    """The curves bench's students, in the order given."""
    return [name.strip() for name in args.students.split(",") if name.strip()]


def planned(
    args: argparse.Namespace,
    only: list[str],
    tasks: list[str],
    shared: Path,
    models: Path,
    curves: Path,
    log_dir: Path,
) -> list[tuple[str, list[str]]]:
    """(name, argv) of every bench process to run, in order."""
    quick = ["--quick"] if args.quick else []
    data = ["--shared-data", str(shared)]
    plan = []
    for name in BENCHES:
        if name not in only:
            continue
        script = str(BENCH_DIR / f"{name}.py")
        base = [sys.executable, script, "--json", *quick]
        if name == "paper":
            for task in tasks:
                sizes = (
                    []
                    if args.quick
                    else [
                        "--train-limit",
                        str(args.train_limit),
                        "--holdout",
                        str(args.holdout),
                        "--eval-limit",
                        str(args.eval_limit),
                        "--epochs",
                        str(args.epochs),
                    ]
                )
                argv = [*base, *data, "--task", task, "--teacher", args.teacher, *sizes]
                plan.append((f"paper:{task}", [*argv, "--models-dir", str(models)]))
        elif name == "curves":
            epochs = [] if args.curves_epochs is None else ["--epochs", str(args.curves_epochs)]
            for task in tasks:
                for student in students(args):
                    named = task if student == benchkit.DEFAULT_STUDENT else f"{task}:{student}"
                    kept = curves / named.replace(":", "-")
                    argv = [*base, *data, "--task", task, "--data-dir", str(kept)]
                    argv += [*epochs, "--student", student]
                    plan.append((f"curves:{named}", argv))
        elif name == "serving":
            served = [*base, *data, "--models-dir", str(models)]
            if args.serving_model is not None:
                model = ["--model", str(args.serving_model.resolve())]
                served += [*model, "--score", "10" if args.quick else "100"]
            plan.append((name, served))
        elif name == "pipeline":
            sizes = (
                []
                if args.quick
                else [
                    "--examples",
                    str(args.pipeline_examples),
                    "--epochs",
                    str(args.epochs),
                    "--eval-limit",
                    str(args.eval_limit),
                ]
            )
            teacher = "qwen" if args.teacher == "none" else args.teacher
            which = ["--tasks", ",".join(tasks)]
            kept = ["--data-dir", str(args.pipeline_dir.resolve())] if args.pipeline_dir else []
            plan.append((name, [*base, *data, "--teacher", teacher, *which, *sizes, *kept]))
        elif name == "retrieval" and args.rerank:
            cache = log_dir.resolve() / "retrieval-grades.jsonl"
            rerank = ["--rerank", str(args.rerank), "--rerank-cache", str(cache)]
            plan.append((name, [*base, *data, *rerank]))
        else:
            plan.append((name, [*base, *data]))
    return plan


def run_bench(outcome: Outcome, env: dict[str, str], log_dir: Path, limit_s: float) -> None:
    """Run one bench process under ``limit_s``; fill ``outcome`` with what it gave."""
    log_path = log_dir / f"{outcome.name.replace(':', '-')}.log"
    outcome.log = str(log_path)
    outcome.load_start = benchkit.load_average()
    cpu_before = machine_cpu_s()
    own_before = children_cpu_s()
    started = time.perf_counter()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            outcome.argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,  # its own process group: a timeout stops all of it
        )
        session = SessionCpu(proc.pid)
        session.start()
        try:
            stdout, _ = proc.communicate(timeout=limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            stop_group(proc)
            stdout, _ = proc.communicate()
            timed_out = True
        finally:
            session.stop()
    outcome.wall_s = time.perf_counter() - started
    # Reaped children roll up into RUSAGE_CHILDREN; daemons the bench starts (Ray's raylet and
    # workers) are orphaned when it stops them, so only sampling its session sees their CPU.
    outcome.own_cpu_s = max(children_cpu_s() - own_before, session.cpu_s)
    busy = machine_cpu_s() - cpu_before
    outcome.foreign_cores = max(0.0, (busy - outcome.own_cpu_s) / max(outcome.wall_s, 1e-9))
    outcome.load_end = benchkit.load_average()
    figures = last_json(stdout.decode("utf-8", errors="replace"))
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-TAIL_CHARS:]
    if timed_out:
        outcome.status = "timeout"
        outcome.error_tail = f"stopped after {limit_s:.0f} s\n{tail}"
    elif proc.returncode != 0 or figures is None:
        outcome.status = "failed"
        outcome.error_tail = f"exit status {proc.returncode}\n{tail}"
    else:
        outcome.status = "ok"
        outcome.figures = figures


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the bench's process group, SIGKILL 30 s later if it is still there."""
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        signal_group(proc.pid, sig)
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def last_json(stdout: str) -> dict[str, Any] | None:
    """The last line of ``stdout`` that is a JSON object naming its bench."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and "bench" in value:
                return value
    return None


def machine_cpu_s() -> float:
    """CPU seconds spent by everything on the machine since boot (user..steal, no idle)."""
    fields = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # less idle and iowait
    return busy / CLK_TCK


class SessionCpu(threading.Thread):
    """Samples, every second, the CPU time of every process in one session (a bench's).

    A child that starts its own session (the local stack's services, which the pipeline bench
    starts) brings that session in too, and so on down: their CPU is the bench's own.
    """

    def __init__(self, sid: int) -> None:
        super().__init__(daemon=True)
        self._sessions = {sid}
        self._seen: dict[tuple[int, str], float] = {}  # (pid, start time) -> CPU seconds
        self._done = threading.Event()

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the session's processes, each as last sampled."""
        return sum(self._seen.values())

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(1.0)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)

    def sample(self) -> None:
        processes = {}  # pid -> the fields after its name (state is fields[0])
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text(encoding="utf-8")
            except OSError:
                continue
            processes[int(entry.name)] = stat.rsplit(")", 1)[1].split()
        grew = True
        while grew:  # sessions started by a process of a followed session are followed
            parents = {pid for pid, f in processes.items() if int(f[3]) in self._sessions}
            started = {int(f[3]) for f in processes.values() if int(f[1]) in parents}
            grew = not started <= self._sessions
            self._sessions |= started
        for pid, fields in processes.items():
            if int(fields[3]) in self._sessions:
                cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
                self._seen[(pid, fields[19])] = cpu


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
