"""Dataset retrieval benchmark on DataFinder (Papers-with-Code descriptions + research queries).

The 3,327 PwC dataset descriptions become a catalog of the product's shape, each with the
downloads of the Hugging Face catalog's record that has its Papers-with-Code id or name (439 of
them have one; the others' downloads are unknown, as the product treats a catalog's missing
counts). Each of the 203 dev queries is searched with the default ranking (z-scored dense and
BM25 with the popularity prior, pseudo-relevance feedback, near-identical entries collapsed) and
with each of its parts left out, reciprocal-rank fusion (the earlier default), BM25 and dense
(all-MiniLM-L6-v2) alone. Prints recall@5, recall@10, MRR and MAP side by side and the default
search's latency p50/p99. With ``--rerank K`` the teacher LLM (the configured endpoint, else the
embedded one) also grades the default ranking's top K for every query, as ``p2m datasets search
--rerank`` does, and the reranked ranking is scored at several fusion weights (``--rerank-cache``
keeps the grades, so a stopped run resumes). Then the test prompts
(tests/data/dataset_prompts.json) and the paper's SQuAD prompt are searched in the Hugging Face
catalog: where each one's usual dataset ranks (``--json``: one JSON object instead).

    .venv/bin/python bench/retrieval.py [--shared-data ../shared/data] [--quick] [--json]
        [--rerank 10 --rerank-cache grades.jsonl]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import benchkit
import paperdata

from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
from p2m.common.settings import Settings
from p2m.local_llm.provider import LLMProvider
from p2m.retriever import rerank
from p2m.retriever.catalog import load_datasets
from p2m.retriever.dataset_search import DatasetHit, DatasetSearch, FusionWeights


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def hub_downloads(hf_catalog: Path) -> dict[str, int]:
    """Downloads by normalised Papers-with-Code id and by dataset name (owner left out)."""
    downloads: dict[str, int] = {}
    with gzip.open(hf_catalog, "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record.get("downloads") is None:
                continue
            for name in (record.get("paperswithcode_id"), record["name"].split("/")[-1]):
                if name:
                    key = _key(name)
                    downloads[key] = max(downloads.get(key, 0), record["downloads"])
    return downloads


def to_catalog(documents: Path, target: Path, downloads: dict[str, int]) -> None:
    """PwC documents -> catalog lines {name, description, pretty_name, downloads}."""
    with documents.open(encoding="utf-8") as src, gzip.open(target, "wt", encoding="utf-8") as dst:
        for line in src:
            doc = json.loads(line)
            names = [doc["id"], *doc.get("variants", ())]
            known = [downloads[_key(n)] for n in names if _key(n) in downloads]
            record = {
                "name": doc["id"],
                "description": doc["contents"],
                "pretty_name": doc["id"],
                "downloads": max(known) if known else None,
            }
            dst.write(json.dumps(record) + "\n")


def gold_of(query: dict) -> set[str]:
    documents = query["documents"]
    if isinstance(documents, str):
        documents = ast.literal_eval(documents)
    return set(documents)


METRICS = ("recall@5", "recall@10", "mrr", "map")


def scores(ranked: list[str], gold: set[str]) -> dict[str, float]:
    hits = [i for i, name in enumerate(ranked) if name in gold]
    precisions = [(k + 1) / (i + 1) for k, i in enumerate(hits)]
    return {
        "recall@5": len({n for n in ranked[:5] if n in gold}) / len(gold),
        "recall@10": len({n for n in ranked[:10] if n in gold}) / len(gold),
        "mrr": 1 / (hits[0] + 1) if hits else 0.0,
        "map": sum(precisions) / len(gold) if gold else 0.0,
    }


def add_mean(total: dict[str, float], ranked: list[str], gold: set[str], queries: int) -> None:
    """Add one query's share of the mean of every metric to ``total``."""
    for name, value in scores(ranked, gold).items():
        total[name] += value / queries


