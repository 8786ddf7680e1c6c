"""Logins of job users: the PAM session hook that puts each into its job's cgroup.

sshd runs the hook as root when it opens a session (pam_exec, ``type=open_session``):
for a job user it writes sshd's privileged session process, the parent of the hook, into
the job's cgroup, so the shell, commands, sftp and forwardings, all forked from it later,
live and die there. A job user whose job has no entry here (it ended, or never began) or
whose cgroup cannot be joined is refused, and so is a user the host no longer knows (sshd
looks the user up as the login begins and opens the session only after authenticating it,
so a job may end, user and all, in between). A refused login ends there: the hook kills
its parent, so sshd forks nothing as the user for it. Users who are no job users pass
untouched.

The dryad keeps one entry per live job user in SESSIONS_DIR (root only): a file named
after the user holding the path of its cgroup, or nothing on a host without cgroup v2.
It runs at every SSH login of the host, so it uses the standard library only and runs as
a file with `python -I -S` (no site, no environment): `boruta-job-session --pam-line`
prints the PAM line that does so.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import stat
import sys
from pathlib import Path

SESSIONS_DIR = Path("/run/boruta-dryad/job-sessions")
# Every job user's GECOS field starts with this (see users.marker).
MARKER_START = "boruta-dryad "


def is_job_user(gecos: str) -> bool:
    # GECOS subfields are comma separated; a user may not change the first one.
    return gecos.split(",", 1)[0].startswith(MARKER_START)


def register(username: str, cgroup: Path | None, directory: Path = SESSIONS_DIR) -> None:
    """Let the user's logins in, into cgroup (None: the host has no cgroup for them)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = directory / f".{username}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, b"" if cgroup is None else str(cgroup).encode())
    finally:
        os.close(fd)
    os.replace(tmp, directory / username)


def unregister(username: str, directory: Path = SESSIONS_DIR) -> None:
    """From now on the user's new sessions are refused."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / username)


def registered(directory: Path = SESSIONS_DIR) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if not n.startswith("."))
    except FileNotFoundError:
        return []


def _cgroup_of(username: str, directory: Path) -> Path | None:
    """The user's cgroup; None if the host has none. OSError if the user has no entry."""
    fd = os.open(directory / username, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if info.st_uid != 0 or not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{directory / username} is not the dryad's")
        text = os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)
    return Path(text) if text else None


def join(cgroup: Path, pid: int) -> None:
    """Move pid into cgroup and make sure it is there."""
    (cgroup / "cgroup.procs").write_text(str(pid))
    with open(f"/proc/{pid}/cgroup") as f:
        now = next((line[3:].strip() for line in f if line.startswith("0::")), "")
    if not now or not str(cgroup).endswith(now.rstrip("/")):
        raise OSError(f"process {pid} is in {now!r}, not in {cgroup}")


def open_session(username: str, parent: int, directory: Path = SESSIONS_DIR) -> str | None:
    """Why the session must be refused, or None to let it open."""
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        # Deleted since sshd looked it up (a job that ended while its login was under way):
        # sshd would run the command as the old uid, in no cgroup, after the job's sweep.
        return f"user {username} no longer exists on this host"
    if not is_job_user(entry.pw_gecos):
        return None
    try:
        cgroup = _cgroup_of(username, directory)
    except OSError:
        return f"job user {username} has no live job on this host"
    if cgroup is None:
        return None
    try:
        join(cgroup, parent)
    except OSError as exc:
        return f"cannot put the session of job user {username} into its job's cgroup: {exc}"
    return None


def pam_line() -> str:
    """The session line for sshd's PAM service that runs this hook."""
    hook = f"{sys.executable} -I -S {Path(__file__).resolve()}"
    return f"session required pam_exec.so type=open_session {hook}"


def main() -> None:
    """The PAM hook (pam_exec): exit 0 lets the session open, anything else refuses it."""
    if sys.argv[1:] == ["--pam-line"]:
        print(pam_line())
        sys.exit(0)
    if os.environ.get("PAM_TYPE") != "open_session":
        sys.exit(0)
    parent = os.getppid()
    refusal = open_session(os.environ.get("PAM_USER", ""), parent)
    if refusal is not None:
        print(f"boruta: {refusal}", file=sys.stderr)
        # sshd forks its unprivileged process as the user even after PAM refused the
        # session (only to run nothing in it), outside every cgroup and for as long as
        # the client keeps the connection: end the connection's sshd before it can.
        if parent > 1:
            with contextlib.suppress(OSError):
                os.kill(parent, signal.SIGKILL)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
