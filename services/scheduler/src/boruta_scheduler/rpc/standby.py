"""What a standby scheduler serves (design rule 10): every boruta call refused UNAVAILABLE
with the leader's address in trailing metadata, and NOT_SERVING on grpc.health.v1.

It binds the ports the scheduler was told to, one gRPC server per port, so each knows which
kind of port a call came in on and names the leader's port of the same kind. On taking
over, the scheduler stops it and serves the same ports for real (rpc/server.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from boruta.ports import add_port
from boruta.probes import add_probes
from boruta.reasons import ERROR_REASON_KEY, wire_name
from boruta.tls import TlsFiles, server_credentials, token_server_credentials
from boruta.v1 import audit_pb2, requests_pb2, superviser_pb2, tokens_pb2, workers_pb2

from boruta_scheduler.config import ServerConfig
from boruta_scheduler.errors import NotLeader
from boruta_scheduler.rpc.status import status_of

log = logging.getLogger(__name__)

# Trailing metadata of a standby's refusal: host:port of the leader's port of the kind the
# call came in on (certificate or token port), empty while no leader is known.
LEADER_KEY = "boruta-leader"
# Every service a leader serves; a standby refuses them all (Audit and Tokens too: it has
# no engine to answer them from).
SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (requests_pb2, "Requests"),
        (workers_pb2, "Workers"),
        (superviser_pb2, "Superviser"),
        (audit_pb2, "Audit"),
        (tokens_pb2, "Tokens"),
    )
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)

Context = grpc.aio.ServicerContext[Any, Any]
# Which of the leader's addresses to name: False for the certificate port, True for tokens.
LeaderAddress = Callable[[bool], str]


class _Refuse(grpc.GenericRpcHandler):
    """Answers every method of the boruta services UNAVAILABLE, naming the leader."""

    def __init__(self, leader: LeaderAddress, tokens: bool) -> None:
        self._leader = leader
        self._tokens = tokens
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for service in SERVICES:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                handler: grpc.RpcMethodHandler[Any, Any]
                if method.server_streaming:
                    handler = grpc.unary_stream_rpc_method_handler(self._refuse_stream)
                else:
                    handler = grpc.unary_unary_rpc_method_handler(self._refuse)
                self._handlers[path] = handler

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)

    async def _refuse(self, request: bytes, context: Context) -> None:
        leader = self._leader(self._tokens)
        error = NotLeader(
            f"this scheduler is a standby; the leader is at {leader}"
            if leader
            else "this scheduler is a standby and no leader is known yet; retry shortly"
        )
        context.set_trailing_metadata(
            ((ERROR_REASON_KEY, wire_name(error.reason)), (LEADER_KEY, leader))
        )
        await context.abort(status_of(error), str(error))

    async def _refuse_stream(self, request: bytes, context: Context) -> Any:
        await self._refuse(request, context)
        yield  # pragma: no cover - never reached: a generator, as gRPC wants for streams


class Standby:
    """The standby's servers on the configured ports; port and token_port once started."""

    def __init__(self, server: ServerConfig, tls: TlsFiles | None, leader: LeaderAddress):
        self._config = server
        self._tls = tls
        self._leader = leader
        self._servers: list[grpc.aio.Server] = []
        self.port = 0
        self.token_port = 0

    async def start(self) -> None:
        """Bind and serve; raises CannotListen as the leader's server would."""
        tls = self._tls
        self.port = await self._serve(
            self._config.listen,
            None if tls is None else server_credentials(tls),
            "--listen or BORUTA_LISTEN",
            tokens=False,
        )
        if self._config.listen_tokens:
            assert tls is not None  # transport_security allows no token port without TLS
            self.token_port = await self._serve(
                self._config.listen_tokens,
                token_server_credentials(tls),
                "--listen-tokens or BORUTA_LISTEN_TOKENS",
                tokens=True,
            )

    async def _serve(
        self,
        address: str,
        credentials: grpc.ServerCredentials | None,
        setting: str,
        *,
        tokens: bool,
    ) -> int:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._servers.append(server)
        server.add_generic_rpc_handlers((_Refuse(self._leader, tokens),))
        await add_probes(server, SERVICE_NAMES, serving=False)
        port = add_port(server, address, credentials, setting)
        await server.start()
        return port

    async def stop(self) -> None:
        """Close the ports at once: the leader's server binds them next."""
        for server in self._servers:
            await server.stop(0)
        self._servers.clear()
