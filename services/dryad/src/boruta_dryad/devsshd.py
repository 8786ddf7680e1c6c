"""A private OpenSSH server for local farms and tests: real sshd, in inetd mode.

It listens on a port of its own choosing (port 0 is allowed, unlike sshd's own listener)
and hands each connection to `sshd -i` with a generated host key and a strict
configuration: keys only, no passwords, no root. Its PAM service (sshd takes the name from
its program name) is one of its own, with the dryad's session hook, so that job logins go
through the same path as on a board: into their job's cgroup, or refused. Needs root, as
sshd does to switch users. Boards in a lab use their system sshd instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from boruta.address import AddressError, split_host_port

from boruta_dryad.sessions import pam_line

log = logging.getLogger(__name__)

READY = "boruta-devsshd listening on "

_CONFIG = """\
HostKey {host_key}
PidFile none
UsePAM yes
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
X11Forwarding no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
PrintMotd no
LogLevel {log_level}
"""


# Accounts are checked (an expired job user is refused); sessions go through the dryad's
# hook; nothing authenticates through PAM (keys only).
_PAM = """\
# PAM service of boruta-devsshd in {workdir}; removed when it stops.
auth     required pam_deny.so
account  required pam_unix.so
{session}
password required pam_deny.so
"""
PAM_DIR = Path("/etc/pam.d")


def find_sshd() -> str:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("sshd not found: install openssh-server")


class DevSshd:
    """Accepts connections and runs one `sshd -i` per connection."""

    def __init__(
        self,
        listen_host: str = "127.0.0.1",
        port: int = 0,
        workdir: str | None = None,
        log_level: str = "ERROR",
    ) -> None:
        self.sshd = find_sshd()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="boruta-devsshd-"))
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        host_key = self.workdir / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
            )
        # What a dryad hands out for a board behind this sshd (its ssh_host_keys).
        self.host_key_public = Path(f"{host_key}.pub")
        self.config = self.workdir / "sshd_config"
        self.config.write_text(_CONFIG.format(host_key=host_key, log_level=log_level))
        # sshd insists on its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run(
            [self.sshd, "-t", "-f", str(self.config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd refuses its configuration: {check.stderr.strip()}")
        self._listener = socket.create_server((listen_host, port))
        self.pam_service = f"boruta-devsshd-{secrets.token_hex(4)}"
        # The line a board's /etc/pam.d/sshd gets, with a log of the hook's complaints.
        session = pam_line().replace(" type=", f" log={self.workdir}/session-hook.log type=")
        (PAM_DIR / self.pam_service).write_text(_PAM.format(workdir=self.workdir, session=session))
        self.address = f"{listen_host}:{self._listener.getsockname()[1]}"
        # Each sshd gets this copy, not the live environment: without env=, Popen's vfork()ed
        # child execs with the process's environ array itself, and a thread that changes the
        # environment meanwhile (pytest unsets PYTEST_CURRENT_TEST after every test) shrinks
        # that array while the kernel copies it, so execve fails with EFAULT (Bad address).
        self._env = dict(os.environ)
        self._children: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="devsshd", daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self.address

    def _accept(self) -> None:
        stderr = open(self.workdir / "sshd.log", "ab")  # noqa: SIM115 - lives with the thread
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                try:
                    child = subprocess.Popen(
                        [self.pam_service, "-i", "-e", "-f", str(self.config)],
                        executable=self.sshd,
                        stdin=conn.fileno(),
                        stdout=conn.fileno(),
                        stderr=stderr,
                        start_new_session=True,
                        env=self._env,
                    )
                except OSError as exc:
                    # That one connection is closed unserved; the later ones still get theirs.
                    log.error("cannot start %s for a connection: %s", self.sshd, exc)
                    continue
            with self._lock:
                self._children = {c for c in self._children if c.poll() is None}
                self._children.add(child)

    def stop(self) -> None:
        self._stopped = True
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(5)
        with self._lock:
            for child in self._children:
                if child.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGTERM)
            for child in self._children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
        with contextlib.suppress(FileNotFoundError):
            (PAM_DIR / self.pam_service).unlink()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="boruta-devsshd", description=__doc__)
    parser.add_argument(
        "--listen",
        default=os.environ.get("BORUTA_LISTEN", "127.0.0.1:0"),
        help="host:port to listen on [env: BORUTA_LISTEN]",
    )
    parser.add_argument(
        "--workdir",
        default=os.environ.get("BORUTA_WORKDIR"),
        help="where host key and config live [env: BORUTA_WORKDIR]",
    )
    args = parser.parse_args(argv)
    try:
        host, port = split_host_port(args.listen, "--listen", listen=True)
    except AddressError as exc:
        parser.error(str(exc))
    server = DevSshd(host, port, args.workdir)
    print(f"{READY}{server.start()}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
