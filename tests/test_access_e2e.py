"""End to end with real parts: a scheduler, a dryad creating real Unix users, OpenSSH sshd,
and users logging in through the scheduler's tunnel with paramiko and the ssh client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import uuid4

import grpc
import pytest
from access_kit import DryadProcess, Login, dryad_toml, running_sshd
from boruta.v1 import dryad_pb2, dryad_pb2_grpc, types_pb2, workers_pb2
from boruta_client import Access, BoardSSH, HostKeyMismatch
from boruta_dryad.config import parse_config
from boruta_dryad.devsshd import DevSshd
from boruta_dryad.hostkeys import read_host_keys
from boruta_dryad.main import Dryad
from boruta_dryad.stub import StubDryad
from boruta_scheduler.core import Policy
from farm_kit import Farm, SchedulerProcess, board, schedctl_env
from system_kit import processes_of, remove_users, unique_prefix, users_with_prefix

S = types_pb2


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[DevSshd]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def prefix() -> Iterator[str]:
    chosen = unique_prefix()
    yield chosen
    remove_users(chosen)


def one_board_dryad(
    farm: Farm,
    sshd: DevSshd,
    prefix: str,
    state: Path,
    host_keys: Path,
    checks: dict[str, object] | None = None,
) -> Dryad:
    """An in-process dryad with one board behind sshd, handing out host_keys; checks is
    the board's checks table, if any."""
    board: dict[str, object] = {
        "name": "b0",
        "caps": {"board": "rpi4"},
        "ssh_address": sshd.address,
        "ssh_host_keys": [str(host_keys)],
        "user_prefix": prefix,
    }
    if checks is not None:
        board["checks"] = checks
    config = parse_config(
        {
            "scheduler": farm.address,
            "listen": "127.0.0.1:0",
            "plaintext": True,
            "state_dir": str(state),
            "board": [board],
        }
    )
    return Dryad(config)  # default key size: 3072 bits


@pytest.fixture
async def dryad(farm: Farm, sshd: DevSshd, prefix: str, tmp_path: Path) -> AsyncIterator[Dryad]:
    running = one_board_dryad(farm, sshd, prefix, tmp_path / "dryad", sshd.host_key_public)
    await running.start()
    assert running.link is not None
    await running.link.wait_registered()
    uuid = running.config.boards[0].uuid
    await farm.admin.set_state(uuid, S.WORKER_STATE_IDLE)
    await farm.admin.wait_worker(uuid, S.WORKER_STATE_IDLE)
    yield running
    await running.stop()


def uuid_of(dryad: Dryad) -> str:
    return dryad.config.boards[0].uuid


