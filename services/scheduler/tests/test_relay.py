"""The relay and its client in one process, over a real Unix socket and real TCP: orders,
reconciling, a relay that restarts, and a control socket nobody else may use."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from boruta.v1 import relay_pb2, relay_pb2_grpc
from boruta_scheduler.relay.client import RelayTunnels
from boruta_scheduler.relay.config import RelayConfig, load_config
from boruta_scheduler.relay.server import CannotServe, Relay
from boruta_scheduler.tunnels import TunnelError


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short: a Unix socket's path has at most 107 bytes, and pytest's tmp_path is long.
    path = Path(tempfile.mkdtemp(prefix="relay-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def board() -> AsyncIterator[str]:
    """A TCP echo server standing in for a board's sshd."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def started_relay(socket_dir: Path) -> Relay:
    relay = Relay(RelayConfig(socket=str(socket_dir / "relay.sock"), public_host="127.0.0.1"))
    await relay.start()
    return relay


async def round_trip(port: int, text: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(text)
        await writer.drain()
        return await reader.readexactly(len(text))
    finally:
        writer.close()


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_open_forwards_and_close_cuts(socket_dir: Path, board: str) -> None:
    relay = await started_relay(socket_dir)
    client = RelayTunnels(relay.config.socket)
    try:
        assert await client.start([])
        assert client.public_host == "127.0.0.1"
        port = await client.open(1, board)
        assert await client.open(1, board) == port  # the same tunnel, asked again
        assert await round_trip(port) == b"ping"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await client.close(1)
        assert await reader.read() == b""  # the open connection is cut
        writer.close()
        assert await refused(port)
        assert relay.tunnels.held() == {}
    finally:
        await client.close_all()
        await relay.stop()


async def test_a_starting_scheduler_makes_the_relay_hold_exactly_what_it_needs(
    socket_dir: Path, board: str
) -> None:
    relay = await started_relay(socket_dir)
    first = RelayTunnels(relay.config.socket)
    second = RelayTunnels(relay.config.socket)
    try:
        await first.start([])
        kept = await first.open(1, board)
        stray = await first.open(2, board)
        reader, writer = await asyncio.open_connection("127.0.0.1", kept)
        # The first scheduler goes without closing anything: the relay keeps every tunnel.
        await first.close_all()
        assert set(relay.tunnels.held()) == {1, 2}
        # The next one needs job 1's tunnel (on its stored port) and job 3's, not job 2's.
        assert await second.start([(1, board, kept), (3, board, 0)])
        held = relay.tunnels.held()
        assert set(held) == {1, 3} and held[1] == (board, kept)
        assert await refused(stray)
        # The session through the kept tunnel never noticed.
        writer.write(b"still there")
        assert await reader.readexactly(11) == b"still there"
        writer.close()
        assert await second.open(3, board) == held[3][1]
    finally:
        await second.close_all()
        await relay.stop()


async def test_a_restarted_relay_gets_its_tunnels_back_on_the_same_ports(
    socket_dir: Path, board: str
) -> None:
    relay = await started_relay(socket_dir)
    moved: list[tuple[int, int]] = []
    client = RelayTunnels(relay.config.socket, on_moved=lambda rid, port: moved.append((rid, port)))
    try:
        await client.start([])
        port = await client.open(5, board)
        await client.open(6, board)
        await client.close(6)
        before, reconciles = client.instance, client.reconciles
        await relay.stop()
        assert await refused(port)
        relay = await started_relay(socket_dir)
        while client.reconciles == reconciles:
            await asyncio.sleep(0.02)
        assert client.instance != before
        assert relay.tunnels.held() == {5: (board, port)}
        assert await round_trip(port) == b"ping"
        assert moved == []
    finally:
        await client.close_all()
        await relay.stop()


async def test_a_tunnel_the_relay_cannot_reopen_is_reported(socket_dir: Path) -> None:
    relay = await started_relay(socket_dir)
    failed: list[int] = []
    client = RelayTunnels(relay.config.socket, on_failed=lambda rid, why: failed.append(rid))
    try:
        assert await client.start([(9, "no port here", 0), (10, "127.0.0.1:22", 0)])
        assert failed == [9] and set(relay.tunnels.held()) == {10}
        with pytest.raises(TunnelError, match="did not open it"):
            await client.open(11, "::::")
        assert len(client) == 1
    finally:
        await client.close_all()
        await relay.stop()


async def test_a_scheduler_without_its_relay_waits_for_it(socket_dir: Path, board: str) -> None:
    client = RelayTunnels(str(socket_dir / "relay.sock"))
    try:
        assert not await client.start([(1, board, 0)], wait=0.2)
        relay = await started_relay(socket_dir)
        while not client.reconciles:
            await asyncio.sleep(0.02)
        assert set(relay.tunnels.held()) == {1}
    finally:
        await client.close_all()
        await relay.stop()


async def test_the_control_socket_is_its_owners_alone(socket_dir: Path) -> None:
    relay = await started_relay(socket_dir)
    try:
        path = Path(relay.config.socket)
        assert path.stat().st_mode & 0o777 == 0o600
        # A second relay on the same socket is refused, in one line.
        with pytest.raises(CannotServe, match="another relay serves it"):
            await started_relay(socket_dir)
    finally:
        await relay.stop()
    # A socket left behind by a relay that died is no obstacle.
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))
    relay = await started_relay(socket_dir)
    await relay.stop()
    assert not path.exists()