def rounded(totals: dict[Any, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``totals`` as the figures hold them: keys as text, values to 4 places."""
    return {str(key): {n: round(v, 4) for n, v in total.items()} for key, total in totals.items()}


# Label -> (weights, method, collapse): the default first, then what it is measured against.
RANKINGS = {
    "fused (default)": (FusionWeights(), "fused", True),
    "fused, not collapsed": (FusionWeights(), "fused", False),
    "fused, no feedback": (FusionWeights(feedback_docs=0), "fused", True),
    "fused, no prior": (FusionWeights(popularity=0), "fused", True),
    "rrf (earlier default)": (FusionWeights(), "rrf", False),
    "bm25": (FusionWeights(), "bm25", False),
    "dense": (FusionWeights(), "dense", False),
}
DEFAULT = "fused (default)"
RERANK_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)  # the grade's weight in the fused score (0-3 grades)
PROMPTS = Path(__file__).parents[1] / "tests" / "data" / "dataset_prompts.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=100, help="ranks scored for MAP")
    parser.add_argument(
        "--rerank",
        type=int,
        default=0,
        help="the LLM grades the default ranking's top K of every query (0: not measured; slow: "
        "K requests a query)",
    )
    parser.add_argument(
        "--rerank-cache", type=Path, help="keep the grades here (JSONL); a rerun reuses them"
    )
    benchkit.common_arguments(parser, "the first 50 queries only")
    args = parser.parse_args()
    load_start = benchkit.load_average()
    encoder = SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)
    with tempfile.TemporaryDirectory() as tmp:
        figures = datafinder(args, encoder, Path(tmp))
        figures["prompts"] = everyday_prompts(args.shared_data, encoder, Path(tmp))
    figures.update(
        bench="retrieval",
        quick=args.quick,
        machine=benchkit.machine(),
        load_avg_start=load_start,
        load_avg_end=benchkit.load_average(),
        encoder=SHIPPED_ENCODER_NAME,
        depth=args.depth,
    )
    if args.json:
        benchkit.emit(figures)
        return
    show(figures)


def datafinder(args: argparse.Namespace, encoder: SentenceEncoder, tmp: Path) -> dict:
    """Each ranking's recall@5/@10, MRR and MAP over the dev queries, and the default's latency."""
    folder = args.shared_data / "retrieval"
    queries = [json.loads(line) for line in (folder / "datafinder_queries_dev.jsonl").open()]
    queries = [q for q in queries if gold_of(q)]  # a few queries have no judged dataset
    queries = queries[:50] if args.quick else queries
    catalog_path = tmp / "pwc.jsonl.gz"
    downloads = hub_downloads(args.shared_data / "catalogs" / "hf_datasets.jsonl.gz")
    to_catalog(folder / "pwc_documents.jsonl", catalog_path, downloads)
    catalog = load_datasets(catalog_path)
    started = time.monotonic()
    DatasetSearch(catalog, encoder, tmp / "cache")  # the index: embeddings, then cached
    build_s = time.monotonic() - started
    searches = {
        w: DatasetSearch(catalog, encoder, tmp / "cache", w) for w, _, _ in RANKINGS.values()
    }
    totals = {label: dict.fromkeys(METRICS, 0.0) for label in RANKINGS}
    latencies = []
    default_hits = []  # each query's default ranking, for the reranking
    for query in queries:
        gold = gold_of(query)
        for label, (weights, method, collapse) in RANKINGS.items():
            started = time.monotonic()
            hits = searches[weights].search(query["query"], args.depth, method, collapse).hits
            if label == DEFAULT:
                latencies.append((time.monotonic() - started) * 1000)
                default_hits.append(hits)
            add_mean(totals[label], [h.entry.name for h in hits], gold, len(queries))
    latencies.sort()
    reranked = (
        asyncio.run(rerank_datafinder(args, queries, default_hits, tmp)) if args.rerank else None
    )
    return {
        "queries": len(queries),
        "documents": len(catalog.records),
        "index_build_s": round(build_s, 2),
        "methods": rounded(totals),
        "fused_latency_ms": {
            "p50": round(statistics.median(latencies), 2),
            "p99": round(benchkit.percentile(latencies, 0.99), 2),
        },
        "rerank": reranked,
    }


async def rerank_datafinder(
    args: argparse.Namespace, queries: list[dict], rankings: list[list[DatasetHit]], tmp: Path
) -> dict:
    """Each query's default ``rankings`` with the top ``args.rerank`` graded by the LLM, at each
    fusion weight."""
    cached = _cached_grades(args.rerank_cache)
    provider = LLMProvider(Settings.load(overrides={"data_dir": str(tmp / "p2m")}))
    totals = {w: dict.fromkeys(METRICS, 0.0) for w in RERANK_WEIGHTS}
    seconds, unjudged, model = [], 0, ""
    grade_counts: dict[str, int] = {}
    try:
        llm = await provider.client()
        for query, hits in zip(queries, rankings, strict=True):
            head = hits[: args.rerank]
            names = [h.entry.name for h in head]
            grades = cached.get((query["query"], tuple(names)))
            if grades is None:
                done = await rerank.rerank(llm, query["query"], head)
                by_name = {h.entry.name: h.grade for h in done.hits}
                grades = [by_name[n] for n in names]
                seconds.append(done.seconds)
                model = done.model
                _keep_grades(args.rerank_cache, query["query"], names, grades)
            unjudged += sum(g is None for g in grades)
            for g in grades:
                grade_counts[str(g)] = grade_counts.get(str(g), 0) + 1
            gold = gold_of(query)
            for weight in RERANK_WEIGHTS:
                order = rerank.fuse(head, grades, weight) + hits[args.rerank :]
                add_mean(totals[weight], [h.entry.name for h in order], gold, len(queries))
    finally:
        await provider.aclose()
    seconds.sort()
    return {
        "candidates": args.rerank,
        "model": model or "(all grades from the cache)",
        "default_weight": rerank.DEFAULT_WEIGHT,
        "unjudged": unjudged,
        "grades": grade_counts,
        "query_seconds_p50": round(statistics.median(seconds), 2) if seconds else None,
        "queries_graded_now": len(seconds),
        "by_weight": rounded(totals),
    }


def _cached_grades(path: Path | None) -> dict[tuple[str, tuple[str, ...]], list[int | None]]:
    """Grades kept by an earlier run, by (query, candidates in first-stage order)."""
    if path is None or not path.exists():
        return {}
    kept = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            kept[(r["query"], tuple(r["candidates"]))] = r["grades"]
    return kept


def _keep_grades(path: Path | None, query: str, names: list[str], grades: list[int | None]) -> None:
    if path is not None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"query": query, "candidates": names, "grades": grades}) + "\n")


def everyday_prompts(shared: Path, encoder: SentenceEncoder, tmp: Path) -> list[dict]:
    """Where the usual dataset of each test prompt ranks in the Hugging Face catalog (default)."""
    catalog = load_datasets(shared / "catalogs" / "hf_datasets.jsonl.gz")
    search = DatasetSearch(catalog, encoder, tmp / "hf-cache")
    prompts = json.loads(PROMPTS.read_text(encoding="utf-8"))
    squad = paperdata.task_spec(shared, "squad").instruction
    prompts.append({"task": "paper's SQuAD", "instruction": squad, "expected": ["squad"]})
    rows = []
    for prompt in prompts:
        hits = search.search(prompt["instruction"], 100).hits
        names = [h.entry.name for h in hits]
        rank = next((i + 1 for i, n in enumerate(names) if n in prompt["expected"]), None)
        rows.append({"task": prompt["task"], "rank": rank, "top3": names[:3]})
    return rows


def show(figures: dict) -> None:
    """The tables, as text."""
    print(
        f"dataset retrieval: DataFinder dev, {figures['queries']} queries over "
        f"{figures['documents']} PwC descriptions; encoder {figures['encoder']}; "
        f"{benchkit.machine_line(figures['machine'])}; index built in "
        f"{figures['index_build_s']:.1f}s; {benchkit.load_note(figures['load_avg_end'])}"
    )
    print(f"{'ranking':<24}{'recall@5':>10}{'recall@10':>11}{'MRR':>8}{'MAP':>8}")
    for label, t in figures["methods"].items():
        print(
            f"{label:<24}{t['recall@5']:>10.3f}{t['recall@10']:>11.3f}{t['mrr']:>8.3f}"
            f"{t['map']:>8.3f}"
        )
    latency = figures["fused_latency_ms"]
    print(f"default search latency: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms")
    r = figures.get("rerank")
    if r:
        print(
            f"reranked: the default's top {r['candidates']} graded by {r['model']} "
            f"({r['unjudged']} unjudged; grades {r['grades']}; p50 {r['query_seconds_p50']} s a "
            "query)"
        )
        for weight, t in r["by_weight"].items():
            print(
                f"{'  weight ' + weight:<24}{t['recall@5']:>10.3f}{t['recall@10']:>11.3f}"
                f"{t['mrr']:>8.3f}{t['map']:>8.3f}"
            )
    prompts = figures["prompts"]
    in_top5 = sum(1 for p in prompts if p["rank"] and p["rank"] <= 5)
    print(f"test prompts with their usual dataset in the top 5: {in_top5} of {len(prompts)}")
    for p in prompts:
        print(f"  {p['task']:<18} rank {p['rank'] or '>100':>4}   top 3: {', '.join(p['top3'])}")


if __name__ == "__main__":
    main()
