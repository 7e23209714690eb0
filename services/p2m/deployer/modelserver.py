"""A KServe ModelServer that binds the address it is given (KServe 0.21 binds every interface).

KServe 0.21 hard-codes the listen address: ``RESTServer`` builds its ``uvicorn.Config`` with
``host="0.0.0.0"`` and ``GRPCServer.start`` listens on ``[::]:<port>``; ``ModelServer`` has no
host argument or flag (kserve/kserve#4558 asked for one and was closed unresolved). So
``HostModelServer`` overrides ``ModelServer.start`` (the single-worker path only): it builds
KServe's own ``RESTServer`` and sets ``config.host`` on it before uvicorn binds (the config is
read when ``serve()`` runs), and runs ``HostGRPCServer``, KServe's ``GRPCServer`` listening on
``<host>:<port>``. Everything else (data plane, endpoints, interceptors, signals) is KServe's.

Import this module only after ``sys.argv`` is what KServe may parse: ``kserve.model_server``
parses the process's flags when it is imported.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent import futures
from typing import Any

from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, MAX_GRPC_MESSAGE_LENGTH
from kserve.model import BaseKServeModel
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

log = logging.getLogger(__name__)


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HostGRPCServer(GRPCServer):
    """KServe's Open Inference Protocol gRPC server, listening on ``host`` only."""

    def __init__(self, host: str, port: int, *args: Any, **kwargs: Any) -> None:
        """Like ``GRPCServer(port, ...)``, bound to ``host``."""
        super().__init__(port, *args, **kwargs)
        self._host = host

    async def start(self, max_workers: int) -> None:
        """Serve until stopped (KServe's ``GRPCServer.start`` with the address changed)."""
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_LENGTH),
                ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_LENGTH),
                # gRPC turns SO_REUSEPORT on by default: a second server could then share the
                # port with a stale one instead of failing to start.
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = _grpc_address(self._host, self._port)
        if self._server.add_insecure_port(address) == 0:
            raise RuntimeError(f"cannot listen on {address}")
        log.info("gRPC server listening", extra={"address": address})
        await self._server.start()
        await self._server.wait_for_termination()


class HostModelServer(ModelServer):
    """``kserve.ModelServer`` whose REST and gRPC servers listen on ``host`` only."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        """Keyword arguments are ``ModelServer``'s; ``workers`` must stay 1."""
        if kwargs.get("workers", 1) != 1:
            raise ValueError("HostModelServer runs one worker")
        super().__init__(workers=1, **kwargs)
        self.host = host

    def start(self, models: list[BaseKServeModel]) -> None:
        """Register ``models`` (loaded already) and serve REST and gRPC until a signal."""
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        # Read by uvicorn when it binds, i.e. once serve() runs.
        self._rest_server.config.host = self.host
        log.info("REST server listening", extra={"address": f"{self.host}:{self.http_port}"})
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = HostGRPCServer(
                self.host,
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
