"""Wires the parts of a scheduler together and serves them over gRPC."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc
from boruta.pki import PkiError
from boruta.ports import add_port
from boruta.probes import Probes, add_probes
from boruta.tls import (
    TlsFiles,
    channel_credentials,
    choose_transport,
    server_credentials,
    token_server_credentials,
)
from boruta.v1 import audit_pb2, requests_pb2, superviser_pb2, tokens_pb2, workers_pb2
from google.protobuf.descriptor import ServiceDescriptor

from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.app.effects import tunnel_job, tunnel_key
from boruta_scheduler.app.engine import Engine
from boruta_scheduler.app.restore import SurvivorFreezer, freeze_heap, restore_core
from boruta_scheduler.app.service import SchedulerService, ServiceSettings
from boruta_scheduler.app.tokens import TokenAuthority
from boruta_scheduler.app.watch import Publishers, WatchHub
from boruta_scheduler.config import SchedulerConfig, ServerConfig
from boruta_scheduler.core import Changes, OpenTunnel, Snapshot
from boruta_scheduler.dryads import DryadPool
from boruta_scheduler.listing import PageTokens
from boruta_scheduler.relay.client import RelayTunnels, Wanted
from boruta_scheduler.rpc.audit import AuditServicer
from boruta_scheduler.rpc.calls import (
    ANONYMOUS,
    CertificateIdentities,
    CertificateOrToken,
    IdentitySource,
    RefusalLog,
    add_service,
    metadata_identities,
)
from boruta_scheduler.rpc.requests import RequestsServicer
from boruta_scheduler.rpc.standby import SERVICE_NAMES
from boruta_scheduler.rpc.superviser import SuperviserServicer
from boruta_scheduler.rpc.tokens import TokensServicer
from boruta_scheduler.rpc.workers import WorkersServicer
from boruta_scheduler.store import POSTGRESQL_SCHEMES, Store, open_store
from boruta_scheduler.tunnels import Tunnels
from boruta_scheduler.tunnels.forwarder import parse_ports
from boruta_scheduler.types import Identity

if TYPE_CHECKING:  # prometheus-client is loaded only when metrics are kept
    from boruta_scheduler.app.metrics import SchedulerMetrics

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20


def transport_security(server: ServerConfig) -> TlsFiles | None:
    """The TLS files to serve with, or None for plaintext, which is allowed only when asked
    for and only on loopback: there, anyone on the machine can claim to be anyone."""
    try:
        files = TlsFiles.given(server.tls_ca, server.tls_cert, server.tls_key, "scheduler")
        chosen = choose_transport(files, server.plaintext, {"listen": server.listen})
    except PkiError as error:
        raise ValueError(str(error)) from None
    if server.listen_tokens and chosen is None:
        raise ValueError("listen_tokens needs TLS: bearer tokens must never cross plaintext")
    if chosen is not None:
        return chosen
    log.warning(
        "PLAINTEXT: no TLS; every caller is trusted to say who it is. Demo and tests only.",
        extra={"listen": server.listen},
    )
    return None


def page_tokens_for(store: Store, server: ServerConfig) -> PageTokens:
    """Page tokens signed with the key of every scheduler on a PostgreSQL store (a list
    paged across a takeover goes on), else with the key kept beside the default store (a
    restart leaves clients' page tokens good)."""
    if server.store_url.startswith(POSTGRESQL_SCHEMES):
        from boruta_scheduler.store.postgresql import PostgreSQLStore  # needs psycopg

        if isinstance(store, PostgreSQLStore):
            return PageTokens(store.page_token_key())
    return PageTokens.in_directory(server.data_dir)


class Scheduler:
    """A running scheduler; start() restores state from the store and begins serving."""

    def __init__(
        self,
        config: SchedulerConfig,
        store: Store | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.tls = transport_security(config.server)
        self.store = store or open_store(config.server.store_url)
        self.hub = WatchHub()
        self.dryads = DryadPool(
            timeout=config.server.dryad_call_timeout,
            credentials=None if self.tls is None else channel_credentials(self.tls),
            timings=None if metrics is None else metrics.dryad_calls,
        )
        # With a relay, the tunnels (and users' sessions) outlive this process.
        self.tunnels: Tunnels | RelayTunnels
        if config.server.relay:
            self.tunnels = RelayTunnels(config.server.relay)
        else:
            self.tunnels = Tunnels(
                config.server.tunnel_bind_host, parse_ports(config.server.tunnel_ports)
            )
        self.engine: Engine | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.token_port = 0
        self.audit: AuditLog | None = None
        self.refusal_log: RefusalLog | None = None
        self.service: SchedulerService | None = None
        self.health: Probes | None = None  # grpc.health.v1, SERVING once started
        self._freezing = False  # SurvivorFreezer installed by start()

    async def start(
        self,
        before_bind: Callable[[], Awaitable[None]] | None = None,
        snapshot: Snapshot | None = None,
    ) -> int:
        """Restore (from snapshot, a standby's warm copy, if given; else from the store),
        then serve; returns the port bound. before_bind runs just before the ports are
        bound (a standby hands them over: the gap is not the restore's length)."""
        started = time.time()
        # On the loop's thread: nothing is served yet, and a thread of its own would keep
        # its allocator arena's leftovers (a megabyte at 100,000 waiting requests).
        source = "store" if snapshot is None else "warm copy"
        core = restore_core(self.store, started, self.config.policy, snapshot)
        snapshot = None  # its views are the core's garbage now, not to be frozen below
        # Watches, and the token checks, follow what the engine publishes after commits.
        publishers = Publishers(self.hub.publish)
        metrics = self.metrics
        if metrics is not None:
            from boruta_scheduler.app.metrics import FarmMetrics

            farm = FarmMetrics(lambda: None if self.engine is None else self.engine.core)
            farm.seed(core, started)
            publishers.add(farm.publish)
            metrics.follow(farm)
        self.engine = Engine(
            core,
            self.store,
            self.dryads,
            publishers,
            tunnels=self.tunnels,
            retention=self.config.server.retention,
            usage_retention=self.config.server.usage_retention,
            token_retention=self.config.server.token_retention,
            on_commit=None if metrics is None else metrics.observe_commit,
        )
        audit = self.audit = AuditLog(
            self.engine, self.store, self.config.server.audit_refusals_per_minute
        )
        # Before the engine starts, while its core holds exactly what the store does.
        self.tokens = TokenAuthority(self.engine, audit=audit)
        publishers.add(self.tokens.publish)
        initial = core.drain()
        public_host = self.config.server.public_host
        if isinstance(self.tunnels, RelayTunnels):
            public_host = await self._start_relay(self.tunnels, self.engine, initial)
        self.engine.start(initial)
        freeze_heap()
        log.info(
            "state restored",
            extra={
                "source": source,
                "live_requests": core.live_count,
                "workers": core.worker_count,
                "seconds": round(time.time() - started, 3),
            },
        )
        service = self.service = SchedulerService(
            self.engine,
            self.store,
            self.hub,
            ServiceSettings(
                heartbeat_interval=self.config.server.heartbeat_interval,
                public_host=public_host,
                max_watches_per_user=self.config.server.max_watches_per_user,
                retention=self.config.server.retention,
            ),
            audit=audit,
        )
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.refusal_log = RefusalLog(self.config.server.audit_refusals_per_minute)
        service.revalidate = self.tokens.revalidate

        def refused(who: Identity, call: str, why: str) -> None:
            # Callers who proved no identity are only logged: anyone who can reach the
            # token port could otherwise grow the audit table without limit.
            if who.user != ANONYMOUS.user:
                audit.refused(who, call.rpartition(".")[2], why)

        identify: IdentitySource
        if self.tls is None:
            identify = metadata_identities
        else:
            identify = CertificateOrToken(CertificateIdentities(self.tls.read()[0]), self.tokens)
        page_tokens = page_tokens_for(self.store, self.config.server)
        # Who may call each method is app/authz.py's table, applied by add_service.
        services: list[tuple[object, ServiceDescriptor]] = [
            (
                RequestsServicer(service, page_tokens),
                requests_pb2.DESCRIPTOR.services_by_name["Requests"],
            ),
            (
                WorkersServicer(service, page_tokens),
                workers_pb2.DESCRIPTOR.services_by_name["Workers"],
            ),
            (
                SuperviserServicer(service),
                superviser_pb2.DESCRIPTOR.services_by_name["Superviser"],
            ),
            (AuditServicer(audit, page_tokens), audit_pb2.DESCRIPTOR.services_by_name["Audit"]),
            (
                TokensServicer(self.tokens, page_tokens),
                tokens_pb2.DESCRIPTOR.services_by_name["Tokens"],
            ),
        ]
        for servicer, descriptor in services:
            add_service(
                server,
                servicer,
                descriptor,
                identify,
                refused,
                self.refusal_log,
                None if metrics is None else metrics.calls,
            )
        tls = self.tls
        if before_bind is not None:
            await before_bind()
        self.port = add_port(
            server,
            self.config.server.listen,
            None if tls is None else server_credentials(tls),
            "--listen or BORUTA_LISTEN",
        )
        if self.config.server.listen_tokens:
            assert tls is not None  # checked by transport_security
            self.token_port = add_port(
                server,
                self.config.server.listen_tokens,
                token_server_credentials(tls),
                "--listen-tokens or BORUTA_LISTEN_TOKENS",
            )
        # A leader (and a scheduler on its own store) serves; a standby does not (rpc/standby.py).
        self.health = await add_probes(server, SERVICE_NAMES, serving=True)
        await server.start()
        self.server = server
        # Once serving, so that a start that failed leaves no hook behind.
        SurvivorFreezer.install()
        self._freezing = True
        if metrics is not None:
            metrics.leader.leading = True
        return self.port

    async def _start_relay(self, relay: RelayTunnels, engine: Engine, initial: Changes) -> str:
        """Reconcile the relay with the running jobs' tunnels; returns the host AccessInfo
        names: the relay's public host when it answered, else the configured one."""

        def moved(key: int, port: int) -> None:
            request_id, index = tunnel_job(key)
            engine.submit(lambda core, now: core.tunnel_opened(now, request_id, port, index))

        def failed(key: int, why: str) -> None:
            request_id, index = tunnel_job(key)
            engine.submit(lambda core, now: core.tunnel_failed(now, request_id, why, index))

        relay.on_moved, relay.on_failed = moved, failed
        await relay.start(restored_tunnels(initial))
        configured = self.config.server.public_host
        if relay.public_host and relay.public_host != configured:
            log.warning(
                "AccessInfo names the relay's public host, not this scheduler's",
                extra={"relay": relay.public_host, "configured": configured},
            )
        return relay.public_host or configured

    async def stop(self, grace: float = 2.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
        if self.refusal_log is not None:
            self.refusal_log.close()
        if self.audit is not None:
            self.audit.close()
        if self.engine is not None:
            await self.engine.stop()
        await self.dryads.close()
        self.store.close()
        if self._freezing:
            self._freezing = False
            SurvivorFreezer.uninstall()

    async def not_serving(self) -> None:
        """Say NOT_SERVING on grpc.health.v1 (a leader that lost the lead, on its way out)."""
        if self.metrics is not None:
            self.metrics.leader.leading = False
        if self.health is not None:
            await self.health.set_serving(False)

    async def wait(self) -> None:
        """Return when the server stops or the engine fails."""
        assert self.server is not None and self.engine is not None
        server_done = asyncio.ensure_future(self.server.wait_for_termination())
        engine_done = asyncio.ensure_future(self.engine.wait_closed())
        await asyncio.wait({server_done, engine_done}, return_when=asyncio.FIRST_COMPLETED)
        server_done.cancel()
        engine_done.cancel()


def restored_tunnels(initial: Changes) -> list[Wanted]:
    """The tunnels restoring the core asks for: those of every running job."""
    return [
        (tunnel_key(call.request_id, call.index), call.ssh_address, call.port)
        for call in initial.tunnels
        if isinstance(call, OpenTunnel)
    ]
