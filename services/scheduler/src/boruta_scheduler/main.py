"""The boruta-scheduler command: read config, restore state, serve until told to stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from boruta import logs
from boruta.address import join_host_port, split_host_port
from boruta.ports import CannotListen
from boruta.tls import TlsFiles

from boruta_scheduler.app.leadership import Leadership
from boruta_scheduler.app.warm import Follower
from boruta_scheduler.config import SchedulerConfig, ServerConfig, load_config
from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.rpc.server import Scheduler, transport_security
from boruta_scheduler.rpc.standby import Standby
from boruta_scheduler.store import POSTGRESQL_SCHEMES, CannotOpenStore, open_store, safe_url

if TYPE_CHECKING:  # loaded only when a metrics port is configured: they take 0.6 s
    from boruta.metrics_http import MetricsServer

    from boruta_scheduler.app.metrics import SchedulerMetrics
    from boruta_scheduler.web.dashboard import Dashboard

log = logging.getLogger(__name__)

# Exit codes (docs/install.md): a unit should restart the scheduler only after FAILED.
EXIT_STOPPED = 0  # stopped by SIGTERM or SIGINT
EXIT_FAILED = 1  # the engine failed, or the database server is not reachable: restart
EXIT_USAGE = 2  # bad options or configuration, or a port that cannot be bound
EXIT_CANNOT_WRITE = 73  # the store cannot be opened for writing (read-only, permissions)
EXIT_STEPPED_DOWN = 75  # lost the lead of a shared store: restart, as a standby
STEP_DOWN_GRACE_S = 0.5


async def serve(config: SchedulerConfig) -> int:
    """Serve on the configured store; several schedulers on one PostgreSQL store elect a
    leader among them, a scheduler on SQLite or in memory is on its own."""
    if config.server.store_url.startswith(POSTGRESQL_SCHEMES):
        return await serve_shared(config)
    return await serve_alone(config)


async def serve_alone(config: SchedulerConfig) -> int:
    metrics = scheduler_metrics(config.server)
    try:
        scheduler = Scheduler(config, metrics=metrics)
        http, dashboard = http_port(config.server, scheduler.tls, metrics)
    except ValueError as exc:  # e.g. plaintext asked for on an address other than loopback
        return usage_error(exc)
    try:
        port = await scheduler.start()
        if http is not None:
            await http.start()
            http.tokens = scheduler.tokens.identify
        if dashboard is not None and scheduler.service is not None:
            dashboard.attach(scheduler.service)
    except CannotListen as exc:
        # A restart would find the port as busy as now, so this is a configuration error;
        # the engine has started, and is stopped cleanly rather than torn down as a crash.
        await scheduler.stop()
        return usage_error(exc)
    # Before the readiness line: whoever reads it may stop us at once, and cleanly.
    stop = stop_on_signals()
    announce(config.server, port, scheduler.token_port, http)
    await first(scheduler.wait(), stop.wait())
    failed = scheduler.engine is not None and scheduler.engine.failure is not None
    log.info("stopping")
    await stop_serving(scheduler, http, dashboard)
    return EXIT_FAILED if failed else EXIT_STOPPED


def scheduler_metrics(server: ServerConfig) -> SchedulerMetrics | None:
    """The process's metrics, if a metrics port is configured."""
    if not server.metrics_listen:
        return None
    from boruta_scheduler.app.metrics import SchedulerMetrics

    return SchedulerMetrics()


def http_port(
    server: ServerConfig, tls: TlsFiles | None, metrics: SchedulerMetrics | None
) -> tuple[MetricsServer | None, Dashboard | None]:
    """The HTTP port with the metrics and (unless turned off) the dashboard, if a port is
    configured (ValueError: options to fix)."""
    if metrics is None:
        return None, None
    from boruta.metrics_http import MetricsServer

    dashboard = None
    if server.dashboard:
        from boruta_scheduler.web.dashboard import Dashboard

        dashboard = Dashboard(
            anonymous=tls is None, sample_interval=server.dashboard_sample_interval
        )
    http = MetricsServer(
        metrics.registry,
        server.metrics_listen,
        tls,
        anonymous=server.metrics_anonymous,
        setting="--metrics-listen or BORUTA_METRICS_LISTEN",
        extend=None if dashboard is None else dashboard.routes,
        max_connections=server.metrics_max_connections,
        max_connections_per_address=server.metrics_max_connections_per_address,
    )
    if dashboard is not None:
        dashboard.http = http
    return http, dashboard


