"""Attacks on job isolation, as a hostile job user would try them through a real sshd."""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from access_kit import Login, running_sshd
from boruta_dryad import remains, sessions
from boruta_dryad.config import BoardConfig
from boruta_dryad.devsshd import PAM_DIR, DevSshd
from boruta_dryad.users import JobHost, JobUsers
from system_kit import (
    processes_of,
    remove_everything_of,
    remove_users,
    require_root,
    unique_prefix,
)
from users_kit import job_host

# Holds a FIFO open for writing, then forks and lets the parent exit, forever: its pid
# changes all the time, so whatever lists the user's processes and then kills them by pid
# misses the newest one. Every copy holds the FIFO, so its reader sees end-of-file only
# once the last copy is dead: a check no fork can slip past.
FORK_BOMB = (
    "import os\n"
    "os.write(os.open({fifo!r}, os.O_WRONLY), b'up')\n"
    "while True:\n"
    "    if os.fork():\n"
    "        os._exit(0)\n"
)


class Witness:
    """The reading end of a FIFO that processes of a job hold open for writing."""

    def __init__(self) -> None:
        # Where job users can reach it (pytest's tmp_path is private to root).
        self._dir = Path(tempfile.mkdtemp(prefix="boruta-witness-"))
        self._dir.chmod(0o755)
        self.path = self._dir / "fifo"
        os.mkfifo(self.path)
        self.path.chmod(0o622)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    def _read(self) -> bytes | None:
        try:
            return os.read(self._fd, 4096)
        except BlockingIOError:
            return None

    async def wait_for_writer(self, uid: int) -> None:
        """Until a process of uid says it holds the FIFO."""
        while not self._read():
            if not processes_of(uid) and not self._read():
                raise AssertionError("the job's process died before it held the FIFO")
            await asyncio.sleep(0.05)

    def writers_alive(self) -> bool:
        # b"": end of file, no writer left; None: nothing to read, yet a writer holds it.
        return self._read() != b""

    def close(self) -> None:
        os.close(self._fd)
        shutil.rmtree(self._dir)


@pytest.fixture
def witness() -> Iterator[Witness]:
    made = Witness()
    yield made
    made.close()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[DevSshd]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def uids() -> Iterator[list[int]]:
    """Uids a test hands out: whatever runs as them is killed afterwards, pass or fail."""
    seen: list[int] = []
    yield seen
    for uid in seen:
        remove_everything_of(uid)


@pytest.fixture
def host() -> Iterator[JobHost]:
    with job_host() as made:
        yield made


@pytest.fixture
def board(sshd: DevSshd) -> Iterator[BoardConfig]:
    prefix = unique_prefix()
    yield BoardConfig(
        name="b0",
        caps={},
        ssh_address=sshd.address,
        uuid=str(uuidlib.uuid4()),
        user_prefix=prefix,
    )
    remove_users(prefix)


def login_of(sshd: DevSshd, username: str, private_key_pem: str) -> Login:
    host, _, port = sshd.address.rpartition(":")
    host_key = " ".join(sshd.host_key_public.read_text().split()[:2])
    return Login(host, int(port), username, private_key_pem, (host_key,))


async def test_a_forking_escapee_is_gone_before_the_next_job(
    sshd: DevSshd,
    board: BoardConfig,
    host: JobHost,
    uids: list[int],
    witness: Witness,
    tmp_path: Path,
) -> None:
    users = JobUsers(board, 2048, str(tmp_path / "state"), host)
    first = await users.prepare()
    uid = pwd.getpwnam(first.username).pw_uid
    uids.append(uid)
    bomb = FORK_BOMB.format(fifo=str(witness.path))
    login = login_of(sshd, first.username, first.private_key_pem)
    started = await login.openssh_run(
        f'nohup setsid python3 -c "{bomb}" >/dev/null 2>&1 </dev/null & echo started'
    )
    assert started.stdout.strip() == "started", started.stderr
    await witness.wait_for_writer(uid)

    second = await users.prepare()
    uids.append(pwd.getpwnam(second.username).pw_uid)
    assert not witness.writers_alive(), "a process of the previous job survived"
    assert processes_of(uid) == []
    # Nothing of the old job may meet the new one: it gets another uid.
    assert pwd.getpwnam(second.username).pw_uid != uid


