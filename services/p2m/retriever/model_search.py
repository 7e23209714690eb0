"""Student model search: HyDE (the LLM writes the model card it wishes existed) + BM25.

Real model cards are ranked against the hypothetical one, downloads breaking near-ties. A
candidate must meet the constraints (size, architecture, licence, language) and, when asked,
be resolvable: in the local model store, or downloadable because the hub is reachable. A task in
another language than English prefers a model whose card states it; a task whose outputs are code
prefers a code model.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from p2m.common.code_output import code_language
from p2m.common.errors import InvalidInput
from p2m.common.llm import LLMClient, UsageCounters
from p2m.common.types import TaskSpec
from p2m.retriever.bm25 import BM25
from p2m.retriever.catalog import Catalog, ModelEntry

DEFAULT_MAX_SIZE_BYTES = 3_000_000_000
ARCHITECTURES = ("encoder-decoder", "decoder-only")
MAX_SKIPPED = 50
# A code model's name says so: Qwen2.5-Coder, codet5, CodeLlama, starcoder, deepseek-coder; not
# an encoder or a decoder.
_CODE_MODEL_NAME = re.compile(r"(?<!en)(?<!de)code", re.IGNORECASE)
_ENCODER_DECODER = {
    "t5",
    "mt5",
    "byt5",
    "bart",
    "mbart",
    "pegasus",
    "marian",
    "m2m_100",
    "led",
    "prophetnet",
    "longt5",
    "umt5",
    "fsmt",
    "blenderbot",
    "bigbird_pegasus",
    "switch_transformers",
    "nllb",
    "t5gemma",
}
_DECODER_ONLY = {
    "gpt2",
    "gpt_neo",
    "gpt_neox",
    "gptj",
    "llama",
    "mistral",
    "qwen2",
    "opt",
    "bloom",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "falcon",
    "codegen",
    "starcoder2",
    "smollm",
    "olmo",
    "stablelm",
    "mpt",
    "ctrl",
    "xglm",
    "pythia",
}
_PIPELINES = {
    "text2text-generation": "encoder-decoder",
    "summarization": "encoder-decoder",
    "translation": "encoder-decoder",
    "text-generation": "decoder-only",
    "conversational": "decoder-only",
}
HYDE_SYSTEM = (
    "You write Hugging Face model cards. Given a task, write the card of a small model that was "
    "fine-tuned to do exactly that task: its name, what it does, the kind of data it was trained "
    "on, and its intended use, in at most 120 words of plain prose."
)


@dataclass(frozen=True)
class ModelConstraints:
    """Limits a student model must meet (see common.proto ModelConstraints)."""

    max_size_bytes: int = DEFAULT_MAX_SIZE_BYTES
    architectures: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    only_resolvable: bool = True

    def validate(self) -> None:
        """Raise InvalidInput naming a bad field."""
        if self.max_size_bytes < 0:
            raise InvalidInput("constraints.max_size_bytes", "must be >= 0")
        for arch in self.architectures:
            if arch not in ARCHITECTURES:
                raise InvalidInput("constraints.architectures", f"unknown architecture {arch!r}")
        if len(self.licenses) > 32 or len(self.languages) > 32:
            raise InvalidInput("constraints.licenses", "at most 32 licences and 32 languages")
        for code in self.languages:
            if len(code) != 2 or not code.isalpha() or not code.islower():
                raise InvalidInput("constraints.languages", f"not an ISO 639-1 code: {code!r}")


@dataclass(frozen=True)
class LocalModel:
    """A model of the local store, as the search sees it.

    ``shipped``: not in the store yet (no ``path``), but shipped with p2m and imported into the
    store on first use, so it can be had offline all the same. ``alternative``: a shipped model
    other than the default student, imported or not.
    """

    model_id: str
    description: str
    architecture: str
    size_bytes: int
    license: str
    path: str
    languages: tuple[str, ...] = ()
    shipped: bool = False
    alternative: bool = False


@dataclass(frozen=True)
class ModelCandidate:
    """A ranked model, and why it was skipped (empty when it was not)."""

    model_id: str
    architecture: str
    size_bytes: int
    downloads: int
    score: float
    license: str
    resolvable: bool
    local_path: str = ""
    skip_reason: str = ""
    languages: tuple[str, ...] = ()
    fit_reason: str = ""  # why a chosen model fits (size, architecture, licence, languages)
    shipped: bool = False  # shipped with p2m, imported into the local store on first use


@dataclass(frozen=True)
class ModelSearchResult:
    """Models meeting the constraints, better ones skipped, and the HyDE card."""

    models: tuple[ModelCandidate, ...]
    skipped: tuple[ModelCandidate, ...]
    hypothetical_card: str
    catalog_available: bool
    note: str
    catalog_size: int
    usage: UsageCounters = field(default_factory=UsageCounters)


def architecture_of(entry: ModelEntry) -> str:
    """Return "encoder-decoder", "decoder-only" or "" (unknown) from the catalog's hints."""
    guess = entry.architecture_guess.lower()
    if guess in _ENCODER_DECODER:
        return "encoder-decoder"
    if guess in _DECODER_ONLY:
        return "decoder-only"
    return _PIPELINES.get(entry.pipeline_tag, "")


