"""Dataset retrieval benchmark on DataFinder (Papers-with-Code descriptions + research queries).

The 3,327 PwC dataset descriptions become a catalog of the product's shape; each of the 203 dev
queries is searched with BM25, dense (all-MiniLM-L6-v2) and fused ranking. Prints recall@5,
recall@10, MRR and MAP side by side, and the fused search latency p50/p99 (``--json``: one JSON
object instead).

    .venv/bin/python bench/retrieval.py [--shared-data ../shared/data] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import benchkit

from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
from p2m.retriever.catalog import load_datasets
from p2m.retriever.dataset_search import METHODS, DatasetSearch


def to_catalog(documents: Path, target: Path) -> None:
    """PwC documents -> catalog lines {name, description, pretty_name}."""
    with documents.open(encoding="utf-8") as src, gzip.open(target, "wt", encoding="utf-8") as dst:
        for line in src:
            doc = json.loads(line)
            record = {"name": doc["id"], "description": doc["contents"], "pretty_name": doc["id"]}
            dst.write(json.dumps(record) + "\n")


def gold_of(query: dict) -> set[str]:
    documents = query["documents"]
    if isinstance(documents, str):
        documents = ast.literal_eval(documents)
    return set(documents)


def scores(ranked: list[str], gold: set[str]) -> dict[str, float]:
    hits = [i for i, name in enumerate(ranked) if name in gold]
    precisions = [(k + 1) / (i + 1) for k, i in enumerate(hits)]
    return {
        "recall@5": len({n for n in ranked[:5] if n in gold}) / len(gold),
        "recall@10": len({n for n in ranked[:10] if n in gold}) / len(gold),
        "mrr": 1 / (hits[0] + 1) if hits else 0.0,
        "map": sum(precisions) / len(gold) if gold else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=100, help="ranks scored for MAP")
    benchkit.common_arguments(parser, "the first 50 queries only")
    args = parser.parse_args()
    load_start = benchkit.load_average()
    folder = args.shared_data / "retrieval"
    queries = [json.loads(line) for line in (folder / "datafinder_queries_dev.jsonl").open()]
    queries = [q for q in queries if gold_of(q)]  # a few queries have no judged dataset
    queries = queries[:50] if args.quick else queries
    encoder = SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)
    with tempfile.TemporaryDirectory() as tmp:
        catalog_path = Path(tmp) / "pwc.jsonl.gz"
        to_catalog(folder / "pwc_documents.jsonl", catalog_path)
        catalog = load_datasets(catalog_path)
        started = time.monotonic()
        search = DatasetSearch(catalog, encoder, Path(tmp) / "cache")
        build_s = time.monotonic() - started
        totals = {
            method: dict.fromkeys(("recall@5", "recall@10", "mrr", "map"), 0.0)
            for method in METHODS
        }
        latencies = []
        for query in queries:
            gold = gold_of(query)
            for method in METHODS:
                started = time.monotonic()
                hits = search.search(query["query"], args.depth, method)
                if method == "fused":
                    latencies.append((time.monotonic() - started) * 1000)
                for name, value in scores([h.entry.name for h in hits], gold).items():
                    totals[method][name] += value / len(queries)
    latencies.sort()
    figures = {
        "bench": "retrieval",
        "quick": args.quick,
        "machine": benchkit.machine(),
        "load_avg_start": load_start,
        "load_avg_end": benchkit.load_average(),
        "queries": len(queries),
        "documents": len(catalog.records),
        "encoder": SHIPPED_ENCODER_NAME,
        "depth": args.depth,
        "index_build_s": round(build_s, 2),
        "methods": {
            method: {name: round(value, 4) for name, value in totals[method].items()}
            for method in METHODS
        },
        "fused_latency_ms": {
            "p50": round(statistics.median(latencies), 2),
            "p99": round(benchkit.percentile(latencies, 0.99), 2),
        },
    }
    if args.json:
        benchkit.emit(figures)
        return
    print(
        f"dataset retrieval: DataFinder dev, {len(queries)} queries over {len(catalog.records)} "
        f"PwC descriptions; encoder {SHIPPED_ENCODER_NAME}; "
        f"{benchkit.machine_line(figures['machine'])}; index built in {build_s:.1f}s; "
        f"{benchkit.load_note(figures['load_avg_end'])}"
    )
    print(f"{'method':<8}{'recall@5':>10}{'recall@10':>11}{'MRR':>8}{'MAP':>8}")
    for method in METHODS:
        t = totals[method]
        print(
            f"{method:<8}{t['recall@5']:>10.3f}{t['recall@10']:>11.3f}{t['mrr']:>8.3f}"
            f"{t['map']:>8.3f}"
        )
    latency = figures["fused_latency_ms"]
    print(f"fused search latency: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms")


if __name__ == "__main__":
    main()