async def test_every_login_runs_in_its_jobs_cgroup_or_not_at_all(
    sshd: DevSshd, board: BoardConfig, host: JobHost, uids: list[int], tmp_path: Path
) -> None:
    assert host.cgroups is not None, "this host offers cgroup v2 with cgroup.kill"
    users = JobUsers(board, 2048, str(tmp_path / "state"), host)
    job = await users.prepare()
    uid = pwd.getpwnam(job.username).pw_uid
    uids.append(uid)
    cgroup = host.cgroups.path(job.username)
    login = login_of(sshd, job.username, job.private_key_pem)
    result = await login.openssh_run(
        "setsid sleep 600 </dev/null >/dev/null 2>&1 & grep '^0::' /proc/self/cgroup"
    )
    assert result.returncode == 0, result.stderr
    assert str(cgroup).endswith(result.stdout.strip()[3:])
    # What it left running is in there too, and so is nothing else.
    members = {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    assert processes_of(uid) and set(processes_of(uid)) <= members

    # Without a job cgroup to join, sshd runs nothing for the user.
    await host.cgroups.kill(job.username)
    assert host.cgroups.remove(job.username)
    refused = await login.openssh_run("echo in")
    assert "in" not in refused.stdout.splitlines() and refused.returncode != 0
    # sshd forked nothing as the user for it (the hook ended the connection's sshd).
    assert remains.processes_of(uid) == []
    # Nor when the job has ended, whatever its cgroup.
    sessions.unregister(job.username)
    host.cgroups.create(job.username)
    refused = await login.openssh_run("echo in")
    assert "in" not in refused.stdout.splitlines() and refused.returncode != 0
    assert remains.processes_of(uid) == []
    assert (cgroup / "cgroup.procs").read_text() == ""


async def test_a_job_ends_for_good_even_if_a_login_races_it(
    sshd: DevSshd, board: BoardConfig, host: JobHost, uids: list[int], tmp_path: Path
) -> None:
    """Logins that keep coming while the job ends get nothing started that outlives it."""
    users = JobUsers(board, 2048, str(tmp_path / "state"), host)
    job = await users.prepare()
    uid = pwd.getpwnam(job.username).pw_uid
    uids.append(uid)
    login = login_of(sshd, job.username, job.private_key_pem)
    stop = asyncio.Event()

    async def keep_logging_in() -> None:
        while not stop.is_set():
            await login.openssh_run("setsid sleep 600 </dev/null >/dev/null 2>&1 &")

    racers = [asyncio.create_task(keep_logging_in()) for _ in range(3)]
    try:
        give_up = time.monotonic() + 120
        while not processes_of(uid):
            # A racer that fails must fail the test, not leave it waiting for ever.
            for racer in racers:
                if racer.done():
                    racer.result()
            assert time.monotonic() < give_up, "no login of the job user got in"
            await asyncio.sleep(0.05)
        await users.remove_all()
    finally:
        stop.set()
        await asyncio.gather(*racers)
    # Nothing of the uid: not what the logins started, nor sshd's processes for them.
    assert processes_of(uid) == [] and remains.processes_of(uid) == []
    with pytest.raises(KeyError):
        pwd.getpwnam(job.username)


class SessionGate:
    """A step in the sshd's PAM session stack, before the dryad's hook, that holds every
    session opening until the test lets it through: a login that authenticated while its
    job was live, and whose session opens only after the job has ended."""

    def __init__(self, sshd: DevSshd, workdir: Path) -> None:
        workdir.mkdir(mode=0o700)
        self.waiting = workdir / "waiting"
        self._release = workdir / "release"
        os.mkfifo(self._release, 0o600)
        script = workdir / "gate"
        # The FIFO is open (read-write: no wait for a writer) before the gate says it waits.
        script.write_text(
            f"#!/bin/sh\nexec 3<> {self._release}\necho > {self.waiting}\nread go <&3\n"
        )
        script.chmod(0o700)
        pam = PAM_DIR / sshd.pam_service
        lines = pam.read_text().splitlines(keepends=True)
        hook = next(i for i, line in enumerate(lines) if line.startswith("session "))
        lines.insert(hook, f"session required pam_exec.so type=open_session {script}\n")
        pam.write_text("".join(lines))

    def open(self) -> None:
        """Let the held session go on to the dryad's hook (if one is held)."""
        try:
            fd = os.open(self._release, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nothing holds the other end
                raise
            return
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)


async def test_a_login_whose_session_opens_after_its_job_ended_runs_nothing(
    sshd: DevSshd, board: BoardConfig, host: JobHost, uids: list[int], tmp_path: Path
) -> None:
    """sshd authenticates a login (account live) and opens its session later, in a process
    of its own: if the job ends, user and all, in between, the session must not open."""
    users = JobUsers(board, 2048, str(tmp_path / "state"), host)
    job = await users.prepare()
    uid = pwd.getpwnam(job.username).pw_uid
    uids.append(uid)
    gate = SessionGate(sshd, tmp_path / "gate")
    login = login_of(sshd, job.username, job.private_key_pem)
    attempt = asyncio.create_task(
        login.openssh_run("setsid sleep 600 </dev/null >/dev/null 2>&1 & echo started")
    )
    try:
        while not gate.waiting.exists():
            assert not attempt.done(), attempt.result()
            await asyncio.sleep(0.05)
        assert await users.remove_all() == [job.username]
    finally:
        gate.open()
        result = await attempt
    assert "started" not in result.stdout and result.returncode != 0
    # Not even sshd's own process for the connection ran as the uid.
    assert processes_of(uid) == [] and remains.processes_of(uid) == []


async def test_two_dryads_on_one_host_never_remove_each_others_users(
    board: BoardConfig, uids: list[int], tmp_path: Path
) -> None:
    # Even with the same board UUID (a copied configuration), each keeps to its own users.
    other_board = replace(board, user_prefix=unique_prefix())
    try:
        with job_host() as first_host, job_host() as second_host:
            first = JobUsers(board, 2048, str(tmp_path / "first"), first_host)
            second = JobUsers(other_board, 2048, str(tmp_path / "second"), second_host)
            mine = await first.prepare()
            uids.append(pwd.getpwnam(mine.username).pw_uid)
            assert await second.remove_all(legacy=True) == []
            theirs = await second.prepare()
            uids.append(pwd.getpwnam(theirs.username).pw_uid)
            assert pwd.getpwnam(mine.username)
            assert await first.remove_all() == [mine.username]
            assert pwd.getpwnam(theirs.username)
            await second.remove_all()
    finally:
        remove_users(other_board.user_prefix)


# What a job leaves outside its home, made as the job user: (what, command, how to tell
# it is still there, run as root). ipcmk prints the new object's id last; the second
# column of /proc/sysvipc/* is the id.
LEFTOVERS = {
    "SysV shared memory": ("ipcmk -M 4096", "awk '$2 == {id}' /proc/sysvipc/shm | grep -q ."),
    "SysV message queue": ("ipcmk -Q", "awk '$2 == {id}' /proc/sysvipc/msg | grep -q ."),
    "SysV semaphores": ("ipcmk -S 1", "awk '$2 == {id}' /proc/sysvipc/sem | grep -q ."),
    "POSIX shared memory": ("echo s > /dev/shm/{name}; echo 0", "test -e /dev/shm/{name}"),
    "/run/lock": ("echo s > /run/lock/{name}; echo 0", "test -e /run/lock/{name}"),
    "/tmp": ("mkdir /tmp/{name}; echo s > /tmp/{name}/x; echo 0", "test -e /tmp/{name}"),
    "/var/tmp": ("echo s > /var/tmp/{name}; echo 0", "test -e /var/tmp/{name}"),
}


async def leave_everything(login: Login) -> dict[str, list[str]]:
    """Make each leftover as the job user; the commands that tell whether each remains."""
    checks = {}
    for what, (make, check) in LEFTOVERS.items():
        made = await login.openssh_run(make.format(name=login.username))
        assert made.returncode == 0, f"{what}: {made.stderr}"
        ident = made.stdout.split()[-1]
        checks[what] = ["sh", "-c", check.format(id=ident, name=login.username)]
    return checks


def remaining(checks: dict[str, list[str]]) -> list[str]:
    return [what for what, argv in checks.items() if subprocess.run(argv).returncode == 0]


async def test_jobs_of_two_boards_on_one_host_cannot_reach_each_other(
    sshd: DevSshd, board: BoardConfig, host: JobHost, uids: list[int], tmp_path: Path
) -> None:
    other = replace(board, name="b1", uuid=str(uuidlib.uuid4()), user_prefix=unique_prefix())
    try:
        first_users = JobUsers(board, 2048, str(tmp_path / "state"), host)
        second_users = JobUsers(other, 2048, str(tmp_path / "state"), host)
        first = await first_users.prepare()
        second = await second_users.prepare()
        uids.extend(pwd.getpwnam(u.username).pw_uid for u in (first, second))
        a = login_of(sshd, first.username, first.private_key_pem)
        b = login_of(sshd, second.username, second.private_key_pem)
        home = pwd.getpwnam(first.username).pw_dir
        wrote = await a.openssh_run("echo secret > ~/notes && ls ~")
        assert wrote.stdout.split() == ["notes"], wrote.stderr
        for attempt in (f"cat {home}/notes", f"ls {home}", f"cat {home}/.ssh/authorized_keys"):
            peek = await b.openssh_run(attempt)
            assert peek.returncode != 0 and "Permission denied" in peek.stderr, attempt

        left_by_a = await leave_everything(a)
        left_by_b = await leave_everything(b)
        assert remaining(left_by_a) == list(LEFTOVERS)
        await first_users.prepare()  # the first board's job ends
        assert remaining(left_by_a) == []
        # The other board's job runs on with everything it has.
        assert remaining(left_by_b) == list(LEFTOVERS)
        await second_users.remove_all()
        assert remaining(left_by_b) == []
    finally:
        remove_users(other.user_prefix)


def test_people_who_are_no_job_users_pass_the_session_hook() -> None:
    require_root()
    before = Path("/proc/self/cgroup").read_text()
    assert sessions.open_session("root", os.getpid()) is None
    assert Path("/proc/self/cgroup").read_text() == before


def test_a_user_the_host_no_longer_knows_gets_no_session() -> None:
    # sshd asks for a user it looked up before: one gone since may be a job user whose job
    # ended meanwhile, and nothing tells it from anyone else any more.
    require_root()
    before = Path("/proc/self/cgroup").read_text()
    refusal = sessions.open_session(f"{unique_prefix()}gone", os.getpid())
    assert refusal is not None and "no longer exists" in refusal
    assert Path("/proc/self/cgroup").read_text() == before
