"""The one place where typed domain errors become gRPC status codes."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from p2m.common import errors

log = logging.getLogger(__name__)

# Most specific first: the first matching class wins.
ERROR_CODES: tuple[tuple[type[errors.P2MError], grpc.StatusCode], ...] = (
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.BudgetExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.LLMOutputError, grpc.StatusCode.UNAVAILABLE),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.Aborted, grpc.StatusCode.ABORTED),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message an exception is answered with."""
    for cls, code in ERROR_CODES:
        if isinstance(exc, cls):
            return code, str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "no space left on the data dir's disk"
    return grpc.StatusCode.INTERNAL, "internal error (see the service's log)"


class ErrorInterceptor(aio.ServerInterceptor):
    """Turns P2MError subclasses into their status codes; logs anything else as INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler of every unary or server-streaming RPC."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def _abort(context: aio.ServicerContext, exc: Exception, method: str) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("unhandled error in %s", method)
    else:
        log.info("%s -> %s: %s", method, code.name, message)
    await context.abort(code, message)


def _wrap_unary(behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def wrapped(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except (aio.AbortError, aio.UsageError):
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return wrapped


def _wrap_stream(behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def wrapped(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behaviour(request, context):
                yield item
        except (aio.AbortError, aio.UsageError):
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return wrapped
