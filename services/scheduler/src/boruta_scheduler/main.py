"""The boruta-scheduler command: read config, restore state, serve until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from boruta import logs
from boruta.address import join_host_port, split_host_port
from boruta.ports import CannotListen

from boruta_scheduler.config import SchedulerConfig, load_config
from boruta_scheduler.errors import StoreUnavailable
from boruta_scheduler.rpc.server import Scheduler
from boruta_scheduler.store import CannotOpenStore, safe_url

log = logging.getLogger(__name__)

# Exit codes (docs/install.md): a unit should restart the scheduler only after FAILED.
EXIT_STOPPED = 0  # stopped by SIGTERM or SIGINT
EXIT_FAILED = 1  # the engine failed, or the database server is not reachable: restart
EXIT_USAGE = 2  # bad options or configuration, or a port that cannot be bound
EXIT_CANNOT_WRITE = 73  # the store cannot be opened for writing (read-only, permissions)


async def serve(config: SchedulerConfig) -> int:
    try:
        scheduler = Scheduler(config)
    except ValueError as exc:  # e.g. plaintext asked for on an address other than loopback
        return usage_error(exc)
    try:
        port = await scheduler.start()
    except CannotListen as exc:
        # A restart would find the port as busy as now, so this is a configuration error;
        # the engine has started, and is stopped cleanly rather than torn down as a crash.
        await scheduler.stop()
        return usage_error(exc)
    # Before the readiness line: whoever reads it may stop us at once, and cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = split_host_port(config.server.listen, listen=True)[0] or "0.0.0.0"
    address = join_host_port(host, port)
    # The readiness line: tests and scripts wait for it and read the port from it.
    print(f"boruta-scheduler listening on {address}", flush=True)
    if scheduler.token_port:
        # Both ports are bound already; this line follows the readiness line.
        tokens_host = split_host_port(config.server.listen_tokens, listen=True)[0]
        tokens = join_host_port(tokens_host, scheduler.token_port)
        print(f"boruta-scheduler tokens on {tokens}", flush=True)
    store = safe_url(config.server.store_url)  # a PostgreSQL URL may hold a password
    log.info("serving", extra={"address": address, "store": store})
    waiter = asyncio.ensure_future(scheduler.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failed = scheduler.engine is not None and scheduler.engine.failure is not None
    waiter.cancel()
    stopper.cancel()
    log.info("stopping")
    await scheduler.stop()
    return EXIT_FAILED if failed else EXIT_STOPPED


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
