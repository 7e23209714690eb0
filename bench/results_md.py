"""RESULTS.md from the benches' outcomes: a header, a section per bench, the runs.

Sections of benches a run did not run can be kept from the RESULTS.md before it (``merged``),
each marked with the earlier run it came from.
"""

from __future__ import annotations

import functools
import re
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchkit
import paperdata
from outcomes import FOREIGN_NOISY_CORES, Outcome

ROOT = Path(__file__).resolve().parent.parent

EARLIER_MARK = "_From an earlier report run"
EARLIER_RUNS = "Runs of the earlier report run"


def write(
    path: Path, context: dict[str, Any], outcomes: list[Outcome], earlier: str | None = None
) -> None:
    """Render and write RESULTS.md (atomically); with ``earlier``, keep its other sections."""
    text = render(context, outcomes)
    if earlier:
        text = merged(text, earlier)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def merged(text: str, earlier: str) -> str:
    """``text`` followed by the sections of ``earlier`` it does not have, each marked as such.

    An earlier "## Runs" table is renamed after its run (its title says which, so it takes no
    mark) and kept while a section of that run is; a section kept before keeps its mark.
    """
    head, sections = split_sections(text)
    earlier_head, earlier_sections = split_sections(earlier)
    run = earlier_run(earlier_head)
    kept = []
    for title, body in earlier_sections.items():
        if title == "Runs":
            title = f"{EARLIER_RUNS} ({run})"
        if title in sections:
            continue
        if title.startswith(EARLIER_RUNS):  # marked by older reports: drop the mark
            body = re.sub(rf"\n{EARLIER_MARK}[^\n]*\n", "", body, count=1)
        elif not body.lstrip().startswith(EARLIER_MARK):
            body = f"\n{EARLIER_MARK}: {run}._\n{body}"
        kept.append((title, f"## {title}\n{body}"))
    figures = "".join(section for title, section in kept if not title.startswith(EARLIER_RUNS))
    if not figures:
        return text  # every bench ran again: no earlier run's table is needed
    kept = [  # an earlier run's table only while a section of that run is kept
        (title, section) for title, section in kept if _run_of_table(title) in figures
    ]
    note = (
        "> **Merged**: this run ran some of the benches (`--only`); the sections marked "
        f"*{EARLIER_MARK.strip('_')}* were kept from the RESULTS.md before it.\n\n"
    )
    ours = "".join(f"## {t}\n{b}" for t, b in sections.items())
    return (head + note + ours + "".join(section for _, section in kept)).rstrip() + "\n"


def _run_of_table(title: str) -> str:
    """The run an earlier run's table names in its title ("" for any other section)."""
    if not title.startswith(EARLIER_RUNS):
        return ""
    return title.removeprefix(f"{EARLIER_RUNS} (").removesuffix(")")


def split_sections(text: str) -> tuple[str, dict[str, str]]:
    """The text before the first "## " heading, and each section's body by its title."""
    parts = text.split("\n## ")
    sections = {}
    for part in parts[1:]:
        title, _, body = part.partition("\n")
        sections[title.strip()] = body.rstrip("\n") + "\n\n"  # a blank line before the next
    return parts[0] + "\n", sections


def earlier_run(head: str) -> str:
    """The start date and commit a RESULTS.md header names ("unknown" parts where it names none)."""
    started = re.search(r"Started (\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC", head)
    commit = re.search(r"- commit: `([0-9a-f]+)( \+ uncommitted changes)?`", head)
    return (
        f"started {started.group(1) if started else 'unknown'} UTC, commit "
        f"`{''.join(commit.groups('')) if commit else 'unknown'}`"
    )


def render(context: dict[str, Any], outcomes: list[Outcome]) -> str:
    """The whole RESULTS.md."""
    by_name = {o.name: o for o in outcomes}
    lines = header(context, outcomes)
    if "pipeline" in by_name:
        lines += pipeline_section(by_name["pipeline"])
    if "teacher" in by_name:
        lines += teacher_section(by_name["teacher"])
    if "judge" in by_name:
        lines += judge_section(by_name["judge"])
    if "output_share" in by_name:
        lines += output_share_section(by_name["output_share"])
    papers = [o for o in outcomes if o.name.startswith("paper:")]
    if papers:
        lines += paper_section(papers, context)
        lines += agreement_section(papers, context)
    for outcome in outcomes:
        if outcome.name.startswith("curves:"):
            lines += curves_section(outcome)
    for name, section in (
        ("retrieval", retrieval_section),
        ("generation", generation_section),
        ("training", training_section),
        ("serving", serving_section),
    ):
        if name in by_name:
            lines += section(by_name[name])
    lines += runs_section(outcomes)
    return "\n".join(lines).rstrip() + "\n"


def header(context: dict[str, Any], outcomes: list[Outcome]) -> list[str]:
    """Title, provenance and the machine."""
    started = context["started"]
    finished = context.get("finished")
    state = (
        f"finished {finished:%Y-%m-%d %H:%M} UTC"
        if finished
        else f"**in progress** ({sum(o.status != 'pending' for o in outcomes)} of "
        f"{len(outcomes)} benches done)"
    )
    machine = context["machine"]
    load_end = context.get("load_end")
    lines = [
        "# Results",
        "",
        "<!-- Generated by bench/report.py; do not edit by hand: run `make results` "
        "(QUICK=1 for CI-sized runs). -->",
        "",
        f"Generated by `bench/report.py`, not written by hand. Started "
        f"{started:%Y-%m-%d %H:%M} UTC, {state}.",
        "",
        f"- command: `{context['command']}`",
        f"- commit: `{context['commit']}`",
        f"- machine: {machine['cpu']} ({machine['arch']}), {machine['cores']} cores, "
        f"{machine['ram_gib']} GiB RAM, {machine['gpu'] or 'no GPU'}; Python "
        f"{machine['python']}, torch {machine['torch'] or '-'}",
        f"- load average (1/5/15 min): {fmt_load(context['load_start'])} at the start"
        + (f", {fmt_load(load_end)} at the end" if load_end else ""),
    ]
    if context["quick"]:
        lines += [
            "",
            "> **Made with `--quick`**: CI-sized runs (a handful of examples, a few training "
            "steps, seconds of load). These figures show that every benchmark runs end to end; "
            "they are far too small to say anything about quality or speed. `make results` "
            "(without QUICK) gives the real ones.",
        ]
    noisy = [o.name for o in outcomes if o.status != "pending" and o.noisy]
    if noisy:
        lines += [
            "",
            f"> **Shared machine**: other processes used more than {FOREIGN_NOISY_CORES} cores "
            f"on average while {', '.join(noisy)} ran; "
            "those figures are noisy, timings most of all. Each bench's share is in the last "
            "section.",
        ]
    return [*lines, ""]


