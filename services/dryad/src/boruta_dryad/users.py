"""Per-job Unix users: created fresh for every job with the job's public key, removed with
everything they left when the next job is prepared, when the scheduler no longer counts
on them, or when the dryad starts or stops.

Every job user carries a marker in its GECOS field naming the dryad that made it (a
persistent id of its own) and its board, so the dryad finds its users again after a
crash without trusting any state file, and never touches another dryad's. Ending a job
kills its cgroup and then every process of its uid, and removes the user only once none
remains; uids come from a rotating range, so a uid is not handed out again soon.
Commands run without a shell and every name comes from the validated configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from boruta_dryad import remains, sessions
from boruta_dryad.cgroups import CgroupError, JobCgroups
from boruta_dryad.config import BoardConfig
from boruta_dryad.keys import generate_job_key
from boruta_dryad.uids import UidAllocator, UidsExhausted

log = logging.getLogger(__name__)

# Markers written by dryads before they had an id of their own; found by board only.
LEGACY_MARKER = "boruta-dryad job user of "
_USERDEL_NO_SUCH_USER = 6
_USERDEL_USER_BUSY = 8
_USERDEL_HOME_NOT_REMOVED = 12
_ID_IN_USE = 4  # useradd: uid taken; groupadd: gid taken
_NAME_IN_USE = 9
# Rounds of killing before a job user whose processes keep coming back is given up on.
_KILL_ROUNDS = 20

UserSnapshot = frozenset[tuple[str, int]]


class UserError(Exception):
    """A job user could not be created or removed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class PreparedUser:
    """A fresh job user and the private half of its key (secret: hand it on, keep no copy)."""

    username: str
    private_key_pem: str


@dataclass(frozen=True, slots=True)
class JobHost:
    """What the job users of all boards of one dryad share: the dryad's id, the host's
    uids, and the dryad's job cgroups (None where the host offers no cgroup v2)."""

    dryad_id: str
    uids: UidAllocator
    cgroups: JobCgroups | None


def marker(dryad_id: str, uuid: str) -> str:
    return f"{sessions.MARKER_START}{dryad_id} job user of {uuid}"


def _owner(gecos: str) -> tuple[str, str] | None:
    """(dryad id, board UUID) of a job user's marker; the dryad id is "" for a legacy one."""
    text = gecos.split(",", 1)[0]
    if text.startswith(LEGACY_MARKER):
        return "", text[len(LEGACY_MARKER) :]
    if not sessions.is_job_user(text):
        return None
    dryad_id, sep, uuid = text[len(sessions.MARKER_START) :].partition(" job user of ")
    return (dryad_id, uuid) if sep else None


def job_users(dryad_id: str, uuid: str) -> list[str]:
    """Names of the job users this dryad made for the board, as the system knows them now."""
    return sorted(e.pw_name for e in pwd.getpwall() if _owner(e.pw_gecos) == (dryad_id, uuid))


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace").strip()


