"""A TCP forwarder per job: opened when the job starts, closed (cutting every open
connection) when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from boruta.address import split_host_port

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


class TunnelError(Exception):
    """A tunnel could not be opened; the message says why."""


@dataclass
class _Tunnel:
    server: asyncio.Server
    address: str  # as given, e.g. "board1:22"
    target: tuple[str, int]
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def parse_ports(spec: str) -> range | None:
    """'0' (any free port) or 'LOW-HIGH' (a range a firewall lets through)."""
    spec = spec.strip()
    if spec in ("", "0"):
        return None
    low, sep, high = spec.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError(f"tunnel ports {spec!r}: write 0 or LOW-HIGH, e.g. 30000-30999") from None
    if not 0 < first <= last < 65536:
        raise ValueError(f"tunnel ports {spec!r} are out of 1-65535")
    return range(first, last + 1)


class Tunnels:
    """Opens and closes the tunnels of jobs, keyed by request id."""

    def __init__(self, bind_host: str, ports: range | None = None) -> None:
        self.bind_host = bind_host
        self._ports = ports
        # An address literal is bound directly: asyncio would resolve it again for every
        # job (a host name still goes through asyncio, which binds each of its addresses).
        self._family: socket.AddressFamily | None = None
        with contextlib.suppress(ValueError):
            literal = ipaddress.ip_address(bind_host)
            self._family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        self._tunnels: dict[int, _Tunnel] = {}

    def __len__(self) -> int:
        return len(self._tunnels)

    def held(self) -> dict[int, tuple[str, int]]:
        """Every open tunnel: request id -> (SSH address it leads to, port it listens on)."""
        return {rid: (t.address, _port_of(t)) for rid, t in self._tunnels.items()}

    async def open(self, request_id: int, ssh_address: str, port: int = 0) -> int:
        """Listen for the job and return the port; tries `port` first if given."""
        old = self._tunnels.get(request_id)
        if old is not None:
            if old.target == split_host_port(ssh_address, "ssh_address"):
                return _port_of(old)
            await self.close(request_id)
        target = split_host_port(ssh_address, "ssh_address")
        tunnel_ref: list[_Tunnel] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._forward(tunnel_ref[0], reader, writer)

        server = await self._listen(serve, port)
        tunnel = _Tunnel(server, ssh_address, target)
        tunnel_ref.append(tunnel)
        self._tunnels[request_id] = tunnel
        bound = _port_of(tunnel)
        log.info("tunnel opened", extra={"request": request_id, "port": bound, "to": ssh_address})
        return bound

    async def _listen(
        self,
        serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        port: int,
    ) -> asyncio.Server:
        candidates: list[int] = []
        if port:
            candidates.append(port)
        if self._ports is None:
            candidates.append(0)
        else:
            used = {_port_of(t) for t in self._tunnels.values()}
            candidates.extend(p for p in self._ports if p not in used and p != port)
        last_error: OSError | None = None
        for candidate in candidates:
            try:
                if self._family is None:
                    return await asyncio.start_server(
                        serve, self.bind_host, candidate, reuse_address=True
                    )
                return await asyncio.start_server(serve, sock=self._bound(candidate))
            except OSError as exc:
                last_error = exc
        raise TunnelError(f"no free port on {self.bind_host}: {last_error}")

    def _bound(self, port: int) -> socket.socket:
        """A listening socket on the literal bind address, as start_server would make it."""
        assert self._family is not None
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.bind_host, port))
            sock.listen(100)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def _forward(
        self, tunnel: _Tunnel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        tunnel.tasks.add(task)
        tunnel.writers.add(writer)
        try:
            try:
                board_reader, board_writer = await asyncio.wait_for(
                    asyncio.open_connection(*tunnel.target), 10
                )
            except (OSError, TimeoutError) as exc:
                log.warning("board unreachable", extra={"to": tunnel.target, "error": str(exc)})
                return
            tunnel.writers.add(board_writer)
            try:
                await asyncio.gather(
                    _pipe(reader, board_writer),
                    _pipe(board_reader, writer),
                    return_exceptions=True,
                )
            finally:
                board_writer.close()
                tunnel.writers.discard(board_writer)
        finally:
            writer.close()
            tunnel.writers.discard(writer)
            tunnel.tasks.discard(task)

    async def close(self, request_id: int) -> None:
        """Stop listening and cut every connection of the job's tunnel."""
        tunnel = self._tunnels.pop(request_id, None)
        if tunnel is None:
            return
        tunnel.server.close()
        # Aborting the transports ends every forwarding task: their reads fail at once.
        for writer in list(tunnel.writers):
            writer.transport.abort()
        if tunnel.tasks:
            await asyncio.wait(tunnel.tasks, timeout=5)
        with contextlib.suppress(Exception):
            await tunnel.server.wait_closed()
        log.info("tunnel closed", extra={"request": request_id})

    async def close_all(self) -> None:
        for request_id in list(self._tunnels):
            await self.close(request_id)


def _port_of(tunnel: _Tunnel) -> int:
    return int(tunnel.server.sockets[0].getsockname()[1])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
