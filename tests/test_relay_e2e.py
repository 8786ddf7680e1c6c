"""boruta-relay through real processes: a relay, a scheduler told to use it, a dryad with
real job users, OpenSSH sshd, and SSH sessions through the relay's tunnels that outlive the
scheduler, a scheduler that reconciles the relay when it starts, and a relay that restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import paramiko
import pytest
from access_kit import Login, running_sshd
from boruta.v1 import requests_pb2, types_pb2
from boruta_dryad.devsshd import DevSshd
from boruta_scheduler.relay.config import RelayConfig
from boruta_scheduler.relay.server import Relay
from conftest import start_scheduler
from farm_kit import Farm, SchedulerProcess, board
from relay_kit import RELAY, RelayProcess
from system_kit import remove_users, require_root, unique_prefix
from test_access_e2e import farm_processes

S = types_pb2


RELAY_HOST = "127.0.0.2"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    # Another loopback address than the scheduler's public host: AccessInfo must name it.
    process = RelayProcess(tmp_path / "relay", public_host=RELAY_HOST)
    process.start()
    yield process
    process.remove()


@dataclass
class RelayedFarm:
    """A relay, a scheduler using it, a dryad with one IDLE board behind a real sshd."""

    relay: RelayProcess
    scheduler: SchedulerProcess
    farm: Farm
    uuid: str
    sshd: DevSshd


@pytest.fixture
async def relayed(tmp_path: Path, relay: RelayProcess) -> AsyncIterator[RelayedFarm]:
    prefix = unique_prefix()
    try:
        with running_sshd(tmp_path / "sshd") as sshd:
            options = ("--relay", relay.socket)
            async with farm_processes(tmp_path, sshd, prefix, *options) as parts:
                scheduler, _, farm, uuid = parts
                yield RelayedFarm(relay, scheduler, farm, uuid, sshd)
    finally:
        remove_users(prefix)


def run(client: paramiko.SSHClient, command: str) -> str:
    """A command over an SSH connection that is already open (blocking)."""
    _, out, _ = client.exec_command(command, timeout=20)
    return str(out.read().decode()).strip()


async def until_refused(port: int, *, refused: bool = True) -> None:
    """Wait until nothing listens on port any more (or, refused=False, until something does)."""
    while True:
        try:
            _, writer = await asyncio.open_connection(RELAY_HOST, port)
        except ConnectionRefusedError:
            if refused:
                return
        except ConnectionResetError:
            pass  # taken into a backlog just as the listener closed: try again
        else:
            writer.close()
            if not refused:
                return
        await asyncio.sleep(0.05)


async def test_an_ssh_session_outlives_a_killed_scheduler(relayed: RelayedFarm) -> None:
    relay, scheduler, farm, uuid = relayed.relay, relayed.scheduler, relayed.farm, relayed.uuid
    alice = farm.client("alice")
    request = await alice.new({"board": "rpi4"})
    kept = await alice.new({"board": "rpi4"})  # waits: the farm has one board
    login = Login.of((await alice.acquire(request.id)).access)
    assert login.host == RELAY_HOST
    session = await asyncio.to_thread(login.client)
    try:
        assert await asyncio.to_thread(run, session, "id -un") == login.username
        # A tunnel for a job that no running scheduler knows of any more.
        stray = await relay.open_tunnel(request.id + 1000, relayed.sshd.address)

        scheduler.kill()
        # The open session, a file copied over it, and a new login all work meanwhile.
        assert await asyncio.to_thread(run, session, "echo while down") == "while down"
        payload = os.urandom(1 << 20)

        def copy() -> bytes:
            with session.open_sftp() as sftp:
                with sftp.open("payload", "wb") as f:
                    f.write(payload)
                with sftp.open("payload", "rb") as f:
                    return bytes(f.read())

        assert await asyncio.to_thread(copy) == payload
        assert (await login.paramiko_run("id -un")).strip() == login.username

        await farm.channel.close()
        scheduler.start(listen=farm.address)
        farm.channel = grpc.aio.insecure_channel(
            farm.address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        alice = farm.client("alice")
        # The restarted scheduler makes the relay hold its jobs' tunnels and no other.
        await until_refused(stray)
        assert await asyncio.to_thread(run, session, "echo after") == "after"
        again = Login.of((await alice.acquire(request.id)).access)
        assert (again.host, again.port) == (login.host, login.port)

        # Closing the job closes its tunnel, and the next job gets one of its own.
        await alice.close(request.id)
        await until_refused(login.port)
        assert not await asyncio.to_thread(_still_answers, session)
        nxt = Login.of((await alice.acquire(kept.id)).access)
        assert (await nxt.paramiko_run("id -un")).strip() == nxt.username
        await alice.close(kept.id)
        await farm.admin.wait_worker(uuid, S.WORKER_STATE_IDLE)
    finally:
        session.close()


def _still_answers(session: paramiko.SSHClient) -> bool:
    try:
        return run(session, "echo yes") == "yes"
    except (paramiko.SSHException, OSError, EOFError):
        return False


async def test_a_restarted_relay_gets_its_tunnels_back_on_the_same_ports(
    relayed: RelayedFarm,
) -> None:
    relay, farm, uuid = relayed.relay, relayed.farm, relayed.uuid
    alice = farm.client("alice")
    request = await alice.new({"board": "rpi4"})
    login = Login.of((await alice.acquire(request.id)).access)
    assert (await login.paramiko_run("id -un")).strip() == login.username

    relay.kill()
    await until_refused(login.port)
    relay.start()
    # The scheduler finds the relay back and asks for its job's tunnel again.
    await until_refused(login.port, refused=False)
    assert (await login.paramiko_run("id -un")).strip() == login.username
    again = Login.of((await alice.acquire(request.id)).access)
    assert again.port == login.port
    await alice.close(request.id)
    await until_refused(login.port)
    await farm.admin.wait_worker(uuid, S.WORKER_STATE_IDLE)


async def banner(port: int) -> bytes:
    """The first line whatever answers on the relay's port sends (an sshd's banner)."""
    reader, writer = await asyncio.open_connection(RELAY_HOST, port)
    try:
        return await reader.readline()
    finally:
        writer.close()


async def test_each_board_of_a_request_has_its_own_relay_tunnel(relayed: RelayedFarm) -> None:
    relay, farm = relayed.relay, relayed.farm
    # A second board, served by a stub dryad, leads to the same sshd: only its banner is read.
    await farm.add_dryad([board("relay-board", board="relay")], ssh_address=relayed.sshd.address)
    alice = farm.client("alice")
    profiles = [
        S.Profile(name="dut", caps={"board": "rpi4"}),
        S.Profile(name="relay", caps={"board": "relay"}),
    ]
    created = await alice.requests.NewRequest(
        requests_pb2.NewRequestRequest(profiles=profiles), metadata=alice.metadata
    )
    request_id = created.request.id
    acquired = await alice.acquire(request_id)
    ports = [b.access.port for b in acquired.boards]
    assert len(set(ports)) == 2 and all(b.access.host == RELAY_HOST for b in acquired.boards)
    for port in ports:
        assert (await banner(port)).startswith(b"SSH-2.0-")

    relay.kill()
    for port in ports:
        await until_refused(port)
    relay.start()
    # The scheduler asks the new relay for both tunnels again, each on its port.
    for port in ports:
        await until_refused(port, refused=False)
        assert (await banner(port)).startswith(b"SSH-2.0-")
    again = await alice.acquire(request_id)
    assert [b.access.port for b in again.boards] == ports
    await alice.close(request_id)
    for port in ports:
        await until_refused(port)
    await farm.admin.wait_worker(relayed.uuid, S.WORKER_STATE_IDLE)
    await farm.admin.wait_worker("relay-board", S.WORKER_STATE_IDLE)


AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


def test_the_control_api_refuses_anyone_but_the_relays_user(
    tmp_path: Path, relay: RelayProcess
) -> None:
    require_root()
    # Even with its directory open to all, the socket itself lets only its owner in.
    os.chmod(relay.dir, 0o755)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print(e.strerror)\n"
        "else:\n"
        "    print('connected')\n"
    )
    outsider = subprocess.run(
        [*AS_NOBODY, "/usr/bin/python3", "-c", probe, relay.socket],
        capture_output=True,
        text=True,
        check=True,
    )
    assert outsider.stdout.strip() == "Permission denied", outsider.stderr


def test_a_second_relay_on_a_served_socket_exits_2_in_one_line(
    tmp_path: Path, relay: RelayProcess
) -> None:
    second = subprocess.run(
        [*RELAY, "--socket", relay.socket],
        capture_output=True,
        text=True,
    )
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1
    assert "another relay serves it" in second.stderr


async def test_a_tunnel_the_relay_reopens_elsewhere_is_handed_out_there(tmp_path: Path) -> None:
    """In-process scheduler and relay, a stub dryad: the port a job's tunnel moved to (its
    old one taken while the relay was away) is stored and handed out from then on."""
    socket_dir = Path(tempfile.mkdtemp(prefix="relay-"))  # short, for a Unix socket's path
    relay = Relay(RelayConfig(socket=str(socket_dir / "relay.sock")))
    await relay.start()
    scheduler = await start_scheduler(tmp_path, relay=relay.config.socket)
    farm = Farm(f"127.0.0.1:{scheduler.port}")
    board_ssh = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    squatter: socket.socket | None = None
    try:
        ssh_address = f"127.0.0.1:{board_ssh.sockets[0].getsockname()[1]}"
        await farm.add_dryad([board("w1", board="rpi4")], ssh_address=ssh_address)
        alice = farm.client("alice")
        request = await alice.new({"board": "rpi4"})
        port = (await alice.acquire(request.id)).access.port
        await relay.stop()
        squatter = socket.create_server(("127.0.0.1", port))
        relay = Relay(relay.config)
        await relay.start()
        while (await alice.acquire(request.id)).access.port == port:
            await asyncio.sleep(0.05)
        moved = (await alice.acquire(request.id)).access.port
        assert relay.tunnels.held() == {request.id: (ssh_address, moved)}
    finally:
        if squatter is not None:
            squatter.close()
        await farm.close()
        await scheduler.stop(grace=0)
        await relay.stop()
        board_ssh.close()
        shutil.rmtree(socket_dir)