class JobUsers:
    """The job users of one board."""

    def __init__(self, board: BoardConfig, key_bits: int, state_dir: str, host: JobHost) -> None:
        assert board.uuid, "the board's UUID must be known"
        self.board = board
        self.key_bits = key_bits
        self.host = host
        self._counter = Path(state_dir) / f"{board.name}.next-job"
        self._lock = asyncio.Lock()

    def _mine(self, entry: pwd.struct_passwd, *, legacy: bool = False) -> bool:
        owner = _owner(entry.pw_gecos)
        if owner == (self.host.dryad_id, self.board.uuid):
            return True
        # An older dryad marked the board's UUID alone: taken as this board's only if the
        # name is one this board's configuration gives, too.
        number = entry.pw_name.removeprefix(self.board.user_prefix)
        return (
            legacy
            and owner == ("", self.board.uuid)
            and entry.pw_name.startswith(self.board.user_prefix)
            and number.isdigit()
        )

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
                cgroups = self.host.cgroups
                cgroup = None if cgroups is None else cgroups.create(username)
                sessions.register(username, cgroup)
            except BaseException:
                await self._remove(username)
                raise
            log.info("job user prepared", extra={"board": self.board.name, "user": username})
            return PreparedUser(username, key.private_pem)

    async def remove_all(self, *, legacy: bool = False) -> list[str]:
        """Remove every job user of this board (e.g. left over from before a crash); with
        legacy, also those an older dryad marked with the board's UUID alone."""
        async with self._lock:
            return await self._remove_all(legacy=legacy)

    def snapshot(self) -> UserSnapshot:
        """The board's job users now, by name and uid (to pass to keep_only later)."""
        return frozenset((e.pw_name, e.pw_uid) for e in pwd.getpwall() if self._mine(e))

    async def keep_only(self, before: UserSnapshot, live: Collection[str]) -> list[str]:
        """Remove the users of before that live does not name (and that still are the
        same users), leaving any made since: the scheduler's verdict in a heartbeat reply
        covers only users that existed when the heartbeat was sent."""
        if all(name in live for name, _ in before):
            return []
        removed = []
        async with self._lock:
            for name, uid in sorted(before):
                if name in live:
                    continue
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
                if entry.pw_uid == uid and self._mine(entry):
                    await self._remove(name)
                    removed.append(name)
        return removed

    async def _remove_all(self, *, legacy: bool = False) -> list[str]:
        names = sorted(e.pw_name for e in pwd.getpwall() if self._mine(e, legacy=legacy))
        for name in names:
            await self._remove(name)
        return names

    async def _remove(self, name: str) -> None:
        """End the user's job: no new logins, no process, no IPC object or shared file
        left; then delete the user and its home."""
        sessions.unregister(name)
        try:
            entry: pwd.struct_passwd | None = pwd.getpwnam(name)
        except KeyError:
            entry = None
        if entry is not None:
            # sshd refuses an expired account before it runs anything for it.
            await _run("usermod", "--expiredate", "1", "--", name)
            await self._end_processes(name, entry.pw_uid, entry.pw_gid)
            await asyncio.to_thread(remains.remove_sysv_ipc_of, entry.pw_uid, entry.pw_gid)
            await asyncio.to_thread(remains.remove_files_of, entry.pw_uid)
        elif self.host.cgroups is not None:
            await self._end_cgroup(self.host.cgroups, name)
        output = ""
        for _ in range(10):
            code, output = await _run("userdel", "--remove", "--", name)
            if code in (0, _USERDEL_NO_SUCH_USER):
                log.info("job user removed", extra={"board": self.board.name, "user": name})
                return
            if code == _USERDEL_HOME_NOT_REMOVED and not self._exists(name):
                log.warning("job user removed, home left", extra={"user": name, "why": output})
                return
            if code == _USERDEL_USER_BUSY and entry is not None:
                # Started since the sweep by something other than sshd (cron, at).
                await self._end_processes(name, entry.pw_uid, entry.pw_gid)
            await asyncio.sleep(0.05)
        raise UserError(f"cannot remove job user {name}: userdel said {output!r}")

    @staticmethod
    def _exists(name: str) -> bool:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return False
        return True

    async def _end_cgroup(self, cgroups: JobCgroups, name: str) -> None:
        try:
            await cgroups.kill(name)
            if not cgroups.remove(name):
                raise UserError(f"job cgroup of {name} is still in use after being killed")
        except CgroupError as exc:
            raise UserError(str(exc)) from None

    async def _end_processes(self, name: str, uid: int, gid: int) -> None:
        """Kill the job's cgroup and every process of its uid until none is left; once the
        cgroup is gone, no new login of the user can start anything."""
        cgroups = self.host.cgroups
        left: list[int] = []
        for _ in range(_KILL_ROUNDS):
            try:
                if cgroups is not None:
                    await cgroups.kill(name)
                await asyncio.to_thread(remains.kill_processes_of, uid, gid)
                left = await asyncio.to_thread(remains.processes_of, uid)
                if not left and (cgroups is None or cgroups.remove(name)):
                    # Something that started outside the cgroup (cron, a session racing
                    # the removal) meanwhile goes too.
                    await asyncio.to_thread(remains.kill_processes_of, uid, gid)
                    left = await asyncio.to_thread(remains.processes_of, uid)
                    if not left:
                        return
            except CgroupError as exc:
                raise UserError(f"cannot end the job of {name}: {exc}") from None
            await asyncio.sleep(0.05)
        raise UserError(
            f"processes of job user {name} (uid {uid}) survive being killed: "
            f"{', '.join(map(str, left)) or 'its cgroup'}"
        )

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
            try:
                uid = await asyncio.to_thread(self.host.uids.allocate)
            except UidsExhausted as exc:
                raise UserError(str(exc)) from None
            # The group first, with the same number: group ids must not be reused soon
            # either (files a job leaves may be group-readable).
            code, output = await _run("groupadd", "--gid", str(uid), "--", username)
            if code in (_ID_IN_USE, _NAME_IN_USE):
                continue
            if code != 0:
                raise UserError(f"groupadd {username} failed ({code}): {output}")
            argv = [
                "useradd",
                "--uid",
                str(uid),
                "--gid",
                str(uid),
                "--create-home",
                # Homes are private: jobs of other boards of this host must not read them.
                "--key",
                "HOME_MODE=0700",
                "--shell",
                board.user_shell,
                "--comment",
                marker(self.host.dryad_id, board.uuid),
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
            await _run("groupdel", "--", username)
            if code not in (_ID_IN_USE, _NAME_IN_USE):
                raise UserError(f"useradd {username} failed ({code}): {output}")
        raise UserError(f"no free job user name with prefix {board.user_prefix!r}")

    @staticmethod
    def _install_key(username: str, public_key: str) -> None:
        """A private home with authorized_keys in the modes sshd demands, owned by the user."""
        entry = pwd.getpwnam(username)
        home = Path(entry.pw_dir)
        info = os.lstat(home)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != entry.pw_uid:
            # useradd keeps a directory that exists already: never hand one on.
            raise UserError(f"home {home} of {username} is not a directory of its own")
        os.chmod(home, 0o700)
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
