"""The relay's control API: the Relay gRPC service on a Unix socket, over the tunnels."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from boruta.address import AddressError
from boruta.v1 import relay_pb2, relay_pb2_grpc

from boruta_scheduler.errors import BorutaError, InvalidArgument, ResourceExhausted
from boruta_scheduler.relay.config import RelayConfig
from boruta_scheduler.rpc.status import status_of
from boruta_scheduler.tunnels.forwarder import TunnelError, Tunnels, parse_ports

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


def _as_boruta_error(exc: AddressError | TunnelError) -> BorutaError:
    """The tunnels' errors in the scheduler's hierarchy, so the one status table codes them."""
    if isinstance(exc, AddressError):
        return InvalidArgument(str(exc))
    return ResourceExhausted(str(exc))


# sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107


class CannotServe(Exception):
    """The control socket cannot be served; the message says why and what to do."""


class RelayServicer(relay_pb2_grpc.RelayServicer):
    """Applies the scheduler's orders to the tunnels one at a time, so they never race."""

    def __init__(self, tunnels: Tunnels, public_host: str) -> None:
        self.tunnels = tunnels
        self.public_host = public_host
        self.instance = uuid.uuid4().hex
        self._lock = asyncio.Lock()
        self._stopped = asyncio.Event()

    async def OpenTunnel(
        self, request: relay_pb2.OpenTunnelRequest, context: Context
    ) -> relay_pb2.OpenTunnelResponse:
        wanted = request.tunnel
        async with self._lock:
            try:
                port = await self.tunnels.open(wanted.request_id, wanted.ssh_address, wanted.port)
            except (AddressError, TunnelError) as exc:
                error = _as_boruta_error(exc)
                await context.abort(status_of(error), str(error))
        return relay_pb2.OpenTunnelResponse(port=port)

    async def CloseTunnel(
        self, request: relay_pb2.CloseTunnelRequest, context: Context
    ) -> relay_pb2.CloseTunnelResponse:
        async with self._lock:
            await self.tunnels.close(request.request_id)
        return relay_pb2.CloseTunnelResponse()

    async def Reconcile(
        self, request: relay_pb2.ReconcileRequest, context: Context
    ) -> relay_pb2.ReconcileResponse:
        wanted = {t.request_id: t for t in request.tunnels}
        failures = []
        async with self._lock:
            closed = [rid for rid in self.tunnels.held() if rid not in wanted]
            for request_id in closed:
                await self.tunnels.close(request_id)
            for request_id, tunnel in wanted.items():
                try:
                    await self.tunnels.open(request_id, tunnel.ssh_address, tunnel.port)
                except (AddressError, TunnelError) as exc:
                    failures.append(relay_pb2.TunnelFailure(request_id=request_id, reason=str(exc)))
            held = self.tunnels.held()
        log.info(
            "reconciled",
            extra={"held": len(held), "closed": len(closed), "failed": len(failures)},
        )
        return relay_pb2.ReconcileResponse(
            tunnels=[
                relay_pb2.Tunnel(request_id=rid, ssh_address=address, port=port)
                for rid, (address, port) in sorted(held.items())
            ],
            failures=failures,
        )

    async def WatchRelay(
        self, request: relay_pb2.WatchRelayRequest, context: Context
    ) -> AsyncIterator[relay_pb2.WatchRelayResponse]:
        yield relay_pb2.WatchRelayResponse(
            instance=self.instance, public_host=self.public_host, tunnels=len(self.tunnels)
        )
        await self._stopped.wait()

    def stopping(self) -> None:
        """End every watch: the scheduler hears the relay go."""
        self._stopped.set()


class Relay:
    """A running relay: the tunnels, and the control API on its Unix socket."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.tunnels = Tunnels(config.tunnel_bind_host, parse_ports(config.tunnel_ports))
        self.servicer = RelayServicer(self.tunnels, config.public_host)
        self.server: grpc.aio.Server | None = None

    async def start(self) -> str:
        """Serve the control API; returns the socket's path."""
        path = Path(self.config.socket)
        prepare_socket(path)
        server = grpc.aio.server()
        relay_pb2_grpc.add_RelayServicer_to_server(self.servicer, server)
        # The umask makes the socket owner-only from its first instant; chmod says so again.
        old = os.umask(0o177)
        try:
            bound = server.add_insecure_port(f"unix:{path}")
        except RuntimeError:
            bound = 0
        finally:
            os.umask(old)
        if not bound:
            raise CannotServe(f"cannot listen on {path} (--socket or BORUTA_RELAY)")
        os.chmod(path, 0o600)
        await server.start()
        self.server = server
        return str(path)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop taking orders and close every tunnel (their users' sessions end)."""
        self.servicer.stopping()
        if self.server is not None:
            await self.server.stop(grace)
        await self.tunnels.close_all()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.socket)


def prepare_socket(path: Path) -> None:
    """Make room for the socket: its directory exists (made its owner's alone), and a socket
    left by a relay that died is removed; one a live relay serves is a busy port."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise CannotServe(
            f"cannot listen on {path}: a Unix socket's path has at most {MAX_SOCKET_PATH} "
            "bytes; choose a shorter one (--socket or BORUTA_RELAY)"
        )
    try:
        _make_room(path)
    except OSError as exc:
        raise CannotServe(f"cannot listen on {path}: {exc.strerror or exc}") from None


def _make_room(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise CannotServe(f"cannot listen on {path}: it exists and is no socket; remove it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise CannotServe(f"cannot listen on {path}: {exc.strerror}") from None
        else:
            raise CannotServe(
                f"cannot listen on {path}: another relay serves it; stop it or choose another "
                "socket (--socket or BORUTA_RELAY)"
            )
    path.unlink()