async def test_shell_on_a_real_board_and_everything_torn_down(farm: Farm, dryad: Dryad) -> None:
    alice = farm.client("alice")
    request = await alice.new({"board": "rpi4"})
    login = Login.of((await alice.acquire(request.id)).access)
    assert (login.host, login.username.startswith(dryad.config.boards[0].user_prefix)) == (
        "127.0.0.1",
        True,
    )
    assert "BEGIN RSA PRIVATE KEY" in login.private_key_pem

    assert (await login.paramiko_run("id -un")).strip() == login.username
    result = await login.openssh_run("id -un")
    assert (result.returncode, result.stdout.strip()) == (0, login.username), result.stderr
    # Something the user leaves running after logging out.
    await login.paramiko_run("setsid sleep 600 </dev/null >/dev/null 2>&1 &")
    entry = pwd.getpwnam(login.username)
    assert processes_of(entry.pw_uid)

    await alice.close(request.id)
    await farm.admin.wait_worker(uuid_of(dryad), S.WORKER_STATE_IDLE)
    with pytest.raises(KeyError):
        pwd.getpwnam(login.username)
    assert not os.path.exists(entry.pw_dir)
    assert processes_of(entry.pw_uid) == []
    with pytest.raises(OSError):
        await asyncio.open_connection(login.host, login.port)

    second = await alice.new({"board": "rpi4"})
    next_login = Login.of((await alice.acquire(second.id)).access)
    assert next_login.username != login.username
    assert next_login.private_key_pem != login.private_key_pem
    # The old key does not open the new user's account.
    stale = Login(
        next_login.host,
        next_login.port,
        next_login.username,
        login.private_key_pem,
        next_login.host_keys,
    )
    refused = await stale.openssh_run("true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


async def test_the_dryad_healthchecks_the_real_sshd(
    farm: Farm, dryad: Dryad, sshd: DevSshd
) -> None:
    reasons = []
    alice = farm.client()
    request = await alice.new({"board": "rpi4"})
    await alice.acquire(request.id)
    sshd.stop()  # the board's sshd dies during the job
    await alice.close(request.id)
    failed = await farm.admin.wait_worker(uuid_of(dryad), S.WORKER_STATE_FAILED)
    reasons.append(failed.reason)
    assert failed.reason.startswith("Healthcheck failed:")
    assert "sshd: cannot reach sshd" in failed.reason


async def test_prepare_with_a_failing_check_prepares_nothing(
    farm: Farm, sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    """Prepare asked to run the health checks first refuses a board that fails one: no
    user is made (the last job's goes, with its processes), and the failed check comes
    back; once the board passes, the same call prepares it, as often as it is asked."""
    broken = tmp_path / "camera-broken"
    broken.touch()
    checks = {"commands": [["sh", "-c", f"! test -e {broken} || {{ echo no camera; exit 1; }}"]]}
    running = one_board_dryad(
        farm, sshd, prefix, tmp_path / "dryad", sshd.host_key_public, {**checks, "interval": 0}
    )
    await running.start()
    # Calls come from the test alone: no scheduler may have the users it does not count on
    # removed.
    assert running.link is not None
    await running.link.stop()
    try:
        uuid = uuid_of(running)
        ask = dryad_pb2.PrepareRequest(worker_uuid=uuid, run_healthcheck=True)
        async with grpc.aio.insecure_channel(running.address) as channel:
            dryad = dryad_pb2_grpc.DryadStub(channel)
            refused = await dryad.Prepare(ask, timeout=60)
            assert refused.HasField("healthcheck") and not refused.healthcheck.healthy
            failed = [(c.name, c.detail) for c in refused.healthcheck.checks if not c.ok]
            assert failed == [("sh", "exit status 1: no camera")]
            assert (refused.username, refused.private_key_pem) == ("", "")
            assert list(refused.ssh_host_keys) == []
            assert users_with_prefix(prefix) == []

            broken.unlink()
            first = await dryad.Prepare(ask, timeout=60)
            assert first.healthcheck.healthy and {c.name for c in first.healthcheck.checks} >= {
                "sshd",
                "host_keys",
                "disk",
                "backend",
                "sh",
            }
            assert users_with_prefix(prefix) == [first.username]
            again = await dryad.Prepare(ask, timeout=60)
            assert users_with_prefix(prefix) == [again.username] != [first.username]

            # Failing again after a job that left a process behind (a hostile job could
            # fail a check on purpose, e.g. fill the disk): the last job still ends, its
            # user and processes go, and the board gets no new user.
            left = subprocess.Popen(
                [
                    "setpriv",
                    f"--reuid={again.username}",
                    f"--regid={again.username}",
                    "--clear-groups",
                    *("sh", "-c", "echo ready; exec sleep 600"),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert left.stdout is not None and left.stdout.readline() == "ready\n"
                assert processes_of(pwd.getpwnam(again.username).pw_uid) == [left.pid]
                broken.touch()
                refused = await dryad.Prepare(ask, timeout=60)
                assert not refused.healthcheck.healthy and refused.username == ""
                assert users_with_prefix(prefix) == []
                # Killed by the dryad: the wait only reaps it.
                assert left.wait(timeout=60) == -signal.SIGKILL
            finally:
                left.kill()
                left.wait()

            # Not asked, the dryad prepares without checking, as it always did.
            plain = await dryad.Prepare(dryad_pb2.PrepareRequest(worker_uuid=uuid), timeout=60)
            assert not plain.HasField("healthcheck") and plain.username
            assert users_with_prefix(prefix) == [plain.username]
    finally:
        await running.stop()


class TestJobTimeout:
    @pytest.fixture
    def policy(self) -> Policy:
        return Policy(job_timeout=3.0, max_job_duration=3.0)

    async def test_job_timeout_cuts_an_open_ssh_session(self, farm: Farm, dryad: Dryad) -> None:
        alice = farm.client()
        request = await alice.new({"board": "rpi4"})
        login = Login.of((await alice.acquire(request.id)).access)

        def open_shell_and_wait_for_cut() -> tuple[bytes, float]:
            client = login.client()
            channel = client.invoke_shell()
            channel.settimeout(30)
            channel.send(b"echo still here\n")
            seen = b""
            while b"still here" not in seen:
                seen += channel.recv(4096)
            started = time.monotonic()
            rest = b""
            while chunk := channel.recv(4096):
                rest += chunk
            client.close()
            return rest, time.monotonic() - started

        _, waited = await asyncio.to_thread(open_shell_and_wait_for_cut)
        done = await alice.info(request.id)
        assert (done.state, done.reason) == (S.REQUEST_STATE_DONE, "job timed out")
        assert waited < 30


@asynccontextmanager
async def farm_processes(
    tmp_path: Path, sshd: DevSshd, prefix: str, *options: str, checks: str = ""
) -> AsyncIterator[tuple[SchedulerProcess, DryadProcess, Farm, str]]:
    """A scheduler and a dryad, each its own process, with the board IDLE; checks are
    lines of the board's checks table in the dryad's config."""
    uuid = f"board-{prefix.strip('-')}"
    scheduler = SchedulerProcess(tmp_path / "scheduler", *options)
    config = tmp_path / "dryad.toml"
    dryad = DryadProcess(config)
    farm: Farm | None = None
    try:
        address = scheduler.start()
        config.write_text(
            dryad_toml(
                address,
                sshd.address,
                tmp_path / "dryad",
                prefix,
                uuid=uuid,
                host_keys=sshd.host_key_public,
                checks=checks,
            )
        )
        dryad.start()
        farm = Farm(address)
        admin = farm.admin
        # The watch includes the current state, so it sees the registration whenever it came.
        await admin.wait_worker(uuid, S.WORKER_STATE_MAINTENANCE)
        await admin.set_state(uuid, S.WORKER_STATE_IDLE)
        await admin.wait_worker(uuid, S.WORKER_STATE_IDLE)
        yield scheduler, dryad, farm, uuid
    finally:
        if farm is not None:
            await farm.close()
        dryad.stop()
        scheduler.stop()


# A dryad silent for 2 s has lost its board.
FAST_HEARTBEATS = ("--heartbeat-interval", "0.3s", "--heartbeat-timeout", "2s")


async def expect_heartbeat_lost(farm: Farm, uuid: str, request_id: int) -> None:
    failed = await farm.admin.wait_worker(uuid, S.WORKER_STATE_FAILED)
    assert failed.reason.startswith("heartbeat lost")
    info = await farm.admin.info(request_id)
    assert info.state == S.REQUEST_STATE_FAILED and "heartbeat lost" in info.reason


async def test_killed_dryad_fails_its_worker_and_job(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    async with farm_processes(tmp_path, sshd, prefix, *FAST_HEARTBEATS) as (_, dryad, farm, uuid):
        alice = farm.client()
        request = await alice.new({"board": "rpi4"})
        await alice.acquire(request.id)
        dryad.kill()
        await expect_heartbeat_lost(farm, uuid, request.id)


async def test_a_dryad_back_from_a_pause_removes_the_user_of_its_failed_job(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    async with farm_processes(tmp_path, sshd, prefix, *FAST_HEARTBEATS) as (_, dryad, farm, uuid):
        alice = farm.client()
        request = await alice.new({"board": "rpi4"})
        access = (await alice.acquire(request.id)).access
        # Straight to the board's sshd, as anyone on the lab network could, not the tunnel.
        host, _, port = sshd.address.rpartition(":")
        direct = Login(
            host, int(port), access.username, access.private_key_pem, tuple(access.ssh_host_keys)
        )
        started = await direct.openssh_run("setsid sleep 600 </dev/null >/dev/null 2>&1 & id -un")
        assert started.stdout.strip() == access.username, started.stderr
        uid = pwd.getpwnam(access.username).pw_uid
        assert dryad.proc is not None
        dryad.proc.send_signal(signal.SIGSTOP)
        try:
            await expect_heartbeat_lost(farm, uuid, request.id)
            resumed = (await farm.admin.worker(uuid)).last_seen.ToNanoseconds()
        finally:
            dryad.proc.send_signal(signal.SIGCONT)
        # Heard again, the board is healthchecked, prepared with a new user, and back in
        # service (tests/test_board_health.py); the failed job's user is not.
        back = await farm.admin.wait_worker(uuid, S.WORKER_STATE_IDLE)
        assert back.last_seen.ToNanoseconds() > resumed
        # The dryad handles each reply before it sends the next call: two calls seen once
        # it is IDLE mean the verdict of the first (keep only the new user) is carried out.
        seen = {back.last_seen.ToNanoseconds()}
        while len(seen) < 3:
            seen.add((await farm.admin.worker(uuid)).last_seen.ToNanoseconds())
            await asyncio.sleep(0.05)
        with pytest.raises(KeyError):
            pwd.getpwnam(access.username)
        assert processes_of(uid) == []
        refused = await direct.openssh_run("id -un")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr


async def test_restarted_scheduler_gets_its_dryads_back(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    # A timeout the dryad's reconnection fits in on a loaded machine: the board must keep its
    # state, not fail and come back (seen: 3 s was not enough with the suite beside others).
    async with farm_processes(
        tmp_path, sshd, prefix, "--heartbeat-interval", "0.3s", "--heartbeat-timeout", "20s"
    ) as (scheduler, _, farm, uuid):
        scheduler.kill()
        await farm.channel.close()
        restarted_at = time.time()
        scheduler.start(listen=farm.address)
        farm.channel = grpc.aio.insecure_channel(farm.address)
        admin = farm.admin
        # Nobody touches the dryad: it reconnects and heartbeats by itself. A board's move to
        # IDLE after Prepare is no commit of its own (docs/architecture.md), so the restarted
        # scheduler may find it in PREPARE and prepare it again; it must never fail meanwhile.
        for _ in range(600):
            worker = await admin.worker(uuid)
            assert worker.state != S.WORKER_STATE_FAILED, worker
            heard = worker.last_seen.ToNanoseconds() / 1e9 > restarted_at
            if heard and worker.state == S.WORKER_STATE_IDLE:
                break
            await asyncio.sleep(0.05)
        assert worker.last_seen.ToNanoseconds() / 1e9 > restarted_at
        assert worker.state == S.WORKER_STATE_IDLE
        # And the whole path works again.
        alice = farm.client()
        request = await alice.new({"board": "rpi4"})
        login = Login.of((await alice.acquire(request.id)).access)
        assert (await login.paramiko_run("id -un")).strip() == login.username
        await alice.close(request.id)
        await admin.wait_worker(uuid, S.WORKER_STATE_IDLE)


async def test_restarted_dryad_leaves_no_stale_users(
    sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    async with farm_processes(tmp_path, sshd, prefix) as (_, dryad, farm, uuid):
        (before,) = users_with_prefix(prefix)  # the prepared user of the idle board
        admin = farm.admin
        stream = admin.workers.WatchWorkers(
            workers_pb2.WatchWorkersRequest(filter=workers_pb2.WorkerFilter(uuids=[uuid])),
            metadata=admin.metadata,
            timeout=60,
        )
        await stream.initial_metadata()  # from here on no change is missed
        dryad.kill()
        dryad.start()
        # By the time the new dryad serves, the old job user is gone.
        assert before not in users_with_prefix(prefix)
        # The scheduler sees a new dryad instance and prepares the board again.
        states = []
        async for event in stream:
            states.append((event.worker.state, event.worker.reason))
            if event.worker.state == S.WORKER_STATE_IDLE:
                break
        stream.cancel()
        assert states[0] == (S.WORKER_STATE_PREPARE, "dryad restarted")
        (after,) = users_with_prefix(prefix)
        assert after != before
        alice = farm.client()
        request = await alice.new({"board": "rpi4"})
        login = Login.of((await alice.acquire(request.id)).access)
        assert login.username == after


# ------------------------------------------------------------------- host keys


async def schedctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "schedctl.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def client_access(login: Login) -> Access:
    return Access(login.host, login.port, login.username, login.private_key_pem, login.host_keys)


async def run_with_client_library(access: Access, command: str) -> str:
    def run() -> str:
        with BoardSSH(access) as ssh:
            return ssh.run(command).output

    return await asyncio.to_thread(run)


async def test_access_carries_the_boards_host_keys_and_every_client_checks_them(
    farm: Farm, dryad: Dryad, tmp_path: Path
) -> None:
    alice = farm.client("alice")
    request = await alice.new({"board": "rpi4"})
    login = Login.of((await alice.acquire(request.id)).access)
    sshd_key = dryad.config.boards[0].ssh_host_keys[0]
    assert login.host_keys == (" ".join(Path(sshd_key).read_text().split()[:2]),)
    # The tunnel's port is not 22: OpenSSH needs [host]:port, and checks it strictly.
    assert login.known_hosts().startswith(f"[127.0.0.1]:{login.port} ssh-ed25519 ")
    result = await login.openssh_run("id -un")
    assert (result.returncode, result.stdout.strip()) == (0, login.username), result.stderr
    access = client_access(login)
    assert (await run_with_client_library(access, "id -un")).strip() == login.username
    env = schedctl_env(farm.address, tmp_path)
    for mode in ([], ["--paramiko"]):
        done = await schedctl(env, "ssh", *mode, str(request.id), "--", "id", "-un")
        assert (done.returncode, done.stdout.strip()) == (0, login.username), done.stderr
        assert "warning" not in done.stderr
    acquired = await schedctl(env, "requests", "acquire", str(request.id), "-o", "json")
    files = json.loads(acquired.stdout)
    assert Path(files["known_hosts_file"]).read_text() == login.known_hosts()
    # The login line schedctl prints works as it stands, in batch mode, host key checked.
    table = await schedctl(env, "requests", "acquire", str(request.id))
    (line,) = [x for x in table.stdout.splitlines() if x.strip().startswith("login:")]
    argv = shlex.split(line.partition("login:")[2])
    assert "StrictHostKeyChecking=yes" in argv
    batch = await asyncio.to_thread(
        subprocess.run,
        [*argv[:-1], "-o", "BatchMode=yes", argv[-1], "id -un"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (batch.returncode, batch.stdout.strip()) == (0, login.username), batch.stderr


async def test_an_impostor_at_the_boards_address_is_refused(
    farm: Farm, dryad: Dryad, sshd: DevSshd, tmp_path: Path
) -> None:
    alice = farm.client("alice")
    request = await alice.new({"board": "rpi4"})
    login = Login.of((await alice.acquire(request.id)).access)
    assert (await login.paramiko_run("id -un")).strip() == login.username
    # Someone takes the board's address: the tunnel now leads to their sshd, which knows
    # the same users and would let the job's key in.
    port = int(sshd.address.rpartition(":")[2])
    sshd.stop()
    impostor = DevSshd(port=port, workdir=str(tmp_path / "impostor"))
    impostor.start()
    # Where a command that reached the impostor would leave its mark (the job user can write
    # /tmp, not the test's directories).
    trace = Path(f"/tmp/boruta-impostor-{uuid4().hex}")
    try:
        unchecked = await login.paramiko_run("id -un", check_host_key=False)
        assert unchecked.strip() == login.username  # it would work without the check

        with pytest.raises(HostKeyMismatch, match="not one the board's dryad reported"):
            await run_with_client_library(client_access(login), "id -un")
        refused = await login.openssh_run("id -un")
        assert refused.returncode == 255 and "Host key verification failed" in refused.stderr
        env = schedctl_env(farm.address, tmp_path)
        done = await schedctl(env, "ssh", str(request.id), "--", "touch", str(trace))
        assert done.returncode == 255 and "Host key verification failed" in done.stderr
        assert not trace.exists()
        done = await schedctl(env, "ssh", "--paramiko", str(request.id), "--", "id", "-un")
        assert done.returncode == 255 and "not one the board's dryad reported" in done.stderr
        assert done.stdout == ""
    finally:
        impostor.stop()
        trace.unlink(missing_ok=True)


async def test_host_keys_of_another_sshd_fail_the_boards_healthcheck(
    farm: Farm, sshd: DevSshd, prefix: str, tmp_path: Path
) -> None:
    """A dryad that would hand out the wrong host keys (here its host's own, while the
    board's sshd is another) takes the board out of service instead of locking users out."""
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    running = one_board_dryad(farm, sshd, prefix, tmp_path / "dryad", Path(f"{other}.pub"))
    await running.start()
    try:
        assert running.link is not None
        await running.link.wait_registered()
        uuid = running.config.boards[0].uuid
        await farm.admin.set_state(uuid, S.WORKER_STATE_IDLE)
        failed = await farm.admin.wait_worker(uuid, S.WORKER_STATE_FAILED)
        assert failed.reason.startswith("Healthcheck failed:")
        assert f"host_keys: the sshd at {sshd.address} shows none of the host keys" in (
            failed.reason
        )
    finally:
        await running.stop()


@pytest.mark.parametrize("with_host_keys", [True, False], ids=["host-keys", "old-dryad"])
async def test_a_stub_prepared_key_logs_in_with_paramiko(
    farm: Farm,
    sshd: DevSshd,
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    with_host_keys: bool,
) -> None:
    """The stub dryad's keys are the real dryad's: a user given one logs in with the
    client library (paramiko), checking the host keys the stub hands out. A board whose
    dryad hands out none (older than host keys) is still usable, with a warning."""
    uuid = f"stub-{uuid4().hex}"
    stub_board = board(uuid, board="stub")
    if with_host_keys:
        stub_board.ssh_host_keys = read_host_keys([str(sshd.host_key_public)])
    dryad = StubDryad(farm.address, [stub_board], ssh_address=sshd.address, user_prefix=prefix)
    await dryad.start()
    try:
        await dryad.wait_registered()
        await farm.admin.set_state(uuid, S.WORKER_STATE_IDLE)
        await farm.admin.wait_worker(uuid, S.WORKER_STATE_IDLE)
        alice = farm.client("alice")
        request = await alice.new({"UUID": uuid})
        login = Login.of((await alice.acquire(request.id)).access)
        assert login.username == stub_board.last_username
        assert bool(login.host_keys) is with_host_keys
        # What the real dryad does for the job user, done by hand.
        await asyncio.to_thread(add_job_user, login.username, stub_board.last_public_key)
        with caplog.at_level(logging.WARNING, logger="boruta_client.ssh"):
            output = await run_with_client_library(client_access(login), "id -un")
        assert output.strip() == login.username
        unchecked = "the board's host key is not checked"
        assert any(unchecked in r.getMessage() for r in caplog.records) is not with_host_keys
        env = schedctl_env(farm.address, tmp_path)
        done = await schedctl(env, "ssh", str(request.id), "--", "id", "-un")
        assert (done.returncode, done.stdout.strip()) == (0, login.username), done.stderr
        assert ("reported no SSH host keys" in done.stderr) is not with_host_keys
    finally:
        await dryad.stop()


def add_job_user(name: str, public_key: str) -> None:
    # "*": no password, yet not locked (sshd refuses locked accounts even with a key).
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name], check=True
    )
    entry = pwd.getpwnam(name)
    ssh_dir = Path(entry.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(public_key + "\n")
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