async def stop_serving(
    scheduler: Scheduler,
    http: MetricsServer | None,
    dashboard: Dashboard | None,
    grace: float | None = None,
) -> None:
    """Stop what a leader (or a scheduler alone) serves: the dashboard's live streams
    first, so that the HTTP port's stop does not wait for them, then gRPC, then HTTP."""
    if dashboard is not None:
        await dashboard.close()
    if grace is None:
        await scheduler.stop()
    else:
        await scheduler.stop(grace=grace)
    if http is not None:
        await http.stop()


async def serve_shared(config: SchedulerConfig) -> int:
    """One of several schedulers on a PostgreSQL store: a standby on the configured ports
    until it takes the lease, then the leader on the same ports until it stops or loses the
    lease (then it exits EXIT_STEPPED_DOWN, and comes back as a standby when restarted: a
    fresh process holds nothing of the lost lead)."""
    server = config.server
    metrics = scheduler_metrics(server)
    try:
        tls = transport_security(server)
        # A standby serves its metrics too: boruta_leader says it is one.
        http, dashboard = http_port(server, tls, metrics)
    except ValueError as exc:
        return usage_error(exc)
    store = open_store(server.store_url)  # migrates, as every scheduler does at start
    from boruta_scheduler.store.leader import Candidate, LeaderLease
    from boruta_scheduler.store.postgresql import PostgreSQLStore

    assert isinstance(store, PostgreSQLStore)
    lease = LeaderLease(server.store_url, server.lease)
    leadership = Leadership(lease, server.lease_renew)
    standby = Standby(server, tls, leadership.leader_address)
    try:
        await standby.start()
        if http is not None:
            await http.start()
    except CannotListen as exc:
        await standby.stop()
        lease.close()
        store.close()
        return usage_error(exc)
    bound = same_ports(config, standby.port, standby.token_port)
    me = Candidate(
        # Only one process can have these ports bound: one that finds the lease under this
        # name took it over from its own previous process, which is gone (a restart).
        f"{socket.gethostname()} {bound.server.listen}",
        server.advertise or join_host_port(server.public_host, standby.port),
        server.advertise_tokens
        or (join_host_port(server.public_host, standby.token_port) if standby.token_port else ""),
    )
    stop = stop_on_signals()
    # A standby keeps a warm copy of the live state, so that taking over reads only the
    # changes since its last poll (app/warm.py).
    follower = Follower(store)
    # A standby is ready once it has read the lease and can name the leader; a scheduler
    # that takes the lease at once (e.g. after its own restart) once it serves as leader.
    epoch = await leadership.try_acquire(me)
    announced = epoch is None
    if epoch is None:
        announce(server, standby.port, standby.token_port, http)
        if server.standby_copy:
            follower.start()
        acquiring = asyncio.ensure_future(leadership.acquire(me))
        await first(acquiring, stop.wait())
        if not acquiring.done() or acquiring.cancelled():
            log.info("stopping")
            await follower.stop()
            if http is not None:
                await http.stop()  # a standby's dashboard has nothing to close
            await standby.stop()
            lease.close()
            store.close()
            return EXIT_STOPPED
        epoch = acquiring.result()
    took = time.monotonic()
    store.epoch = epoch
    store.on_fenced = leadership.fenced
    leadership.keep()
    scheduler = Scheduler(bound, store=store, metrics=metrics)
    try:
        # The lease UPDATE waited for a commit of the old leader in flight, and nothing
        # commits under its epoch after it: the copy's last read misses nothing.
        await scheduler.start(before_bind=standby.stop, snapshot=await follower.takeover())
    except CannotListen as exc:  # someone took our port in the instant it was free
        print(f"boruta-scheduler: {exc}", file=sys.stderr)
        await scheduler.stop()
        leadership.stop()
        lease.close()
        return EXIT_FAILED
    if http is not None:
        http.tokens = scheduler.tokens.identify
    if dashboard is not None and scheduler.service is not None:
        dashboard.attach(scheduler.service)
    if not announced:
        announce(server, scheduler.port, scheduler.token_port, http)
    # Tests and scripts wait for this line; it follows the readiness line.
    print(f"boruta-scheduler leading as epoch {store.epoch}", flush=True)
    log.info(
        "serving as leader",
        extra={"epoch": store.epoch, "seconds": round(time.monotonic() - took, 3)},
    )
    await first(scheduler.wait(), stop.wait(), leadership.lost.wait())
    failed = scheduler.engine is not None and scheduler.engine.failure is not None
    if leadership.lost.is_set():
        # Nothing more can commit (fenced). Calls in flight get their answer (a write:
        # UNAVAILABLE, which clients retry elsewhere, not CANCELLED) for a moment; then the
        # rest are cut rather than answered from a state another leader has moved on from.
        await scheduler.not_serving()
        await stop_serving(scheduler, http, dashboard, grace=STEP_DOWN_GRACE_S)
        leadership.stop()
        lease.close()
        return EXIT_STEPPED_DOWN
    log.info("stopping")
    await stop_serving(scheduler, http, dashboard)
    leadership.stop()
    await leadership.release()
    lease.close()
    return EXIT_FAILED if failed else EXIT_STOPPED


