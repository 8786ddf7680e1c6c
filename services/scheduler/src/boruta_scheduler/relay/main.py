"""The boruta-relay command: hold the per-job SSH tunnels the scheduler asks for until told
to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from boruta import logs

from boruta_scheduler.relay.config import RelayConfig, load_config
from boruta_scheduler.relay.server import CannotServe, Relay

log = logging.getLogger(__name__)

READY = "boruta-relay listening on unix:"
EXIT_STOPPED = 0
EXIT_USAGE = 2  # bad options, or a socket another relay serves


async def serve(config: RelayConfig) -> int:
    relay = Relay(config)
    try:
        path = await relay.start()
    except CannotServe as exc:
        return usage_error(exc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The readiness line: the scheduler's --relay is this path; tunnels are on public_host.
    print(f"{READY}{path} tunnels on {config.public_host}", flush=True)
    log.info("serving", extra={"socket": path, "public_host": config.public_host})
    # Only a signal ends the server (cancelling a wait for its termination would cancel
    # its shutdown too).
    await stop.wait()
    log.info("stopping", extra={"tunnels": len(relay.tunnels)})
    await relay.stop()
    return EXIT_STOPPED


def usage_error(error: Exception) -> int:
    """One line on stderr for what only the operator can fix."""
    print(f"boruta-relay: {error}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> None:
    try:
        config = load_config(argv)
    except (ValueError, OSError) as exc:
        sys.exit(usage_error(exc))
    logs.configure(config.log_level)
    sys.exit(run(config))


def run(config: RelayConfig) -> int:
    """Run on uvloop where it is installed: forwarding is the relay's whole work."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))


if __name__ == "__main__":
    main()
