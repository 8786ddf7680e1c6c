"""Helpers for tests that need the real system: root, OpenSSH, Unix users.

On a developer's machine without root or sshd such tests are skipped; where
BORUTA_REQUIRE_SYSTEM=1 is set (CI sets it) they fail instead, so CI never counts a
skipped system test as passing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import shutil
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from boruta_dryad import cgroups, remains, sessions


def _missing(reason: str) -> None:
    if os.environ.get("BORUTA_REQUIRE_SYSTEM") == "1":
        pytest.fail(f"{reason}, and BORUTA_REQUIRE_SYSTEM=1 says this test must run")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        _missing("needs root (creates Unix users)")


def require_sshd() -> None:
    require_root()
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        _missing("needs OpenSSH sshd (install openssh-server)")
    if not shutil.which("ssh"):
        _missing("needs the OpenSSH ssh client")


def require_chromium() -> tuple[str, str]:
    """Debian's chromium and its chromedriver (tools/setup-system installs both)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        _missing("needs chromium and chromedriver (install chromium and chromium-driver)")
    assert chromium is not None and driver is not None
    return chromium, driver


def unique_prefix() -> str:
    """A job user prefix no other test run uses."""
    return f"bt{secrets.token_hex(3)}-"


def unique_uuid(label: str) -> str:
    """A board UUID no other test run uses (dryads on one host must never meet twice)."""
    return f"{label}-{uuidlib.uuid4()}"


def users_with_prefix(prefix: str) -> list[str]:
    return sorted(e.pw_name for e in pwd.getpwall() if e.pw_name.startswith(prefix))


def remove_users(prefix: str) -> None:
    """Clean up after a test, whatever it left."""
    for name in users_with_prefix(prefix):
        remove_everything_of(pwd.getpwnam(name).pw_uid)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
    for name in sessions.registered():
        if name.startswith(prefix):
            sessions.unregister(name)


def remove_job_cgroups(state_dir: str) -> None:
    """Kill and remove the job cgroups of the dryad with this state directory, if any."""
    try:
        identity = (Path(state_dir) / "dryad-id").read_text().strip()
    except FileNotFoundError:
        return
    host = cgroups.detect()
    if host.mount is None:
        return
    root = host.mount / host.own.lstrip("/") / f"boruta-dryad-{identity}"
    for job in [p for p in root.glob("*") if p.is_dir()]:
        while job.exists():
            with contextlib.suppress(OSError):  # gone meanwhile, or not yet empty
                (job / "cgroup.kill").write_text("1")
                job.rmdir()
    with contextlib.suppress(FileNotFoundError):
        root.rmdir()


def remove_everything_of(uid: int) -> None:
    """Processes, System V IPC objects and files in shared directories of uid."""
    end_every_process_of(uid)
    remains.remove_sysv_ipc_of(uid, uid)
    remains.remove_files_of(uid)


def end_every_process_of(uid: int) -> None:
    """Kill every process of uid, even one that keeps forking: kill(-1) sent as that uid
    reaches all of them at once (a fork racing it fails)."""
    while processes_of(uid) or processes_of(uid):
        remains.kill_processes_of(uid, uid)


def processes_of(uid: int) -> list[int]:
    """Live processes of a uid (zombies are dead: they only wait for their parent)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                with open(f"/proc/{entry}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError):
                continue
            if state != "Z":
                pids.append(int(entry))
    return pids


# The first line of a Python child the test will interrupt: a suite run as a background job
# hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt. (Not a
# preexec_fn: that makes subprocess fork() the test process, whose gRPC threads grpcio
# restarts in the child, where closing the inherited descriptors before exec can abort it.)
INTERRUPTIBLE = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A file system of its own at path, size bytes large (e.g. "8m"): a disk a test may
    fill or make read-only. Unmounted afterwards, whatever happened."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        _missing(f"cannot mount a tmpfs at {path}: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            # Still busy (a process of a failed test): detach it now, freed when unused.
            subprocess.run(["umount", "--lazy", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; delete it to free the space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler
