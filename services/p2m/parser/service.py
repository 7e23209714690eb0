"""gRPC servicer of the parser: converts messages and calls PromptParser."""

from __future__ import annotations

from grpc import aio

from p2m.common.convert import task_spec_to_pb, usage_to_pb
from p2m.common.errors import InvalidInput
from p2m.common.server import ServiceBinding
from p2m.common.settings import Settings
from p2m.local_llm.provider import LLMProvider
from p2m.parser.core import PromptParser
from prompt2model.v1 import parser_pb2, parser_pb2_grpc


class ParserServicer(parser_pb2_grpc.ParserServicer):
    """Serves ``prompt2model.v1.Parser``."""

    def __init__(self, parser: PromptParser) -> None:
        """Answer with ``parser``."""
        self._parser = parser

    async def Parse(  # noqa: N802 (gRPC method name)
        self, request: parser_pb2.ParseRequest, context: aio.ServicerContext
    ) -> parser_pb2.ParseResponse:
        """Parse one prompt."""
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidInput("prompt", "is empty")
        prompt = request.prompt if source == "prompt" else request.prompt_bytes
        result = await self._parser.parse(
            prompt, translate=not request.skip_translation, field=source
        )
        return parser_pb2.ParseResponse(
            task=task_spec_to_pb(result.task), llm_usage=usage_to_pb(result.usage)
        )


def build(settings: Settings) -> ServiceBinding:
    """The parser's binding, with an LLM provider that starts only when the LLM is needed."""
    provider = LLMProvider(settings)
    servicer = ParserServicer(
        PromptParser(provider.client, max_prompt_bytes=settings.max_prompt_bytes)
    )
    return ServiceBinding(
        full_name=parser_pb2.DESCRIPTOR.services_by_name["Parser"].full_name,
        register=lambda server: parser_pb2_grpc.add_ParserServicer_to_server(servicer, server),
        start=provider.probe,
        stop=provider.aclose,
    )
