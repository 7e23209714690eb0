"""gRPC servicer of the retriever: dataset search and preparation, student model search."""

from __future__ import annotations

import logging
from dataclasses import asdict

from grpc import aio

from p2m.common.artifacts import ArtifactStore
from p2m.common.convert import artifact_ref_to_pb, task_spec_from_pb, usage_to_pb
from p2m.common.errors import InvalidInput
from p2m.common.server import ServiceBinding
from p2m.common.settings import Settings
from p2m.common.types import TaskSpec
from p2m.local_llm.provider import LLMProvider
from p2m.retriever.core import DATASET_CATALOG_NAMES, Retriever, find_catalog, hub_reachable
from p2m.retriever.dataset_search import DatasetHit, task_query
from p2m.retriever.model_search import ModelCandidate, ModelConstraints, ModelSearch
from p2m.retriever.prepare import PrepareOptions, prepare
from p2m.retriever.preview import Preview
from p2m.retriever.rerank import DEFAULT_CANDIDATES, MAX_CANDIDATES
from prompt2model.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
MAX_QUERY_BYTES = 4096


def _task(message: common_pb2.TaskSpec, field: str = "task") -> TaskSpec:
    task = task_spec_from_pb(message)
    if not task.instruction.strip():
        raise InvalidInput(f"{field}.instruction", "is empty")
    return task


def _top_k(value: int) -> int:
    if not 0 <= value <= 100:
        raise InvalidInput("top_k", f"must be within 0..100, got {value}")
    return value or DEFAULT_TOP_K


class RetrieverServicer(retriever_pb2_grpc.RetrieverServicer):
    """Serves ``prompt2model.v1.Retriever``."""

    def __init__(self, core: Retriever) -> None:
        """Answer with ``core``."""
        self._core = core

    async def SearchDatasets(  # noqa: N802 (gRPC method name)
        self, request: retriever_pb2.SearchDatasetsRequest, context: aio.ServicerContext
    ) -> retriever_pb2.SearchDatasetsResponse:
        """Rank the dataset catalog."""
        which = request.WhichOneof("query")
        if which is None:
            raise InvalidInput("query", "set task or text")
        if which == "text":
            if not request.text.strip() or len(request.text.encode()) > MAX_QUERY_BYTES:
                raise InvalidInput("text", f"must be non-empty and at most {MAX_QUERY_BYTES} bytes")
            query = request.text
        else:
            query = task_query(_task(request.task))
        top_k = _top_k(request.top_k)
        found = await self._core.find_datasets(
            query,
            top_k,
            request.catalog_path,
            request.include_gated,
            _rerank_candidates(request, top_k),
        )
        if found is None:
            return retriever_pb2.SearchDatasetsResponse(
                catalog_available=False,
                note="no dataset catalog is configured (P2M_CATALOG_DIR): "
                "the run goes on without retrieved data",
            )
        response = retriever_pb2.SearchDatasetsResponse(
            datasets=[_dataset_pb(h, p) for h, p in zip(found.hits, found.previews, strict=True)],
            catalog_available=True,
            catalog_size=found.catalog_size,
            gated_left_out=found.gated_left_out,
            first_stage_seconds=found.first_stage_seconds,
        )
        if found.gated_left_out:
            response.note = (
                f"{found.gated_left_out} gated dataset(s) left out (include_gated lists them)"
            )
        if found.reranked is not None:
            r = found.reranked
            response.rerank.CopyFrom(
                retriever_pb2.RerankReport(
                    candidates=r.candidates, unjudged=r.unjudged, seconds=r.seconds, model=r.model
                )
            )
            response.llm_usage.CopyFrom(usage_to_pb(r.usage))
        return response

    async def PrepareDataset(  # noqa: N802 (gRPC method name)
        self, request: retriever_pb2.PrepareDatasetRequest, context: aio.ServicerContext
    ) -> retriever_pb2.PrepareDatasetResponse:
        """Load a dataset, choose columns, write the splits artifact."""
        name = request.dataset.name.strip()
        if not name:
            raise InvalidInput("dataset.name", "is empty")
        task = _task(request.task)
        options = PrepareOptions(
            max_rows=request.max_rows or PrepareOptions.max_rows,
            validation_fraction=(
                request.validation_fraction if request.HasField("validation_fraction") else 0.1
            ),
            test_fraction=request.test_fraction if request.HasField("test_fraction") else 0.1,
            seed=request.seed if request.HasField("seed") else 0,
        )
        options.validate()
        dataset = await self._core.load_dataset(name, request.dataset.config)
        work = self._core.settings.cache_dir("prepare")
        result = await prepare(
            dataset,
            task,
            store=self._core.store,
            work_dir=work,
            llm=self._core.provider.client,
            options=options,
            config=request.dataset.config,
            input_columns=list(request.input_columns),
            output_column=request.output_column,
        )
        choice = result.choice
        ref = common_pb2.DatasetRef(
            name=name, config=request.dataset.config, description=request.dataset.description
        )
        if result.artifact is not None:
            ref.input_columns.extend(choice.input_columns)
            ref.output_column = choice.output_column
            ref.artifact.CopyFrom(artifact_ref_to_pb(result.artifact))
        return retriever_pb2.PrepareDatasetResponse(
            dataset=ref,
            rows=common_pb2.SplitCounts(**result.rows),
            proposal=retriever_pb2.ColumnProposal(
                input_columns=list(choice.input_columns),
                output_column=choice.output_column,
                reason=choice.reason,
                person_chosen=choice.person_chosen,
                suitable=choice.suitable,
                available_columns=list(result.available_columns),
            ),
            rows_dropped=result.rows_dropped,
            cached=result.cached,
            llm_usage=usage_to_pb(result.usage),
        )

    async def SearchModels(  # noqa: N802 (gRPC method name)
        self, request: retriever_pb2.SearchModelsRequest, context: aio.ServicerContext
    ) -> retriever_pb2.SearchModelsResponse:
        """Rank student models with HyDE + BM25 under the constraints."""
        task = _task(request.task)
        top_k = _top_k(request.top_k)
        c = request.constraints
        constraints = ModelConstraints(
            max_size_bytes=c.max_size_bytes or ModelConstraints.max_size_bytes,
            architectures=tuple(c.architectures),
            licenses=tuple(c.licenses),
            languages=tuple(c.languages),
            only_resolvable=c.only_resolvable or not request.HasField("constraints"),
        )
        catalog = await self._core.model_catalog(request.catalog_path)
        search = ModelSearch(catalog, self._core.local_models(), hub_reachable(self._core.settings))
        result = await search.search(await self._core.provider.client(), task, constraints, top_k)
        return retriever_pb2.SearchModelsResponse(
            models=[_model_pb(m) for m in result.models],
            skipped=[_model_pb(m) for m in result.skipped],
            hypothetical_model_card=result.hypothetical_card,
            catalog_available=result.catalog_available,
            note=result.note,
            catalog_size=result.catalog_size,
            llm_usage=usage_to_pb(result.usage),
        )


