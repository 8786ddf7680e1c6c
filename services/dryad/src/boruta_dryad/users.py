"""Per-job Unix users: created fresh for every job with the job's public key, removed with
their processes and home when the next job is prepared or the dryad restarts.

Every job user carries a marker naming its board in the GECOS field, so the dryad finds
its users again after a crash without trusting any state file. Commands run without a
shell and every name comes from the validated configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from boruta_dryad.config import BoardConfig
from boruta_dryad.keys import generate_job_key

log = logging.getLogger(__name__)

MARKER_PREFIX = "boruta-dryad job user of "
# Directories every user can write to, and the crontab spool (userdel leaves crontabs).
# A removed job user's uid is reused for the next one, so whatever the old user left here
# must go with it.
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/var/spool/cron/crontabs")
_USERDEL_NO_SUCH_USER = 6
_USERDEL_HOME_NOT_REMOVED = 12
_USERADD_NAME_IN_USE = 9


class UserError(Exception):
    """A job user could not be created or removed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class PreparedUser:
    """A fresh job user and the private half of its key (secret: hand it on, keep no copy)."""

    username: str
    private_key_pem: str


def marker(uuid: str) -> str:
    return MARKER_PREFIX + uuid


def job_users(uuid: str) -> list[str]:
    """Names of the job users of the board with this UUID, as the system knows them now."""
    tag = marker(uuid)
    return sorted(entry.pw_name for entry in pwd.getpwall() if entry.pw_gecos == tag)


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace").strip()


def remove_files_of(uid: int, roots: tuple[str, ...]) -> None:
    """Delete everything owned by uid under roots, never following symbolic links."""
    for root in roots:
        try:
            top = os.scandir(root)
        except OSError:
            continue
        with top:
            entries = list(top)
        for entry in entries:
            _remove_owned(entry, uid)


def _remove_owned(entry: os.DirEntry[str], uid: int) -> None:
    try:
        info = entry.stat(follow_symlinks=False)
        if entry.is_dir(follow_symlinks=False):
            if info.st_uid == uid:
                shutil.rmtree(entry.path, ignore_errors=True)
                return
            # Another user's directory (e.g. a shared one): look inside it.
            with os.scandir(entry.path) as inner:
                children = list(inner)
            for child in children:
                _remove_owned(child, uid)
        elif info.st_uid == uid:
            os.unlink(entry.path)
    except OSError:
        pass


class JobUsers:
    """The job users of one board."""

    def __init__(self, board: BoardConfig, key_bits: int, state_dir: str) -> None:
        assert board.uuid, "the board's UUID must be known"
        self.board = board
        self.key_bits = key_bits
        self._counter = Path(state_dir) / f"{board.name}.next-job"
        self._lock = asyncio.Lock()

    async def prepare(self) -> PreparedUser:
        """Remove the previous job user, create a fresh one with a fresh key. Idempotent."""
        async with self._lock:
            await self._remove_all()
            key = await asyncio.to_thread(
                generate_job_key, self.key_bits, f"boruta job on {self.board.uuid}"
            )
            username = await self._create()
            try:
                await asyncio.to_thread(self._install_key, username, key.public_openssh)
            except BaseException:
                await self._remove(username)
                raise
            log.info("job user prepared", extra={"board": self.board.name, "user": username})
            return PreparedUser(username, key.private_pem)

    async def remove_all(self) -> list[str]:
        """Remove every job user of this board (e.g. left over from before a crash)."""
        async with self._lock:
            return await self._remove_all()

    async def _remove_all(self) -> list[str]:
        names = job_users(self.board.uuid)
        for name in names:
            await self._remove(name)
        return names

    async def _remove(self, name: str) -> None:
        output = ""
        try:
            uid: int | None = pwd.getpwnam(name).pw_uid
        except KeyError:
            uid = None
        for _ in range(10):
            # Processes first: userdel refuses a user that still runs something.
            await _run("pkill", "-KILL", "-u", name)
            if uid is not None:
                await asyncio.to_thread(remove_files_of, uid, SHARED_DIRS)
            code, output = await _run("userdel", "--remove", name)
            if code in (0, _USERDEL_NO_SUCH_USER):
                log.info("job user removed", extra={"board": self.board.name, "user": name})
                return
            if code == _USERDEL_HOME_NOT_REMOVED and name not in job_users(self.board.uuid):
                log.warning("job user removed, home left", extra={"user": name, "why": output})
                return
            await asyncio.sleep(0.05)
        raise UserError(f"cannot remove job user {name}: userdel said {output!r}")

    def _next_number(self) -> int:
        try:
            number = int(self._counter.read_text().strip())
        except (FileNotFoundError, ValueError):
            number = 1
        self._counter.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._counter.with_suffix(".tmp")
        tmp.write_text(f"{number + 1}\n")
        os.replace(tmp, self._counter)
        return number

    async def _create(self) -> str:
        board = self.board
        for _ in range(100):
            username = f"{board.user_prefix}{self._next_number()}"
            if len(username) > 32:
                raise UserError(f"job user name {username!r} is longer than 32 characters")
            argv = [
                "useradd",
                "--create-home",
                "--shell",
                board.user_shell,
                "--comment",
                marker(board.uuid),
                # '*' is no valid password hash: no password login, yet not "locked",
                # so sshd still accepts the key.
                "--password",
                "*",
            ]
            if board.user_groups:
                argv += ["--groups", ",".join(board.user_groups)]
            code, output = await _run(*argv, "--", username)
            if code == 0:
                return username
            if code != _USERADD_NAME_IN_USE:
                raise UserError(f"useradd {username} failed ({code}): {output}")
        raise UserError(f"no free job user name with prefix {board.user_prefix!r}")

    @staticmethod
    def _install_key(username: str, public_key: str) -> None:
        """authorized_keys with the modes sshd demands, owned by the job user."""
        entry = pwd.getpwnam(username)
        home = Path(entry.pw_dir)
        ssh_dir = home / ".ssh"
        os.mkdir(ssh_dir, 0o700)
        os.chown(ssh_dir, entry.pw_uid, entry.pw_gid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(ssh_dir / "authorized_keys", flags, 0o600)
        try:
            os.write(fd, (public_key + "\n").encode())
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
        finally:
            os.close(fd)
