"""Second stage of the dataset search: the LLM judges each first-stage candidate against the task.

Pointwise and schema-constrained: one request per candidate asks for a relevance grade 0-3 on
the task, the dataset's description and its columns. The grade is fused with the first-stage
score (already in z units): ``score + weight * grade``. A candidate the LLM could not judge
(an error, an unreadable answer) keeps its first-stage score plus the middle grade, so a failure
neither buries nor lifts it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from p2m.common.errors import LLMError, LLMOutputError
from p2m.common.llm import LLMClient, UsageCounters
from p2m.retriever.dataset_search import DatasetHit

DEFAULT_CANDIDATES = 25
MAX_CANDIDATES = 50
DEFAULT_WEIGHT = 1.0
MIDDLE_GRADE = 1.5
CONCURRENCY = 4

SYSTEM = (
    "You decide whether a dataset's examples can train a model for a task. "
    "Grade the fit from 0 to 3:\n"
    "3: the same task: inputs and outputs of the same kind as the task's;\n"
    "2: a closely related task whose examples could be adapted to it;\n"
    "1: the same topic or domain, but a different task;\n"
    "0: unrelated.\n"
    'Answer with JSON only: {"grade": <0-3>}.'
)
SCHEMA = {
    "type": "object",
    "properties": {"grade": {"type": "integer", "minimum": 0, "maximum": 3}},
    "required": ["grade"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Reranked:
    """The reranked hits (best first) and what the reranking took."""

    hits: list[DatasetHit]
    candidates: int
    unjudged: int
    seconds: float
    model: str
    usage: UsageCounters


def prompt(task: str, hit: DatasetHit) -> list[dict[str, str]]:
    """The request that grades ``hit`` for ``task``."""
    entry = hit.entry
    columns = next((c.get("columns") for c in entry.configs if c.get("columns")), None)
    lines = [
        f"Task: {task[:1200]}",
        "",
        f"Dataset: {entry.pretty_name or entry.name} ({entry.name})",
        f"Description: {' '.join(entry.description.split())[:600]}",
    ]
    if entry.task_categories:
        lines.append(f"Task categories: {', '.join(entry.task_categories)}")
    if columns:
        lines.append(f"Columns: {', '.join(str(c) for c in columns[:12])}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


async def rerank(
    llm: LLMClient, task: str, hits: list[DatasetHit], weight: float = DEFAULT_WEIGHT
) -> Reranked:
    """``hits`` (the first stage's candidates) graded by ``llm`` and reordered."""
    started = time.monotonic()
    usage = UsageCounters()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def grade(hit: DatasetHit) -> int | None:
        async with gate:
            try:
                answer, result = await llm.chat_json(
                    prompt(task, hit), SCHEMA, name="grade", max_tokens=16, seed=0
                )
            except (LLMError, LLMOutputError) as error:
                usage.add(getattr(error, "result", None), 1, ok=False)
                return None
            usage.add(result, result.attempts, ok=True)
            return int(answer["grade"])

    grades = await asyncio.gather(*(grade(hit) for hit in hits))
    return Reranked(
        hits=fuse(hits, grades, weight),
        candidates=len(hits),
        unjudged=sum(g is None for g in grades),
        seconds=time.monotonic() - started,
        model=llm.config.model,
        usage=usage,
    )


def fuse(hits: list[DatasetHit], grades: list[int | None], weight: float) -> list[DatasetHit]:
    """``hits`` with their grades fused into the score (``None``: the middle grade), best first."""
    scored = [
        replace(hit, score=hit.score + weight * (MIDDLE_GRADE if g is None else g), grade=g)
        for hit, g in zip(hits, grades, strict=True)
    ]
    scored.sort(key=lambda hit: -hit.score)
    return scored