def same_ports(config: SchedulerConfig, port: int, token_port: int) -> SchedulerConfig:
    """config with the ports the standby bound (a port 0 made concrete)."""
    server = config.server
    listen = join_host_port(split_host_port(server.listen, listen=True)[0], port)
    listen_tokens = server.listen_tokens
    if listen_tokens:
        listen_tokens = join_host_port(split_host_port(listen_tokens, listen=True)[0], token_port)
    same = dataclasses.replace(server, listen=listen, listen_tokens=listen_tokens)
    return dataclasses.replace(config, server=same)


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def announce(
    server: ServerConfig, port: int, token_port: int, http: MetricsServer | None = None
) -> None:
    """The readiness line: tests and scripts wait for it and read the port from it."""
    host = split_host_port(server.listen, listen=True)[0] or "0.0.0.0"
    address = join_host_port(host, port)
    print(f"boruta-scheduler listening on {address}", flush=True)
    if token_port:
        # Both ports are bound already; this line follows the readiness line.
        tokens_host = split_host_port(server.listen_tokens, listen=True)[0]
        tokens = join_host_port(tokens_host, token_port)
        print(f"boruta-scheduler tokens on {tokens}", flush=True)
    if http is not None:
        # Bound already too; after the tokens line, if there is one.
        metrics_host = split_host_port(server.metrics_listen, listen=True)[0] or "0.0.0.0"
        print(f"boruta-scheduler metrics on {join_host_port(metrics_host, http.port)}", flush=True)
    store = safe_url(server.store_url)  # a PostgreSQL URL may hold a password
    log.info("serving", extra={"address": address, "store": store})


async def first(*waits: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> None:
    """Wait until the first of waits is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


def usage_error(error: Exception) -> int:
    """One line on stderr for what only the operator can fix; a traceback would add nothing."""
    print(f"boruta-scheduler: {error}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(argv)
    except (ValueError, OSError) as exc:
        sys.exit(usage_error(exc))
    logs.configure(config.server.log_level)
    try:
        code = run(serve(config))
    except CannotOpenStore as exc:
        # One line that says which path and why; a traceback would add nothing.
        print(f"boruta-scheduler: {exc}", file=sys.stderr)
        code = EXIT_CANNOT_WRITE
    except StoreUnavailable as exc:
        # A database server that is not up yet: worth a restart, unlike the above.
        print(f"boruta-scheduler: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code)


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed: it takes a sixth off the CPU of every call."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    main()
