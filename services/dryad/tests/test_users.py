"""Per-job Unix users, for real: created, keyed, and removed with processes and home."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from boruta_dryad.config import BoardConfig
from boruta_dryad.users import LEGACY_MARKER, JobHost, JobUsers, job_users, marker
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from system_kit import processes_of, remove_users, require_root, unique_prefix, users_with_prefix
from users_kit import job_host


@pytest.fixture
def board(tmp_path: Path) -> Iterator[BoardConfig]:
    require_root()
    prefix = unique_prefix()
    yield BoardConfig(
        name="b0",
        caps={},
        ssh_address="h:22",
        uuid=str(uuidlib.uuid4()),
        user_prefix=prefix,
        user_groups=("dialout",),
    )
    remove_users(prefix)


@pytest.fixture
def host() -> Iterator[JobHost]:
    with job_host() as made:
        yield made


@pytest.fixture
def users(board: BoardConfig, host: JobHost, tmp_path: Path) -> JobUsers:
    return JobUsers(board, 2048, str(tmp_path), host)


def public_line_of(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


async def test_prepare_creates_a_keyed_user_as_sshd_demands(
    board: BoardConfig, host: JobHost, users: JobUsers, tmp_path: Path
) -> None:
    prepared = await users.prepare()
    entry = pwd.getpwnam(prepared.username)
    assert prepared.username == f"{board.user_prefix}1"
    assert entry.pw_gecos == marker(host.dryad_id, board.uuid)
    assert entry.pw_shell == "/bin/bash"
    assert entry.pw_uid in host.uids.range and entry.pw_gid == entry.pw_uid
    home = Path(entry.pw_dir)
    ssh_dir = home / ".ssh"
    keys = ssh_dir / "authorized_keys"
    for path, mode in ((home, 0o700), (ssh_dir, 0o700), (keys, 0o600)):
        info = os.stat(path)
        assert stat.S_IMODE(info.st_mode) == mode
        assert (info.st_uid, info.st_gid) == (entry.pw_uid, entry.pw_gid)
    assert keys.read_text().startswith(public_line_of(prepared.private_key_pem))
    shadow = subprocess.run(
        ["getent", "shadow", prepared.username], capture_output=True, text=True, check=True
    ).stdout
    assert shadow.split(":")[1] == "*"  # no password login, not locked for keys
    groups = subprocess.run(
        ["id", "-Gn", prepared.username], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "dialout" in groups and "sudo" not in groups
    key = serialization.load_pem_private_key(prepared.private_key_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    # The dryad keeps no copy of the private key anywhere it wrote.
    body = prepared.private_key_pem.splitlines()[1]
    for path in [*tmp_path.rglob("*"), *Path(entry.pw_dir).rglob("*")]:
        if path.is_file():
            assert body not in path.read_text(errors="replace")


async def test_next_prepare_removes_the_previous_user_and_its_processes(
    board: BoardConfig, host: JobHost, users: JobUsers
) -> None:
    first = await users.prepare()
    entry = pwd.getpwnam(first.username)
    sleeper = subprocess.Popen(
        ["sleep", "600"], user=entry.pw_uid, group=entry.pw_gid, start_new_session=True
    )
    assert processes_of(entry.pw_uid)
    second = await users.prepare()
    assert second.username != first.username
    assert second.private_key_pem != first.private_key_pem
    assert sleeper.wait(10) == -9
    assert processes_of(entry.pw_uid) == []
    assert not Path(entry.pw_dir).exists()
    assert job_users(host.dryad_id, board.uuid) == [second.username]
    # Its uid (and group id) is not handed out again at once.
    assert pwd.getpwnam(second.username).pw_uid != entry.pw_uid


async def test_files_left_in_shared_directories_go_with_the_user(users: JobUsers) -> None:
    first = await users.prepare()
    entry = pwd.getpwnam(first.username)
    leftovers = [Path("/tmp") / f"{first.username}-secret", Path("/dev/shm") / first.username]
    subprocess.run(
        ["sh", "-c", f"echo s > {leftovers[0]}; mkdir {leftovers[1]}; echo s > {leftovers[1]}/x"],
        user=entry.pw_uid,
        group=entry.pw_gid,
        check=True,
    )
    mine = Path("/tmp") / f"{first.username}-root-owned"
    mine.write_text("kept")
    try:
        second = await users.prepare()
        # Whoever gets the uid one day must not inherit the old user's files.
        assert not any(p.exists() for p in leftovers)
        assert mine.read_text() == "kept"
        assert pwd.getpwnam(second.username)
    finally:
        mine.unlink()


async def test_one_user_at_a_time(board: BoardConfig, host: JobHost, users: JobUsers) -> None:
    await users.prepare()
    second = await users.prepare()
    assert job_users(host.dryad_id, board.uuid) == [second.username]


async def test_remove_all_after_a_crash_finds_users_by_their_marker(
    board: BoardConfig, host: JobHost, tmp_path: Path
) -> None:
    await JobUsers(board, 2048, str(tmp_path / "lost"), host).prepare()
    # The dryad, restarted with no memory of its job counter, still finds the user.
    again = JobUsers(board, 2048, str(tmp_path / "fresh"), host)
    removed = await again.remove_all()
    assert len(removed) == 1
    assert users_with_prefix(board.user_prefix) == []


async def test_users_of_an_older_dryad_go_at_start_only(
    board: BoardConfig, users: JobUsers
) -> None:
    """Job users made before dryads had ids carry the board's UUID alone; a dryad of that
    board removes them when it starts (remove_all with legacy), and at no other time, and
    only those with names its configuration gives (another dryad's have other prefixes)."""
    comment = LEGACY_MARKER + board.uuid
    name, elses = f"{board.user_prefix}7", f"{board.user_prefix}x7"
    for made in (name, elses):
        subprocess.run(["useradd", "--comment", comment, "--", made], check=True)
    assert await users.remove_all() == []
    assert await users.remove_all(legacy=True) == [name]
    assert users_with_prefix(board.user_prefix) == [elses]


async def test_keep_only_removes_what_the_scheduler_no_longer_counts_on(
    board: BoardConfig, host: JobHost, users: JobUsers
) -> None:
    first = await users.prepare()
    before = users.snapshot()
    assert await users.keep_only(before, {first.username}) == []
    assert job_users(host.dryad_id, board.uuid) == [first.username]
    assert await users.keep_only(before, set()) == [first.username]
    assert job_users(host.dryad_id, board.uuid) == []
    # A user made after the snapshot is none of the verdict's business.
    second = await users.prepare()
    assert await users.keep_only(before, set()) == []
    assert job_users(host.dryad_id, board.uuid) == [second.username]


async def test_prepare_twice_is_safe(board: BoardConfig, host: JobHost, users: JobUsers) -> None:
    await users.prepare()
    await users.prepare()
    assert len(job_users(host.dryad_id, board.uuid)) == 1
