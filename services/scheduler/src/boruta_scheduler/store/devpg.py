"""A throwaway PostgreSQL cluster for tests, benchmarks and local farms.

initdb in a fresh temporary directory, then the postmaster listening only on a Unix socket
in that directory (no TCP port, so runs on one host never meet). PostgreSQL refuses to run
as root: as root, both run as the `postgres` user through setpriv. stop() ends the server
at once (an immediate shutdown) and removes the directory.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

import psycopg

READY = "database system is ready to accept connections"
SUPERUSER = "postgres"
# What a cluster's directory is called: PREFIX and a random part.
PREFIX = "boruta-pg-"
# The socket is named after the port; nothing listens on TCP.
PORT = 5432


def find_bindir() -> Path:
    """Where initdb and postgres are: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    raise FileNotFoundError("PostgreSQL server programs (initdb) not found: install postgresql")


class DevPostgres:
    """One PostgreSQL cluster in a temporary directory (in parent, else the system's);
    durable=False turns fsync off, which tests may do (they do not cut power) and benchmarks
    must not. own_session keeps the server out of the caller's process group, so that a
    terminal's Ctrl-C leaves it up for the clients' clean stop, and to stop()."""

    def __init__(
        self,
        *,
        durable: bool = False,
        bindir: Path | None = None,
        parent: Path | None = None,
        own_session: bool = False,
    ) -> None:
        self.durable = durable
        self.own_session = own_session
        self.bindir = bindir or find_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        self._process: subprocess.Popen[str] | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=200)
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SUPERUSER)  # KeyError: Debian's postgresql package makes it
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = [
                "setpriv",
                f"--reuid={owner.pw_uid}",
                f"--regid={owner.pw_gid}",
                "--init-groups",
            ]

    def start(self) -> DevPostgres:
        """initdb, start the server and return once it accepts connections."""
        data = self.dir / "data"
        initdb = subprocess.run(
            [
                *self._as,
                str(self.bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=self.dir,
            capture_output=True,
            text=True,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip() or initdb.stdout.strip()}")
        self._launch()
        return self

    def restart(self) -> None:
        """Stop the server (fast shutdown: every session is cut) and start it again on the
        same data, as an operator's restart does."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGINT)
            process.wait()
        self._launch()

    def _launch(self) -> None:
        """Start the server on the initialised data; return once it accepts connections."""
        data = self.dir / "data"
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(self.dir),
            "port": str(PORT),
            "logging_collector": "off",
            "log_destination": "stderr",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
        }
        command = [*self._as, str(self.bindir / "postgres"), "-D", str(data)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        self._process = subprocess.Popen(
            command,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=self.own_session,
        )
        stderr = self._process.stderr
        assert stderr is not None
        for line in stderr:
            self._log.append(line.rstrip())
            if READY in line:
                break
        else:
            self._process.wait()
            self._process = None
            raise RuntimeError("postgres did not start:\n" + "\n".join(self._log))
        # Keep reading, or the server blocks once the pipe is full.
        threading.Thread(target=self._drain, args=(stderr,), daemon=True).start()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self._log.append(line.rstrip())

    def log_tail(self) -> str:
        """The server's last log lines, for a failing test's message."""
        return "\n".join(self._log)

    def url(self, database: str = "postgres") -> str:
        """A connection URL for the store (--store) and psycopg."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.dir}&port={PORT}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Immediate shutdown (what `pg_ctl stop -m immediate` sends), then remove it all."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGQUIT)
            process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DevPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