def paper_section(papers: list[Outcome], context: dict[str, Any]) -> list[str]:
    """The paper's three tasks: student and teacher, dev and generated holdout, paper figures."""
    lines = [
        "## The paper's three tasks",
        "",
        "The student (SmolLM2-135M fine-tuned with Ray Train on the first N examples of the "
        "paper's own generated set, gpt-3.5-turbo output) and the teacher (the embedded llama.cpp "
        "endpoint, prompted with the task's instruction and demonstrations through the "
        "evaluator) on the same dev examples of the real test set, and on a generated holdout "
        "(the generated examples after the N used for training). Scores in the paper's metric: "
        "Exact Match (0-100) for SQuAD, ChrF++ for Temporal and MCoNaLa. The paper's figures are "
        "on the full test sets with gpt-3.5-turbo as teacher and a retrieved T5 as student, so "
        "compare them as orders of magnitude, not digit by digit.",
        "",
        "| task | metric | student dev | teacher dev | student gen. holdout | "
        "teacher gen. holdout | paper gpt-3.5-turbo | paper Prompt2Model | sizes (train / "
        "holdout / dev) | teacher | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for outcome in papers:
        task = outcome.name.split(":", 1)[1]
        paper = paperdata.PAPER[task]
        f = outcome.figures
        if f is None:
            lines.append(
                f"| {task} | {paper.metric} | {outcome.status} | | | | {paper.paper_teacher} | "
                f"{paper.paper_student} | | | |"
            )
            failures.append(outcome)
            continue
        teacher = f.get("teacher") or {}
        sizes = f["sizes"]
        lines.append(
            f"| {task} | {f['metric']} | {cell(f['student'].get('dev'))} | "
            f"{cell(teacher.get('dev'))} | {cell(f['student'].get('holdout'))} | "
            f"{cell(teacher.get('holdout'))} | {f['paper_gpt35']} | {f['paper_prompt2model']} | "
            f"{sizes['train']} / {sizes['holdout']} / {sizes['dev']} | "
            f"{f.get('teacher_model') or 'none'} | {fmt_load(f['load_avg_end'])} |"
        )
    lines.append("")
    details = []
    for outcome in papers:
        f = outcome.figures
        if f is None:
            continue
        training = f["training"]
        details.append(
            f"- {f['task']}: trained {training['steps']} steps ({f['epochs']} epoch(s)"
            + (f", at most {f['max_steps']} steps" if f["max_steps"] else "")
            + f") in {training['wall_s']:.0f} s, {training['examples_per_s']} examples/s, final "
            f"loss {training['final_loss']}; student latency p50 "
            f"{f['student']['dev']['latency_p50_ms']:.0f} ms per example, "
            f"{f['model_size_mb']} MB; both decode at most {f['max_output_tokens']} tokens; dev "
            f"examples {dev_rows(f)}; "
            f"ran on {benchkit.machine_line(f['machine'])}."
        )
    if details:
        lines += [*details, ""]
    worst = worst_lines(papers)
    if worst:
        lines += [
            "The lowest-scoring dev example of each (what the scores are made of):",
            "",
            *worst,
            "",
        ]
    for outcome in failures:
        lines += failure_block(outcome)
    return lines


def worst_lines(papers: list[Outcome]) -> list[str]:
    """One line per task and subject: the worst dev example's input, prediction and reference."""
    lines = []
    for outcome in papers:
        f = outcome.figures
        if f is None:
            continue
        for subject in ("student", "teacher"):
            entry = (f.get(subject) or {}).get("dev") or {}
            worst = entry.get("worst")
            if worst:
                lines.append(
                    f"- {f['task']}, {subject}: {short(worst['input'], 60)} -> "
                    f"{short(worst['prediction'], 50)} (reference {short(worst['reference'], 50)})"
                )
    return lines


def short(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters, as inline code."""
    flat = " ".join(text.split())
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    return "`" + flat.replace("`", "'") + "`" if flat else "(empty)"


def cell(entry: dict[str, Any] | None) -> str:
    """A score cell: the score and (n), or why there is none."""
    if entry is None:
        return "-"
    if "error" in entry:
        return "failed"
    return f"{entry['score']:.1f} (n={entry['examples']})"


def agreement_section(papers: list[Outcome], context: dict[str, Any]) -> list[str]:
    """How well the score on generated data predicts the score on the real dev half."""
    rows = []
    for outcome in papers:
        f = outcome.figures
        if f is None:
            continue
        student = f["student"]
        teacher = f.get("teacher") or {}
        row = {
            "task": f["task"],
            "metric": f["metric"],
            "dev": student["dev"]["score"],
            "holdout": student["holdout"]["score"],
            "n_dev": student["dev"]["examples"],
            "n_holdout": student["holdout"]["examples"],
            "teacher_dev": score_of(teacher.get("dev")),
            "teacher_holdout": score_of(teacher.get("holdout")),
            "overlap": overlap_of(f, context),
        }
        rows.append(row)
    lines = [
        "## Does generated data estimate the real score?",
        "",
        "The paper's claim: a held-out slice of the generated data gives a usable estimate of "
        "the student's quality before deployment. Per task, the student's score on the "
        "generated holdout beside its score on the real dev half; and whether the holdout picks "
        "the same winner between student and teacher as the dev half does. The last two "
        "columns say how much of the holdout the training set already shows: holdout inputs "
        "whose word trigrams overlap a training input's by a Jaccard index of 0.5 or more, and "
        "holdout outputs found verbatim among the training outputs.",
        "",
    ]
    if not rows:
        return [*lines, "No paper task finished, so there is nothing to compare.", ""]
    lines += [
        "| task | metric | student holdout | student dev | holdout - dev | teacher holdout | "
        "teacher dev | winner on holdout | winner on dev | holdout inputs near a training "
        "input | holdout outputs seen in training |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        overlap = r["overlap"]
        lines.append(
            f"| {r['task']} | {r['metric']} | {r['holdout']:.1f} | {r['dev']:.1f} | "
            f"{r['holdout'] - r['dev']:+.1f} | {fmt_score(r['teacher_holdout'])} | "
            f"{fmt_score(r['teacher_dev'])} | {winner(r['holdout'], r['teacher_holdout'])} | "
            f"{winner(r['dev'], r['teacher_dev'])} | "
            + (
                f"{overlap['near_duplicate_inputs']:.0%} | {overlap['outputs_seen']:.0%} |"
                if overlap
                else "- | - |"
            )
        )
    lines.append("")
    lines += agreement_summary(rows, context)
    return [*lines, ""]


def agreement_summary(rows: list[dict[str, Any]], context: dict[str, Any]) -> list[str]:
    """What the agreement numbers say, in words computed from them."""
    diffs = [r["holdout"] - r["dev"] for r in rows]
    over = sum(d > 0 for d in diffs)
    mean_abs = sum(abs(d) for d in diffs) / len(diffs)
    out = [
        f"- Mean absolute gap between holdout and dev: {mean_abs:.1f} points over "
        f"{len(rows)} task(s); the holdout is higher on {over} and lower on "
        f"{len(rows) - over}."
    ]
    if len(rows) >= 2:
        rho = spearman([r["holdout"] for r in rows], [r["dev"] for r in rows])
        rho_text = "undefined (tied scores)" if rho is None else f"{rho:+.2f}"
        out.append(
            f"- Rank agreement across tasks (Spearman, student holdout vs dev): {rho_text} over "
            f"{len(rows)} tasks. With so few tasks, and Exact Match beside ChrF++, this is a "
            "sketch, not a statistic."
        )
    decided = [r for r in rows if r["teacher_dev"] is not None and r["teacher_holdout"] is not None]
    if decided:
        same = sum(
            winner(r["holdout"], r["teacher_holdout"]) == winner(r["dev"], r["teacher_dev"])
            for r in decided
        )
        out.append(
            f"- Student-vs-teacher winner: the holdout names the same winner as the dev half on "
            f"{same} of {len(decided)} task(s). (The holdout's references are gpt-3.5-turbo "
            "output, so a teacher that imitates gpt-3.5-turbo well gains there without being "
            "right.)"
        )
    overlaps = [r["overlap"] for r in rows if r["overlap"]]
    if overlaps:
        near = sum(o["near_duplicate_inputs"] for o in overlaps) / len(overlaps)
        seen = sum(o["outputs_seen"] for o in overlaps) / len(overlaps)
        out.append(
            f"- Overlap: on average {near:.0%} of the holdout inputs are near-duplicates of a "
            f"training input and {seen:.0%} of the holdout outputs occur verbatim in training"
            + (
                ": the generated sets repeat themselves (the same question over reworded "
                "contexts), so a slice of them held out is partly seen data."
                if near >= 0.25
                else "."
            )
        )
    smallest = min(min(r["n_dev"], r["n_holdout"]) for r in rows)
    if context["quick"] or smallest < 50:
        out.append(
            f"- Honest reading: with as few as {smallest} examples per score (and a student "
            "trained for a few steps only under --quick), gaps of this size are within sampling "
            "noise; these rows show that the comparison is computed, not whether the claim "
            "holds."
        )
    else:
        verdict = (
            "the holdout tracks the dev score closely"
            if mean_abs <= 5
            else "the holdout is a loose estimate of the dev score"
            if mean_abs <= 15
            else "the holdout does not estimate the dev score well"
        )
        out.append(
            f"- Reading: on these sizes (at least {smallest} examples per score) {verdict} "
            f"(mean gap {mean_abs:.1f} points); generated data shares the teacher's style and "
            "errors, so a gap that is mostly positive means it flatters the student."
        )
    return out


def overlap_of(figures: dict[str, Any], context: dict[str, Any]) -> dict[str, float] | None:
    """``paperdata.holdout_overlap`` of the split this paper run used (None without the data)."""
    shared = context.get("shared")
    sizes = figures["sizes"]
    if not shared or not sizes["holdout"]:
        return None
    try:
        rows = paperdata.generated(Path(shared), figures["task"], sizes["train"] + sizes["holdout"])
    except OSError:
        return None
    return paperdata.holdout_overlap(rows[: sizes["train"]], rows[sizes["train"] :])


def score_of(entry: dict[str, Any] | None) -> float | None:
    """The score of an entry, None when missing or failed."""
    if not entry or "error" in entry:
        return None
    return float(entry["score"])


def winner(student: float, teacher: float | None) -> str:
    """Which of the two scored higher ("-" without a teacher score)."""
    if teacher is None:
        return "-"
    if student == teacher:
        return "tie"
    return "student" if student > teacher else "teacher"


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when a side is constant."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = sum((a - mx) ** 2 for a in rx) ** 0.5
    sy = sum((b - my) ** 2 for b in ry) ** 0.5
    if sx == 0 or sy == 0:
        return None
    return sxy / (sx * sy)


SectionBody = Callable[[dict[str, Any]], list[str]]


def section(title: str) -> Callable[[SectionBody], Callable[[Outcome], list[str]]]:
    """One bench's section: the heading, then ``body(figures)``, or why the bench gave none."""

    def wrap(body: SectionBody) -> Callable[[Outcome], list[str]]:
        @functools.wraps(body)
        def render_section(outcome: Outcome) -> list[str]:
            head = [f"## {title}", ""]
            if outcome.figures is None:
                return head + failure_block(outcome)
            return head + body(outcome.figures)

        return render_section

    return wrap


def curves_section(outcome: Outcome) -> list[str]:
    """One task's full-size training: the dev score as it learned, and the PNG of its curves.

    The outcome is named ``curves:<task>`` for the default student, ``curves:<task>:<student>``
    for another one, which gets its own section.
    """
    _, task, *student = outcome.name.split(":")
    title = ", ".join([task, *student])
    head = [f"## Learning curves: {title}", ""]
    f = outcome.figures
    if f is None:
        return head + failure_block(outcome)
    model = str(f.get("student", "HuggingFaceTB/SmolLM2-135M")).split("/")[-1]
    options = f["options"]
    scale = 100.0 if f["metric"] == "exact_match" else 1.0
    key = "exact_match" if f["metric"] == "exact_match" else "chrf"
    took = f"{f['wall_s']} s"
    runtime = f.get("final_dev_runtime")
    served = f", decoded as the model server serves it ({runtime})" if runtime else ""
    if f["cached"]:
        took = f"{took} in its first run" if f["wall_s"] else "trained earlier: this report read it"
    share = f.get("share", 0.0)
    examples = (
        f"the first {f['train']} of the paper's generated {task} examples that the generator's "
        f"output-share cap keeps (no output above {share:.0%} of them, as the generator keeps "
        "by default)"
        if share
        else f"the first {f['train']} of the paper's generated {task} examples"
    )
    lines = [
        *head,
        f"{model} trained on {examples} for {options['epochs']} "
        f"epoch{'' if options['epochs'] == 1 else 's'} (learning rate "
        f"{options['learning_rate']}, batch {options['batch_size']}, forward pass in "
        f"{f.get('precision', 'fp32')}, {f['steps']} steps, {f['examples_per_s']} examples/s, "
        f"{took}); every {options['eval_steps']} "
        f"steps and at each epoch's end {f['dev']} dev examples ({dev_rows(f)}) were decoded "
        "greedily, watching only (the last weights are kept, nothing stops early). "
        f"Final model on the same dev examples{served}: **{f['final_dev_score']}** "
        f"({f['metric']}); the paper: gpt-3.5-turbo {f['paper_gpt35']}, its Prompt2Model student "
        f"{f['paper_prompt2model']}. Ran on {benchkit.machine_line(f['machine'])}.",
        "",
        "| step | examples seen | epoch | dev loss | dev score |",
        "|---|---|---|---|---|",
    ]
    for v in f["validations"]:
        score, loss = v.get(key), v.get("eval_loss")
        lines.append(
            f"| {v['step']} | {v['examples_seen']} | {v['epoch']:.2f} | "
            f"{'-' if loss is None else f'{loss:.4f}'} | "
            f"{'-' if score is None else round(score * scale, 2)} |"
        )
    png = Path(f["png"]).name
    lines += ["", f"![{title} learning curves](bench/figures/{png})", ""]
    return lines


@section("Dataset retrieval (DataFinder)")
def retrieval_section(f: dict[str, Any]) -> list[str]:
    """Dataset retrieval on DataFinder."""
    lines = [
        f"{f['queries']} DataFinder dev queries over {f['documents']} Papers-with-Code dataset "
        f"descriptions, encoder {f['encoder']}; index built in {f['index_build_s']:.0f} s. "
        f"Ran on {benchkit.machine_line(f['machine'])}; load {fmt_load(f['load_avg_start'])} "
        f"-> {fmt_load(f['load_avg_end'])}.",
        "",
        "| method | recall@5 | recall@10 | MRR | MAP |",
        "|---|---|---|---|---|",
    ]
    for method, m in f["methods"].items():
        lines.append(
            f"| {method} | {m['recall@5']:.3f} | {m['recall@10']:.3f} | {m['mrr']:.3f} | "
            f"{m['map']:.3f} |"
        )
    latency = f["fused_latency_ms"]
    lines += [
        "",
        f"Default search latency: p50 {latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms.",
        "",
    ]
    lines += rerank_lines(f.get("rerank"))
    prompts = f.get("prompts") or []
    if prompts:
        in_top5 = sum(1 for p in prompts if p["rank"] and p["rank"] <= 5)
        lines += [
            f"Test prompts (tests/data/dataset_prompts.json) and the paper's SQuAD prompt over the "
            f"Hugging Face catalog: the usual dataset in the top 5 for {in_top5} of "
            f"{len(prompts)}.",
            "",
            "| prompt | rank of its usual dataset | top 3 |",
            "|---|---|---|",
        ]
        lines += [
            f"| {p['task']} | {p['rank'] or '>100'} | {', '.join(p['top3'])} |" for p in prompts
        ]
        lines.append("")
    return lines


def rerank_lines(r: dict[str, Any] | None) -> list[str]:
    """The default ranking's top K reranked by the LLM, by the grade's weight (if measured)."""
    if not r:
        return []
    grades = ", ".join(f"{g}: {n}" for g, n in sorted(r["grades"].items()))
    p50 = r["query_seconds_p50"]
    timed = f"; p50 {p50} s a query" if p50 is not None else ""
    lines = [
        f"Reranked (`--rerank {r['candidates']}`): the default ranking's top {r['candidates']} "
        f"of every query graded 0-3 by {r['model']} (grades {grades}; {r['unjudged']} unjudged"
        f"{timed}), the grade times its weight added to the "
        f"first-stage score (the product's weight: {r['default_weight']:g}).",
        "",
        "| grade's weight | recall@5 | recall@10 | MRR | MAP |",
        "|---|---|---|---|---|",
    ]
    for weight, m in r["by_weight"].items():
        lines.append(
            f"| {weight} | {m['recall@5']:.3f} | {m['recall@10']:.3f} | {m['mrr']:.3f} | "
            f"{m['map']:.3f} |"
        )
    return [*lines, ""]


@section("The pipeline, end to end (the number the product lives by)")
def pipeline_section(f: dict[str, Any]) -> list[str]:
    """The product's own number: the paper's prompts through the gateway, scored on dev."""
    lines = [
        f"Each of the paper's prompts through the gateway with the embedded defaults (teacher "
        f"{f['teacher']}, retrieval over the catalogs, the student the model search picks from "
        f"the local store): {f['examples']} "
        f"generated examples, {f['epochs']} epoch(s), deployment skipped. The trained student "
        f"and the teacher are then scored on {f['eval_limit']} dev examples ({dev_rows(f)}). The "
        "bar is half of "
        f"gpt-3.5-turbo's paper figure, so that a win between two failures does not count. Ran "
        f"on {benchkit.machine_line(f['machine'])}.",
        "",
        "| task | student | metric | student dev | teacher dev | bar | run's own estimate | on | "
        "student on demos | generated | dropped | datasets | stage seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in f["tasks"]:
        estimate = t["run_estimate"]
        metric = "exact_match" if t["metric"] == "exact_match" else "chrf"
        scale = 100 if metric == "exact_match" else 1
        own = estimate["student"].get(metric)
        demos = estimate["student_on_demonstrations"].get(metric)
        dropped = ", ".join(f"{k} {v}" for k, v in t["generation"]["dropped"].items()) or "none"
        stages = ", ".join(f"{s['stage']} {s['seconds']:.0f}" for s in t["stages"])
        lines.append(
            f"| {t['task']} | {t.get('base_model', '').rsplit('/', 1)[-1] or '-'} | "
            f"{t['metric']} | {cell(t.get('student'))} | "
            f"{cell(t.get('teacher'))} | {t['goal']} | "
            f"{fmt_score(own * scale if own is not None else None)} | "
            f"{estimate['source'] or '-'} | "
            f"{fmt_score(demos * scale if demos is not None else None)} | "
            f"{t['generation']['accepted']}/{t['generation']['requested']} | {dropped} | "
            f"{', '.join(t['datasets']) or 'none'} | {stages} |"
        )
    lines.append("")
    for t in f["tasks"]:
        student, teacher = t.get("student") or {}, t.get("teacher") or {}
        if student.get("latency_p50_ms") and teacher.get("latency_p50_ms"):
            ratio = teacher["latency_p50_ms"] / student["latency_p50_ms"]
            runtime = f" ({student['runtime']})" if student.get("runtime") else ""
            lines.append(
                f"- {t['task']}: the student takes {student['latency_p50_ms']:.0f} ms per dev "
                f"example{runtime}, the teacher {teacher['latency_p50_ms']:.0f} ms: "
                f"{ratio:.1f}x faster (p50; both as the evaluator batches them)"
                f"{throughput(student, teacher)}."
            )
    for t in f["tasks"]:
        if kept := t.get("kept_from"):
            lines.append(
                f"- {t['task']}: measured by an earlier run of this bench, same commit and sizes "
                f"(commit `{kept['commit']}`, finished {kept['finished']}), kept in its data dir."
            )
        if t["generation"].get("cached"):
            lines.append(
                f"- {t['task']}: the generated set came from the generator's cache in the data "
                "dir (an earlier run's, same generator version, teacher, seed and size), so its "
                "generate stage shows 0 s; the training and both scores are this run's."
            )
        if t["state"] != "succeeded":
            lines.append(f"- {t['task']}: the run {t['state']}: {short(t['error'], 300)}")
        for note in t["run_estimate"]["notes"]:
            lines.append(f"- {t['task']}: {note}")
    return [*lines, ""]


def throughput(student: dict[str, Any], teacher: dict[str, Any]) -> str:
    """Each one's wall time over the whole dev half, beside the p50 ratio, which flatters.

    The teacher's requests run side by side on the same cores, each waiting on the others.
    """
    if not student.get("wall_s") or not teacher.get("wall_s"):
        return ""
    return (
        f"; the whole {student['examples']} took the student {student['wall_s']:.0f} s and the "
        f"teacher {teacher['wall_s']:.0f} s: {teacher['wall_s'] / student['wall_s']:.1f}x"
    )


@section("The teacher's request")
def teacher_section(f: dict[str, Any]) -> list[str]:
    """The embedded teachers with today's request beside the ones it replaced."""
    lines = [
        f"Each embedded model answers {f['eval_limit']} dev examples of each task "
        f"({dev_rows(f)}), at temperature 0: `chat` is the product's request (the instruction "
        "as the system message, each demonstration as a user turn answered by an assistant "
        "turn; on a closed set of labels, the answer read as the closest label), `page` the "
        "single-message request it replaced, `free` the product's request with the answer taken "
        "as written. banking77 is the real intent dataset (77 labels listed in the instruction, "
        "a seeded sample of test rows; in brackets, answers that are none of the labels). The "
        f"goal for the default teacher is {f['goal_share']}x gpt-3.5-turbo's paper figure. Ran on "
        f"{benchkit.machine_line(f['machine'])}.",
        "",
        "| model | task | metric | chat | page | free | goal | chat s | page s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in f["models"].values():
        for task, by_request in entry["tasks"].items():
            cells = [request_cell(by_request.get(r)) for r in ("chat", "page", "free")]
            paper = f["paper_gpt35"].get(task)
            goal = round(f["goal_share"] * paper, 1) if paper else "-"
            metric = paperdata.PAPER[task].metric if task in paperdata.PAPER else "exact_match"
            chat, page = by_request.get("chat", {}), by_request.get("page", {})
            lines.append(
                f"| {entry['alias']} | {task} | {metric} | {' | '.join(cells)} | {goal} | "
                f"{chat.get('wall_s', '-')} | {page.get('wall_s', '-')} |"
            )
    votes = [
        f"- {entry['alias']}, {task}: "
        + ", ".join(f"{r.removeprefix('vote@')}: {v['score']}" for r, v in voted)
        for entry in f["models"].values()
        for task, by_request in entry["tasks"].items()
        if (voted := [(r, v) for r, v in by_request.items() if r.startswith("vote@")])
    ]
    if votes:
        lines += [
            "",
            "The generator's label for the same inputs (its answer request, "
            "self-consistency samples at each temperature, the majority of those that keep the "
            "invariants), by temperature:",
            "",
            *votes,
        ]
    return [*lines, ""]


def request_cell(entry: dict[str, Any] | None) -> str:
    """A request's score, with the answers outside a closed set in brackets."""
    if not entry:
        return "-"
    outside = entry.get("outside_labels")
    return f"{entry['score']}" + (f" ({outside} outside)" if outside is not None else "")


@section("The judge")
def judge_section(f: dict[str, Any]) -> list[str]:
    """The optional judge: the student trained on what it keeps, beside all and a random set."""
    lines = [
        f"{f['teacher']} grades the first {f['graded']} examples of the paper's generated "
        f"{f['task']} set (1-5, the generator's judge request); grades {f['grades']} (0: none "
        f"given). The student is trained {f['epochs']} epoch(s) on every example, on those "
        f"graded {f['threshold']} or more ({f['kept_share']:.0%}), and on as many drawn at "
        f"random, and scored on dev examples ({dev_rows(f)}). Starting the teacher and grading "
        f"took {f['grade_s']:.0f} s. Ran on "
        f"{benchkit.machine_line(f['machine'])}.",
        "",
        *judge_eye(f.get("swapped")),
        f"| training set | examples | dev {f['metric']} | train s |",
        "|---|---|---|---|",
    ]
    for arm, entry in f["arms"].items():
        lines.append(
            f"| {arm} | {entry['examples']} | {entry['dev']['score']} | {entry['train_s']} |"
        )
    arms = f["arms"]
    if {"all", "judged", "random"} <= set(arms) and (
        arms["judged"]["examples"] == arms["all"]["examples"]
    ):
        gap = abs(arms["all"]["dev"]["score"] - arms["random"]["dev"]["score"])
        lines += [
            "",
            "The judge kept every example, so *judged* is *all* (trained once) and *random* is "
            "the same examples in another order: their gap "
            f"({gap:.1f}) is the training's own noise at this size, not the judge's doing.",
        ]
    return [*lines, ""]


@section("Repeated answers")
def output_share_section(f: dict[str, Any]) -> list[str]:
    """The student trained on the paper's generated set as it came and with each answer capped."""
    lines = [
        f"The student (SmolLM2-135M) is trained {f['epochs']} epoch(s), training precision "
        f"{f['precision']}, on the first "
        f"{f['arms']['as generated']['examples']} examples of the paper's generated {f['task']} "
        "set, and on as many walked in order with each output capped at "
        f"{f['share']:.0%} of them (the generator's `max_output_share`: what it keeps with the "
        f"cap on), then scored on {f['dev_examples']} dev examples ({dev_rows(f)}), decoded as "
        "served. Ran on "
        f"{benchkit.machine_line(f['machine'])}.",
        "",
        f"| training set | examples | distinct outputs | commonest output | dev {f['metric']} by "
        "seed | mean | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, entry in f["arms"].items():
        outputs = entry["outputs"]
        output, _ = outputs["commonest"][0] if outputs["commonest"] else ("", 0)
        scores = " / ".join(str(run["dev"]["score"]) for run in entry["runs"])
        seconds = " / ".join(f"{run['train_s']:.0f}" for run in entry["runs"])
        lines.append(
            f"| {arm} | {entry['examples']} | {outputs['distinct']} | {output} "
            f"({outputs['commonest_share']:.0%}) | {scores} | {entry['mean']} | {seconds} |"
        )
    arms = f["arms"]
    if {"as generated", "capped"} <= set(arms):
        gain = arms["capped"]["mean"] - arms["as generated"]["mean"]
        lines += ["", f"The cap moves the mean dev {f['metric']} by {gain:+.1f}."]
    return [*lines, ""]


def judge_eye(wrong: dict[str, Any] | None) -> list[str]:
    """Whether the judge tells right from wrong: the rows graded with swapped outputs."""
    if not wrong:
        return []
    return [
        f"The judge's eye: the first {wrong['graded']} rows with each output swapped for another "
        f"row's (wrong by construction) were graded {wrong['grades']}; it kept "
        f"{wrong['kept_share']:.0%} of them, against {wrong['kept_share_as_is']:.0%} of the same "
        "rows as they are.",
        "",
    ]


@section("Generation")
def generation_section(f: dict[str, Any]) -> list[str]:
    """Synthetic data generation against the local endpoint."""
    lines = [
        f"{f['examples_per_run']} Temporal examples per run from the embedded llama.cpp endpoint "
        f"serving {f['model']}{answers_note(f)}. Ran on {benchkit.machine_line(f['machine'])}.",
        "",
        "| run | examples/s | requests | duplicate rate | self-consistency agreement | load avg |",
        "|---|---|---|---|---|---|",
    ]
    for label, run in f["runs"].items():
        lines.append(
            f"| {label} | {run['examples_per_s']:.3f} | {run['requests']} | "
            f"{run['duplicate_rate']:.2f} | {run['self_consistency_agreement']:.2f} | "
            f"{fmt_load(run['load_avg'])} |"
        )
    lines += [
        "",
        f"Speed-up from concurrency: {f['speedup']:.2f}x. Duplicate rate "
        f"{f['duplicate_rate_diverse']:.2f} with diverse prompts, "
        f"{f['duplicate_rate_plain']:.2f} without.",
        "",
    ]
    return lines


def dev_rows(f: dict[str, Any]) -> str:
    """How a bench picked its dev rows: its figures say, or they predate saying (a half's head)."""
    if f.get("dev_rows") == "spread":
        return "spread over the dev half"
    return "the dev half's first rows"


def serving_inputs(f: dict[str, Any]) -> str:
    """The serving bench's timed inputs: how many, of what, picked how."""
    if f["task"].startswith("built-in"):
        return f"{f['inputs']} {f['task']}"
    return f"{f['inputs']} inputs of {f['task']} ({dev_rows(f)})"


def answers_note(f: dict[str, Any]) -> str:
    """How the generation bench's answers were made, when its figures say."""
    temperature = f.get("answer_temperature")
    if temperature is None:
        return ""
    if temperature == 0:
        return ", one greedy answer per input (nothing voted on)"
    return f", answers voted on at temperature {temperature:g}"


@section("Training")
def training_section(f: dict[str, Any]) -> list[str]:
    """Training throughput: each speed change beside the old loop."""
    lines = [
        f"Model {f['model']}, {f.get('task', 'temporal')} examples, {f['steps']} steps of "
        f"{f['batch_size_per_worker']} examples per worker. A plain PyTorch loop in the trainer's "
        "old form, with each change alone and with all of them, then the trainer through Ray "
        "Train (examples/s of the steps themselves; wall time includes loading and Ray's "
        "start; peak memory: the largest resident size of the loop's own process, and that of its "
        "steps alone, from the loaded model on). "
        f"Ran on {benchkit.machine_line(f['machine'])}.",
        "",
        "| run | examples/s | ratio to the old loop | padding share | precision | peak GB | "
        "steps' peak GB | wall s | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in f["runs"].items():
        ratio = run.get("ratio_to_old", run.get("ratio_to_plain", 0.0))
        padding = f"{run['padding_share']:.2f}" if "padding_share" in run else "-"
        peak = f"{run['peak_rss_gb']:.2f}" if "peak_rss_gb" in run else "-"
        steps_peak = f"{run['steps_peak_gb']:.2f}" if "steps_peak_gb" in run else "-"
        lines.append(
            f"| {label} | {run['examples_per_s']:.2f} | {ratio:.2f} | {padding} | "
            f"{run.get('precision', 'fp32')} | {peak} | {steps_peak} | {run['wall_s']:.0f} | "
            f"{fmt_load(run['load_avg'])} |"
        )
    return [*lines, ""]


@section("Serving")
def serving_section(f: dict[str, Any]) -> list[str]:
    """Where a student's time goes, runtime by runtime, and the model server under load."""
    if "bare" not in f:  # a run from before the runtimes were compared
        return _serving_load_only(f)
    lines = [
        f"One student, {f['model']}, on {serving_inputs(f)}, greedy, "
        f"at most {f['max_output_tokens']} new tokens, one client, one input per call, after "
        "one warm-up call. *Bare*: called in the bench's own process (llama.cpp through its "
        "GGUF export, in its own process on loopback); *v1*/*v2*: through `p2m serve-model` "
        "(KServe REST). *Same*: the share of answers identical to fp32 transformers'. Ran on "
        f"{benchkit.machine_line(f['machine'])}.",
        "",
        "| runtime | where | p50 ms | p95 ms | p99 ms | tokens/s | p50 / bare transformers | "
        "same |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = f["bare"]["transformers:f32"]["latency_ms"]["p50"]
    rows = [(label, "bare", row) for label, row in f["bare"].items()]
    for label, row in f["served"].items():
        rows += [(label, protocol, row[protocol]) for protocol in ("v1", "v2")]
    if f.get("teacher"):
        rows.append((f"teacher ({f['teacher']['model']})", "llama.cpp endpoint", f["teacher"]))
    for label, where, row in rows:
        latency = row["latency_ms"]
        tokens = f"{row['tokens_per_s']:.1f}" if row.get("tokens") else "-"
        same = f"{row['same_as_transformers']:.2f}" if "same_as_transformers" in row else "-"
        lines.append(
            f"| {label} | {where} | {latency['p50']:.0f} | {latency['p95']:.0f} | "
            f"{latency['p99']:.0f} | {tokens} | {latency['p50'] / base:.2f} | {same} |"
        )
    summary = f["summary"]
    overhead = ", ".join(f"{k} {v:.2f}x" for k, v in summary["kserve_overhead"].items())
    lines += ["", f"KServe's overhead (served p50 over the same runtime's bare p50): {overhead}."]
    if "speedup_over_teacher" in summary:
        speedup = ", ".join(f"{k} {v:.1f}x" for k, v in summary["speedup_over_teacher"].items())
        lines.append(f"The student's speed-up per example over the teacher (p50): {speedup}.")
    if f.get("scores"):
        lines += ["", "| runtime | dev examples | score | seconds (batched) |", "|---|---|---|---|"]
        for label, row in f["scores"].items():
            lines.append(
                f"| {label} | {row['examples']} | {row['metric']} {row['score']:.2f} | "
                f"{row['seconds']:.0f} |"
            )
    batching = f["batching"]
    lines += [
        "",
        f"Load: C clients sending one-input v1 requests back to back for {f['duration_s']:g} s "
        f"per row; batching on: at most {batching['max_batch_size']} requests per batch, "
        f"{batching['max_latency_ms']:g} ms wait.",
        "",
        "| runtime | batching | clients | requests/s | p50 ms | p95 ms | p99 ms | errors | "
        "requests per batch | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in f["served"].items():
        for mode in ("off", "on"):
            for level, load in row[f"load_batching_{mode}"].items():
                latency = load["latency_ms"]
                lines.append(
                    f"| {label} | {mode} | {level} | {load['requests_per_s']:.2f} | "
                    f"{latency['p50']:.0f} | {latency['p95']:.0f} | {latency['p99']:.0f} | "
                    f"{load['errors']} | {load['mean_batch_requests']:.2f} | "
                    f"{fmt_load(load['load_avg'])} |"
                )
    ready = ", ".join(f"{label} {row['ready_s']:.0f} s" for label, row in f["served"].items())
    return [*lines, "", f"Time from start to ready (GGUF export included): {ready}.", ""]


def _serving_load_only(f: dict[str, Any]) -> list[str]:
    """The earlier serving bench: one runtime under load, batching off and on."""
    lines: list[str] = []
    on = f["batching"]["on"]
    lines += [
        f"`p2m serve-model` (KServe) serving {f['model']}, at most {f['max_output_tokens']} "
        f"output tokens; {f['protocol']}; {f['duration_s']:g} s per row after one warm-up "
        f"request. Batching on: at most {on['max_batch_size']} requests per batch, "
        f"{on['max_latency_ms']:g} ms wait. Ran on {benchkit.machine_line(f['machine'])}.",
        "",
        "| batching | clients | requests/s | p50 ms | p95 ms | p99 ms | errors | requests per "
        "batch | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, result in f["results"].items():
        for level, row in result["levels"].items():
            latency = row["latency_ms"]
            lines.append(
                f"| {mode} | {level} | {row['requests_per_s']:.2f} | {latency['p50']:.0f} | "
                f"{latency['p95']:.0f} | {latency['p99']:.0f} | {row['errors']} | "
                f"{row['mean_batch_requests']:.2f} | {fmt_load(row['load_avg'])} |"
            )
    ready = ", ".join(f"{mode} {r['ready_s']:.0f} s" for mode, r in f["results"].items())
    return [*lines, "", f"Time from start to ready: {ready}.", ""]


def runs_section(outcomes: list[Outcome]) -> list[str]:
    """Every bench process: status, time, and the CPU others took meanwhile."""
    lines = [
        "## Runs",
        "",
        "Each bench ran as its own process. *Other CPU* is the CPU time every other process on "
        "the machine used while it ran, in cores on average: /proc/stat less the bench's own "
        "CPU time, which is the larger of its reaped children's and that of its session's "
        "processes and of the sessions they start (Ray's daemons and the local stack's "
        "services included) sampled every second, so approximate; above "
        f"{FOREIGN_NOISY_CORES} the bench's figures are marked noisy.",
        "",
        "| bench | status | wall s | own CPU s | other CPU (cores) | load start | load end | "
        "noisy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.status == "pending":
            lines.append(f"| {o.name} | pending | | | | | | |")
            continue
        lines.append(
            f"| {o.name} | {o.status} | {o.wall_s:.0f} | {o.own_cpu_s:.0f} | "
            f"{o.foreign_cores:.2f} | {fmt_load(o.load_start)} | {fmt_load(o.load_end)} | "
            f"{'yes' if o.noisy else 'no'} |"
        )
    lines.append("")
    for o in outcomes:
        lines.append(f"- `{o.name}`: `{' '.join(shlex.quote(display_arg(a)) for a in o.argv)}`")
    return [*lines, ""]


def display_arg(arg: str) -> str:
    """An argument as shown in RESULTS.md: paths relative to the repo, temp folders named so."""
    if arg == sys.executable:
        return "python"
    path = Path(arg)
    if path.is_absolute():
        try:
            return str(path.relative_to(ROOT))
        except ValueError:
            if str(path).startswith(tempfile.gettempdir()):
                return "<temp>"
    return arg


def failure_block(outcome: Outcome) -> list[str]:
    """A failed or timed-out bench, with the tail of its error output."""
    if outcome.status == "pending":
        return [f"*{outcome.name}: not run yet (the report is still running).*", ""]
    return [
        f"**{outcome.name}: {outcome.status}** after {outcome.wall_s:.0f} s (log "
        f"`{outcome.log}`). Last lines of its error output:",
        "",
        "```",
        outcome.error_tail.strip().replace("```", "'''"),
        "```",
        "",
    ]


def fmt_load(load: list[float] | None) -> str:
    """1/5/15-minute load averages."""
    if not load:
        return "-"
    return "/".join(f"{value:.2f}" for value in load)


def fmt_score(value: float | None) -> str:
    """A score or a dash."""
    return "-" if value is None else f"{value:.1f}"
