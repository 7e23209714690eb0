"""Build dataset and model catalogs from the Hugging Face hub (when it is reachable).

The records have the shape `catalog.load_datasets` / `load_models` read, so a built catalog
replaces the offline snapshot as is. Written atomically, gzipped.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from p2m.common.errors import Unavailable
from p2m.common.hub import hub_offline_by_env

DATASETS_FILE = "hf_datasets.jsonl.gz"
MODELS_FILE = "hf_models.jsonl.gz"
# Model pipelines a text-to-text student can come from.
STUDENT_PIPELINES = ("text2text-generation", "text-generation", "summarization", "translation")


def _tag_values(tags: Iterable[str], prefix: str) -> list[str]:
    return [t[len(prefix) :] for t in tags if t.startswith(prefix)]


def dataset_record(info: Any) -> dict[str, Any]:
    """A hub DatasetInfo -> a catalog line."""
    tags = list(getattr(info, "tags", None) or [])
    card = getattr(info, "card_data", None) or {}
    card = card if isinstance(card, dict) else getattr(card, "to_dict", lambda: {})()
    return {
        "name": info.id,
        "description": getattr(info, "description", None) or card.get("pretty_name") or "",
        "task_categories": _tag_values(tags, "task_categories:"),
        "task_ids": _tag_values(tags, "task_ids:"),
        "language": _tag_values(tags, "language:"),
        "license": _tag_values(tags, "license:"),
        "tags": tags,
        "downloads": getattr(info, "downloads", None),
        "likes": getattr(info, "likes", None),
        "gated": bool(getattr(info, "gated", False)),
        "size_categories": _tag_values(tags, "size_categories:"),
        "pretty_name": card.get("pretty_name") or "",
        "sources": ["hub"],
    }


def model_record(info: Any) -> dict[str, Any]:
    """A hub ModelInfo -> a catalog line (the card's summary fields stand in for its text)."""
    tags = list(getattr(info, "tags", None) or [])
    safetensors = getattr(info, "safetensors", None)
    parameters = getattr(safetensors, "total", 0) if safetensors is not None else 0
    config = getattr(info, "config", None) or {}
    pipeline = getattr(info, "pipeline_tag", None) or ""
    # The listing carries no card text: the id, pipeline and tags stand in for it.
    description = " ".join([info.id.replace("/", " "), pipeline, *tags])
    return {
        "model_id": info.id,
        "description": description,
        "downloads": getattr(info, "downloads", None) or 0,
        "size_bytes": int(parameters) * 2,  # bf16/fp16 weights; 0 when unknown
        "pipeline_tag": pipeline,
        "tags": tags,
        "license": _tag_values(tags, "license:"),
        "language": [t for t in tags if len(t) == 2 and t.isalpha()],
        "architecture_guess": config.get("model_type", "") if isinstance(config, dict) else "",
    }


def write_catalog(records: Iterable[dict[str, Any]], target: Path) -> int:
    """Write records as gzipped JSON lines, atomically; return how many."""
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with (
        tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp,
        gzip.open(tmp, "wt", encoding="utf-8") as out,
    ):
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp.name, target)
    return count


def build_catalog(
    kind: str,
    target_dir: Path,
    *,
    limit: int,
    api: Any = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Path, int]:
    """List the hub's most downloaded datasets or student-capable models into a catalog file.

    Raises:
        Unavailable: The hub is switched off or cannot be reached.
    """
    if hub_offline_by_env():
        raise Unavailable("the Hugging Face hub is offline here (HF_HUB_OFFLINE is set)")
    import httpx2  # the hub client's HTTP library

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()

    def counted(records: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        for number, record in enumerate(records, 1):
            if progress is not None and number % 100 == 0:
                progress(number)
            yield record

    try:
        if kind == "datasets":
            infos = api.list_datasets(sort="downloads", limit=limit, full=True)
            target = target_dir / DATASETS_FILE
            count = write_catalog(counted(dataset_record(i) for i in infos), target)
        else:
            records = (
                model_record(info)
                for pipeline in STUDENT_PIPELINES
                for info in api.list_models(
                    pipeline_tag=pipeline,
                    sort="downloads",
                    limit=limit,
                    expand=["downloads", "tags", "pipeline_tag", "safetensors", "config"],
                )
            )
            target = target_dir / MODELS_FILE
            count = write_catalog(counted(records), target)
    except (OSError, httpx2.HTTPError) as exc:
        raise Unavailable(f"the Hugging Face hub could not be reached: {exc}") from exc
    return target, count