class ModelSearch:
    """Ranks the catalog together with the local store; the store's entries are resolvable."""

    def __init__(
        self, catalog: Catalog | None, local: Sequence[LocalModel], hub_reachable: bool
    ) -> None:
        """Index the catalog's cards and the local models' cards with BM25."""
        self._local = {m.model_id: m for m in local}
        entries = [e for e in (catalog.records if catalog else ()) if e.model_id not in self._local]
        entries += [
            ModelEntry(
                m.model_id,
                m.description,
                size_bytes=m.size_bytes,
                license=(m.license,),
                language=m.languages,
            )
            for m in local
        ]
        self._entries: list[ModelEntry] = entries
        self._bm25 = BM25([f"{e.model_id.replace('/', ' ')}\n{e.description}" for e in entries])
        self._catalog = catalog
        self._hub_reachable = hub_reachable

    async def hypothetical_card(self, llm: LLMClient, task: TaskSpec, usage: UsageCounters) -> str:
        """HyDE: the model card the LLM imagines for the task."""
        demos = "\n".join(
            f"input: {d.input[:200]}\noutput: {d.output[:100]}" for d in task.demonstrations[:2]
        )
        messages = [
            {"role": "system", "content": HYDE_SYSTEM},
            {"role": "user", "content": f"Task: {task.instruction[:1500]}\n\n{demos}"},
        ]
        result = await llm.chat(messages, max_tokens=200, seed=0)
        usage.add(result, result.attempts, ok=True)
        return result.text.strip()

    async def search(
        self, llm: LLMClient, task: TaskSpec, constraints: ModelConstraints, top_k: int = 5
    ) -> ModelSearchResult:
        """Rank models for ``task``: HyDE card + instruction as the BM25 query."""
        constraints.validate()
        usage = UsageCounters()
        card = await self.hypothetical_card(llm, task, usage)
        query = f"{card}\n{task.instruction}"
        models, skipped = self.rank(
            query, constraints, top_k, task.language or "en", code=code_language(task)
        )
        note = "" if self._catalog else "no model catalog: only the local model store was ranked"
        if not models:
            note = (note + "; " if note else "") + "no model meets the constraints"
        return ModelSearchResult(
            models=tuple(models),
            skipped=tuple(skipped),
            hypothetical_card=card,
            catalog_available=self._catalog is not None,
            note=note,
            catalog_size=len(self._catalog.records) if self._catalog else 0,
            usage=usage,
        )

    def rank(
        self,
        query: str,
        constraints: ModelConstraints,
        top_k: int,
        language: str = "en",
        code: str = "",
    ) -> tuple[list[ModelCandidate], list[ModelCandidate]]:
        """BM25 rank for ``query``; return (models meeting the constraints, better ones skipped).

        Scores are rounded to one decimal so that near-ties go to the more downloaded model.
        A shipped model not imported yet, or a shipped alternative to the default student even
        once imported, comes after the others: it is offered, not preferred, and a training that
        imported it does not change the next search's choice (the search matches the shipped
        Qwen2.5-Coder to the paper's Temporal prompt, and it scored 26.2 ChrF++ there after 1,000
        training examples where SmolLM2 scored 37.4).
        For a task in another ``language`` than English, the models whose cards state that
        language (or multilingual) come first, in their own order, when any meets the
        constraints. For a task whose outputs are ``code`` ("python"), so do code models (shipped
        alternative or not: Qwen2.5-Coder as the student of the paper's Japanese-to-Python
        prompt scored 16.2 ChrF++ on its dev half where SmolLM2 scored 12.3); a model that is
        both comes before one that is either. Each chosen model says why it fits.
        """
        scores = self._bm25.scores(query)
        ranked = sorted(
            range(len(self._entries)),
            key=lambda i: (
                self._offered_only(self._entries[i]),
                -round(float(scores[i]), 1),
                -self._entries[i].downloads,
            ),
        )
        fitting: list[ModelCandidate] = []
        skipped: list[ModelCandidate] = []
        for index in ranked:
            candidate = self._candidate(self._entries[index], float(scores[index]))
            reason = self._skip_reason(candidate, self._entries[index], constraints)
            if not reason:
                fitting.append(candidate)
                if language == "en" and not code and len(fitting) >= top_k:
                    break
            elif len(skipped) < MAX_SKIPPED and len(fitting) < top_k:
                skipped.append(_with_reason(candidate, reason))
        need = Needs(language, code)
        fitting.sort(key=lambda c: -need.met(c))  # stable: BM25's order within each tier
        reach = Reach(any(map(need.speaks, fitting)), any(map(need.codes, fitting)))
        limit = constraints.max_size_bytes or DEFAULT_MAX_SIZE_BYTES
        models = [
            dataclasses.replace(c, fit_reason=fit_reason(c, limit, need, reach))
            for c in fitting[:top_k]
        ]
        return models, skipped

    def _offered_only(self, entry: ModelEntry) -> bool:
        local = self._local.get(entry.model_id)
        return local is not None and (local.shipped or local.alternative)

    def _candidate(self, entry: ModelEntry, score: float) -> ModelCandidate:
        local = self._local.get(entry.model_id)
        return ModelCandidate(
            model_id=entry.model_id,
            architecture=local.architecture if local else architecture_of(entry),
            size_bytes=entry.size_bytes,
            downloads=entry.downloads,
            score=score,
            license=entry.license[0] if entry.license else "",
            resolvable=local is not None or self._hub_reachable,
            local_path=local.path if local else "",
            languages=entry.language,
            shipped=local.shipped if local else False,
        )

    def _skip_reason(
        self, candidate: ModelCandidate, entry: ModelEntry, constraints: ModelConstraints
    ) -> str:
        limit = constraints.max_size_bytes or DEFAULT_MAX_SIZE_BYTES
        if candidate.size_bytes > limit:
            return f"too large: {candidate.size_bytes / 1e9:.1f} GB > {limit / 1e9:.1f} GB"
        allowed = constraints.architectures or ARCHITECTURES
        if candidate.architecture not in allowed:
            return f"architecture {candidate.architecture or 'unknown'} is not trainable here"
        if constraints.licenses:
            wanted = {lic.lower() for lic in constraints.licenses}
            if not {lic.lower() for lic in entry.license} & wanted:
                return f"licence {candidate.license or 'unknown'} not allowed"
        if constraints.languages:
            spoken = set(entry.language) or {"en"}
            if not spoken & set(constraints.languages):
                return f"languages {sorted(spoken)} lack {list(constraints.languages)}"
        if constraints.only_resolvable and not candidate.resolvable:
            return "not resolvable: not in the local model store and the hub is unreachable"
        return ""


