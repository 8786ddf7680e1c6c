"""Tunnels forward real TCP connections on loopback, on an address literal or a name."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from boruta_scheduler.tunnels.forwarder import Tunnels


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """A TCP server standing in for a board's sshd: echoes what it reads, upper-cased."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def _round_trip(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"ping")
        await writer.drain()
        return await reader.readexactly(4)
    finally:
        writer.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


BIND_HOSTS = ["127.0.0.1", "localhost", *(["::1"] if _ipv6_loopback() else [])]


@pytest.mark.parametrize("bind_host", BIND_HOSTS)
async def test_a_tunnel_forwards_until_closed_and_reopens_on_its_port(
    echo: str, bind_host: str
) -> None:
    tunnels = Tunnels(bind_host)
    try:
        port = await tunnels.open(7, echo)
        assert await _round_trip(bind_host, port) == b"PING"
        assert await tunnels.open(7, echo) == port  # the same job's tunnel is kept
        await tunnels.close(7)
        with pytest.raises(OSError):
            await _round_trip(bind_host, port)
        # A restart asks for the stored port again.
        assert await tunnels.open(8, echo, port) == port
        assert await _round_trip(bind_host, port) == b"PING"
    finally:
        await tunnels.close_all()
    assert len(tunnels) == 0
