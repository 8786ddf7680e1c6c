"""What a job user can leave behind outside its home: processes, System V IPC objects and
files in the directories every user may write to. All found by uid; all blocking (call
them from a thread).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# Directories every user can write to, and the cron and at spools (userdel leaves them).
SHARED_DIRS = (
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/dev/mqueue",
    "/run/lock",
    "/var/spool/cron",
)
# /proc/sysvipc file, the column of the object's id, and ipcrm's option for that kind.
_SYSV_IPC = (("shm", "shmid", "-m"), ("msg", "msqid", "-q"), ("sem", "semid", "-s"))


def _uids_of(pid: str) -> set[int]:
    """Real, effective, saved and file-system uid of a live process; empty for a zombie."""
    uids: set[int] = set()
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("State:") and line.split()[1] == "Z":
                return set()
            if line.startswith("Uid:"):
                uids = {int(u) for u in line.split()[1:]}
    return uids


def processes_of(uid: int) -> list[int]:
    """Live processes that have uid as any of their uids."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if uid in _uids_of(entry.name):
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


def as_user(uid: int, gid: int) -> list[str]:
    """The argv prefix that runs a command as uid:gid with no other groups. setpriv switches
    after exec; subprocess's own user= would fork() the dryad, whose gRPC threads grpcio
    restarts in the child, where closing descriptors before exec can abort it (the kill
    would then silently not happen)."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def kill_processes_of(uid: int, gid: int) -> None:
    """SIGKILL every process uid may signal, at once: kill(-1) sent as that uid, which no
    fork can escape (a fork racing it fails). The shell's built-in kill sends it."""
    subprocess.run(
        [*as_user(uid, gid), "/bin/sh", "-c", "kill -9 -1"],
        env={},
        cwd="/",
        check=False,
        capture_output=True,
    )


def sysv_ipc_of(uid: int) -> list[tuple[str, str]]:
    """(ipcrm option, id) of every System V IPC object uid owns or created."""
    found = []
    for kind, id_column, option in _SYSV_IPC:
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except FileNotFoundError:
            continue
        if not lines:
            continue
        header = lines[0].split()
        columns = [header.index(c) for c in ("uid", "cuid")]
        ident = header.index(id_column)
        for line in lines[1:]:
            fields = line.split()
            if any(int(fields[c]) == uid for c in columns):
                found.append((option, fields[ident]))
    return found


def remove_sysv_ipc_of(uid: int, gid: int) -> None:
    """Remove them as uid, their owner or creator: root would need CAP_SYS_ADMIN."""
    objects = sysv_ipc_of(uid)
    if objects:
        argv = ["ipcrm"]
        for option, ident in objects:
            argv += [option, ident]
        subprocess.run([*as_user(uid, gid), *argv], cwd="/", check=False, capture_output=True)


def remove_files_of(uid: int, roots: tuple[str, ...] = SHARED_DIRS) -> None:
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
            if not info.st_mode & 0o022:
                # Another user's directory that only its owner may write to: the job user
                # made nothing in it, so do not walk it (e.g. a big tree under /tmp).
                return
            # A shared directory (writable by group or others): look inside it.
            with os.scandir(entry.path) as inner:
                children = list(inner)
            for child in children:
                _remove_owned(child, uid)
        elif info.st_uid == uid:
            os.unlink(entry.path)
    except OSError:
        pass
