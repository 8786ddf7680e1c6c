"""Helpers for tests that need the real system: root, OpenSSH, Unix users.

On a developer's machine without root or sshd such tests are skipped; where
BORUTA_REQUIRE_SYSTEM=1 is set (CI sets it) they fail instead, so CI never counts a
skipped system test as passing.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess

import pytest


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


def unique_prefix() -> str:
    """A job user prefix no other test run uses."""
    return f"bt{secrets.token_hex(3)}-"


def users_with_prefix(prefix: str) -> list[str]:
    return sorted(e.pw_name for e in pwd.getpwall() if e.pw_name.startswith(prefix))


def remove_users(prefix: str) -> None:
    """Clean up after a test, whatever it left."""
    for name in users_with_prefix(prefix):
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


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


def unique_uuid(name: str) -> str:
    """A board UUID no other test run on this host uses, readable in logs by its name."""
    return f"{name}-{secrets.token_hex(4)}"


def default_sigint() -> None:
    """preexec_fn for a child the test will interrupt: a suite run as a background job
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