async def test_watch_ends_when_the_relay_stops(socket_dir: Path) -> None:
    relay = await started_relay(socket_dir)
    async with grpc.aio.insecure_channel(f"unix:{relay.config.socket}") as channel:
        watch = relay_pb2_grpc.RelayStub(channel).WatchRelay(relay_pb2.WatchRelayRequest())
        hello = await watch.read()
        assert isinstance(hello, relay_pb2.WatchRelayResponse)
        assert (hello.instance, hello.public_host) == (relay.servicer.instance, "127.0.0.1")
        await relay.stop()
        assert await watch.read() is grpc.aio.EOF


def test_config_refuses_a_wildcard_public_host() -> None:
    with pytest.raises(ValueError, match="no host a user can dial"):
        load_config(["--public-host", "0.0.0.0"], environ={})
    config = load_config([], environ={"BORUTA_RELAY": "/tmp/r.sock", "BORUTA_PUBLIC_HOST": "lab"})
    assert (config.socket, config.public_host, config.tunnel_bind_host) == (
        "/tmp/r.sock",
        "lab",
        "lab",
    )


async def test_a_takeover_replaces_the_tunnels_wanted(socket_dir: Path, board: str) -> None:
    relay = await started_relay(socket_dir)
    client = RelayTunnels(relay.config.socket)
    try:
        await client.start([])
        await client.open(1, board)
        second = await client.open(2, board)
        # The new leader's running jobs: 2 (still on its port) and 3 (not opened yet).
        await client.reconcile([(2, board, second), (3, board, 0)])
        held = relay.tunnels.held()
        assert set(held) == {2, 3} and held[2] == (board, second)
        assert len(client) == 2
    finally:
        await client.close_all()
        await relay.stop()


async def test_a_tunnel_reopened_on_another_port_is_reported(socket_dir: Path, board: str) -> None:
    relay = await started_relay(socket_dir)
    moved: list[tuple[int, int]] = []
    client = RelayTunnels(relay.config.socket, on_moved=lambda rid, port: moved.append((rid, port)))
    squatter: socket.socket | None = None
    try:
        await client.start([])
        port = await client.open(4, board)
        reconciles = client.reconciles
        await relay.stop()
        # While the relay is away, someone else takes the tunnel's port.
        squatter = socket.create_server(("127.0.0.1", port))
        relay = await started_relay(socket_dir)
        while client.reconciles == reconciles:
            await asyncio.sleep(0.02)
        (new_port,) = [p for _, p in relay.tunnels.held().values()]
        assert new_port != port and moved == [(4, new_port)]
        assert await round_trip(new_port) == b"ping"
        assert await client.open(4, board) == new_port
    finally:
        if squatter is not None:
            squatter.close()
        await client.close_all()
        await relay.stop()


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("/proc/no-such-dir/relay.sock", "No such file or directory"),
        ("/tmp/" + "x" * 120 + ".sock", "at most 107 bytes"),
        ("FILE", "exists and is no socket"),
    ],
)
async def test_a_socket_that_cannot_be_served_costs_one_line(
    socket_dir: Path, where: str, why: str
) -> None:
    if where == "FILE":
        where = str(socket_dir / "plain-file")
        Path(where).write_text("")
    with pytest.raises(CannotServe, match=why):
        await Relay(RelayConfig(socket=where)).start()


async def test_a_bad_order_gets_the_status_of_the_one_table(socket_dir: Path) -> None:
    """The relay codes its refusals through the scheduler's status table: a malformed SSH
    address is INVALID_ARGUMENT with a message saying what is wrong, and nothing is opened."""
    relay = await started_relay(socket_dir)
    try:
        async with grpc.aio.insecure_channel(f"unix:{relay.config.socket}") as channel:
            stub = relay_pb2_grpc.RelayStub(channel)
            wanted = relay_pb2.Tunnel(request_id=7, ssh_address="no-port-here")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.OpenTunnel(relay_pb2.OpenTunnelRequest(tunnel=wanted))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "no-port-here" in (refused.value.details() or "")
        assert relay.tunnels.held() == {}
    finally:
        await relay.stop()