def _rerank_candidates(request: retriever_pb2.SearchDatasetsRequest, top_k: int) -> int:
    """How many candidates the LLM reranks (0: no reranking)."""
    if not request.rerank:
        if request.rerank_candidates:
            raise InvalidInput("rerank_candidates", "is set but rerank is not")
        return 0
    if top_k > MAX_CANDIDATES:
        raise InvalidInput("top_k", f"must be at most {MAX_CANDIDATES} with rerank, got {top_k}")
    candidates = request.rerank_candidates or max(DEFAULT_CANDIDATES, top_k)
    if not top_k <= candidates <= MAX_CANDIDATES:
        raise InvalidInput(
            "rerank_candidates",
            f"must be within top_k ({top_k})..{MAX_CANDIDATES}, got {candidates}",
        )
    return candidates


def _dataset_pb(hit: DatasetHit, preview: Preview) -> common_pb2.DatasetRef:
    return common_pb2.DatasetRef(
        name=hit.entry.name,
        description=hit.entry.description[:500],
        score=hit.score,
        matched_fields=list(hit.matched_fields),
        variants=list(hit.variants),
        preview=common_pb2.DatasetPreview(**asdict(preview)),
        llm_grade=hit.grade,
    )


def _model_pb(c: ModelCandidate) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(
        name=c.model_id,
        architecture=c.architecture,
        size_bytes=c.size_bytes,
        downloads=c.downloads,
        score=c.score,
        license=c.license,
        resolvable=c.resolvable,
        skip_reason=c.skip_reason,
        languages=list(c.languages),
        fit_reason=c.fit_reason,
    )


def build(settings: Settings) -> ServiceBinding:
    """The retriever's binding."""
    provider = LLMProvider(settings)
    core = Retriever(
        settings,
        provider,
        ArtifactStore(settings.artifacts_dir),
        path_roots=settings.readable_roots(),
    )

    async def start() -> None:
        await provider.probe()
        if find_catalog(settings.catalog_dir, DATASET_CATALOG_NAMES) is None:
            log.warning("no dataset catalog configured: searches will say so")
        else:  # build (or load the cached) index before saying SERVING
            await core.dataset_search("")

    servicer = RetrieverServicer(core)
    return ServiceBinding(
        full_name=retriever_pb2.DESCRIPTOR.services_by_name["Retriever"].full_name,
        register=lambda server: retriever_pb2_grpc.add_RetrieverServicer_to_server(
            servicer, server
        ),
        start=start,
        stop=provider.aclose,
    )
