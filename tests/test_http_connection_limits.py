"""The scheduler's HTTP port holds a bounded number of connections, in all and per client
address, and closes the others at once; out of file descriptors it pauses accepting. A real
scheduler process, with few file descriptors to spare, is flooded with real sockets from
several loopback addresses, and its gRPC port still answers."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from boruta.v1 import workers_pb2, workers_pb2_grpc
from farm_kit import SchedulerProcess, identity
from metrics_kit import Samples, samples, scrape, total

PER_ADDRESS = 8
TOTAL = 3 * PER_ADDRESS
REFUSED = "boruta_http_connections_refused_total"


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def connect(
    address: str, source: str, count: int, into: list[socket.socket]
) -> list[socket.socket]:
    """count connections to address from the loopback address source."""
    host, _, port = address.rpartition(":")
    made = []
    for _ in range(count):
        sock = socket.socket()
        into.append(sock)
        sock.settimeout(60)  # a failure bound: every read here gets an answer or an end
        sock.bind((source, 0))
        sock.connect((host, int(port)))
        made.append(sock)
    return made


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the connection (it was refused): its end arrives."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def get_metrics(sock: socket.socket) -> Samples:
    """Scrape /metrics over an open connection (keep-alive)."""
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: scheduler\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection ended; so far {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection ended within the body"
        body += chunk
    return samples(body.decode())


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def grpc_answers(address: str) -> str:
    """WhoAmI over a new connection to the gRPC port."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = workers_pb2_grpc.WorkersStub(channel)
        reply = stub.WhoAmI(workers_pb2.WhoAmIRequest(), metadata=identity("ann"), timeout=60)
    return reply.user


@contextlib.contextmanager
def scheduler(tmp_path: Path, *options: str) -> Iterator[SchedulerProcess]:
    process = SchedulerProcess(
        tmp_path / "state",
        *("--metrics-listen", "127.0.0.1:0", "--metrics-anonymous", "yes", *options),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def spare_descriptors(process: SchedulerProcess, spare: int) -> None:
    """Lower the process's limit on open files to what it has open now plus spare."""
    assert process.proc is not None
    pid = process.proc.pid
    limit = open_descriptors(pid) + spare
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))


def test_connections_beyond_the_limits_are_closed_and_grpc_still_answers(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    options = (
        *("--metrics-max-connections", str(TOTAL)),
        *("--metrics-max-connections-per-address", str(PER_ADDRESS)),
    )
    with scheduler(tmp_path, *options) as process:
        # Room for the limit and gRPC, but not for the flood below: without the limit the
        # HTTP port would take every descriptor the process may open.
        spare_descriptors(process, TOTAL + 20)
        http = process.metrics_address
        first = connect(http, "127.0.0.1", PER_ADDRESS + 4, sockets)
        connect(http, "127.0.0.2", PER_ADDRESS, sockets)
        connect(http, "127.0.0.3", PER_ADDRESS, sockets)
        flood = connect(http, "127.0.0.4", 60, sockets)
        # The connections are accepted in the order they were made.
        assert all(closed_by_server(s) for s in first[PER_ADDRESS:])
        assert all(closed_by_server(s) for s in flood)
        found = get_metrics(first[0])
        assert total(found, REFUSED, limit="per_address") == 4
        assert total(found, REFUSED, limit="total") == 60
        assert total(found, "boruta_http_connections") == TOTAL
        assert grpc_answers(process.address) == "ann"
        # Connections the clients close free their places.
        for sock in first[1:PER_ADDRESS]:
            sock.close()
        later = connect(http, "127.0.0.1", 1, sockets)[0]
        assert get_metrics(later)["boruta_http_connections", ()] <= TOTAL


def test_out_of_descriptors_it_pauses_accepting_and_recovers(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    with scheduler(tmp_path) as process:
        spare_descriptors(process, 6)
        http = process.metrics_address
        connect(http, "127.0.0.5", 20, sockets)
        reader = process.log_path
        for _ in range(6000):
            if "accepting paused" in reader.read_text():
                break
            time.sleep(0.01)  # a poll of the log, not a wait for something to happen
        else:
            raise AssertionError(f"no pause logged:\n{reader.read_text()}")
        for sock in sockets:
            sock.close()
        sockets.clear()
        # Its descriptors back, the port serves again; so did gRPC meanwhile.
        assert grpc_answers(process.address) == "ann"
        for _ in range(6000):
            with contextlib.suppress(OSError):
                found = samples(scrape(http))
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the HTTP port never served again")
        assert total(found, REFUSED) == 0