def speaks(languages: Sequence[str], language: str) -> bool:
    """Whether a card's languages cover ``language`` (no languages stated: English only)."""
    stated = {code.lower() for code in languages} or {"en"}
    return language in stated or "multilingual" in stated


def is_code_model(model_id: str) -> bool:
    """Whether the model's name says it is a code model ("Qwen2.5-Coder", "codet5")."""
    return _CODE_MODEL_NAME.search(model_id.rsplit("/", 1)[-1]) is not None


@dataclass(frozen=True)
class Needs:
    """What a task asks of its student beyond the constraints: its language, code outputs."""

    language: str = "en"
    code: str = ""  # the outputs' code language ("python"), or ""

    def speaks(self, candidate: ModelCandidate) -> bool:
        """Whether a task in another language than English finds that language on the card."""
        return self.language != "en" and speaks(candidate.languages, self.language)

    def codes(self, candidate: ModelCandidate) -> bool:
        """Whether a task with code outputs finds a code model."""
        return bool(self.code) and is_code_model(candidate.model_id)

    def met(self, candidate: ModelCandidate) -> int:
        """How many of the task's needs ``candidate`` meets."""
        return self.speaks(candidate) + self.codes(candidate)


@dataclass(frozen=True)
class Reach:
    """Whether any model that met the constraints meets each of the task's needs."""

    speaker: bool
    coder: bool


def fit_reason(candidate: ModelCandidate, limit: int, need: Needs, reach: Reach) -> str:
    """Why a chosen model fits: architecture, size against the cap, licence, languages, source.

    ``reach`` says when no model within reach meets a need.
    """
    size = f"{candidate.size_bytes / 1e9:.2f} GB" if candidate.size_bytes else "size unknown"
    languages = ", ".join(candidate.languages) or "not stated (English assumed)"
    parts = [
        f"{candidate.architecture} (trainable here)",
        f"{size} under the {limit / 1e9:.1f} GB cap",
        f"licence {candidate.license or 'not stated'}",
        f"languages: {languages}",
    ]
    if need.language != "en":
        if need.speaks(candidate):
            parts.append(f"its card states the task's language ({need.language})")
        elif not reach.speaker:
            parts.append(f"no model within reach states the task's language ({need.language})")
    if need.code:
        if need.codes(candidate):
            parts.append(f"a code model, for a task whose outputs are {need.code} code")
        elif not reach.coder:
            parts.append(f"no code model within reach for the task's {need.code} outputs")
    if candidate.local_path:
        parts.append("in the local model store")
    elif candidate.shipped:
        parts.append("shipped with p2m: imported into the local model store on first use")
    else:
        parts.append("from the hub")
    return "; ".join(parts)


def _with_reason(candidate: ModelCandidate, reason: str) -> ModelCandidate:
    return dataclasses.replace(candidate, skip_reason=reason)
