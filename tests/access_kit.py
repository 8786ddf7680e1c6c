"""Helpers for end-to-end access tests: real sshd, real dryads, real SSH clients."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
from boruta.v1 import types_pb2
from boruta_dryad.config import load_config
from boruta_dryad.devsshd import DevSshd
from boruta_dryad.main import READY as DRYAD_READY
from system_kit import remove_job_cgroups, require_sshd


def dryad_toml(
    scheduler: str,
    ssh_address: str,
    state_dir: Path,
    prefix: str,
    *,
    host_keys: Path,
    name: str = "b0",
    caps: str = 'board = "rpi4"',
    key_bits: int = 2048,
    uuid: str = "",
    checks: str = "",
) -> str:
    """The TOML of a dryad with one board; checks are lines of the board's checks table."""
    uuid_line = f'uuid = "{uuid}"\n' if uuid else ""
    checks_table = f"[board.checks]\n{checks}" if checks else ""
    return (
        f'scheduler = "{scheduler}"\nlisten = "127.0.0.1:0"\n'
        f'plaintext = true\nstate_dir = "{state_dir}"\n'
        f'key_bits = {key_bits}\nlog_level = "DEBUG"\n\n'
        f'[[board]]\nname = "{name}"\n{uuid_line}caps = {{ {caps} }}\n'
        f'ssh_address = "{ssh_address}"\nssh_host_keys = ["{host_keys}"]\n'
        f'user_prefix = "{prefix}"\n'
        f'backend_options = {{ record_file = "{state_dir}/{name}.record" }}\n'
        f"{checks_table}"
    )


@contextmanager
def running_sshd(workdir: Path) -> Iterator[DevSshd]:
    """A private sshd for the test, stopped afterwards."""
    require_sshd()
    server = DevSshd(workdir=str(workdir))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class DryadProcess:
    """A `dryad` process started from a config file; waits for its readiness line."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.metrics_address = ""  # host:port of its metrics, when the config has them
        self.log = config.with_suffix(".log")

    def start(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "boruta_dryad.main", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "a"),  # noqa: SIM115 - lives as long as the process
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(DRYAD_READY):
            self.proc.kill()
            raise RuntimeError(f"dryad did not start: {line!r}\n{self.log.read_text()}")
        self.address = line[len(DRYAD_READY) :].strip()
        if "metrics_listen" in self.config.read_text():
            metrics = self.proc.stdout.readline()
            self.metrics_address = metrics.rpartition(" on ")[2].strip()
        return self.address

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, as systemd stops it; a dryad that will not stop is killed, and the
        test fails saying so (its job users are then left for the caller to remove)."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                return
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"dryad did not stop within {timeout} s; see {self.log}"
                ) from None
        finally:
            # A killed dryad leaves its job cgroups (a restarted one would remove them).
            remove_job_cgroups(load_config(["--config", str(self.config)], environ={}).state_dir)


@dataclass
class Login:
    """What AccessInfo says; logins check the board's host keys as users' clients do."""

    host: str
    port: int
    username: str
    private_key_pem: str
    host_keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, access: types_pb2.AccessInfo) -> Login:
        return cls(
            access.host,
            access.port,
            access.username,
            access.private_key_pem,
            tuple(access.ssh_host_keys),
        )

    def known_hosts(self) -> str:
        return "".join(f"[{self.host}]:{self.port} {key}\n" for key in self.host_keys)

    def client(self, *, check_host_key: bool = True) -> paramiko.SSHClient:
        """A connected paramiko client that accepts only the board's host keys, or any
        (as clients did before host keys were handed out) (blocking: call it from a
        thread)."""
        key = paramiko.RSAKey.from_private_key(io.StringIO(self.private_key_pem))
        client = paramiko.SSHClient()
        if check_host_key:
            assert self.host_keys, "AccessInfo carries no host keys"
            for line in self.known_hosts().splitlines():
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
                assert entry is not None and entry.key is not None, line
                client.get_host_keys().add(entry.hostnames[0], entry.key.get_name(), entry.key)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            self.host,
            self.port,
            username=self.username,
            pkey=key,
            allow_agent=False,
            look_for_keys=False,
            timeout=20,
        )
        return client

    async def paramiko_run(self, command: str, *, check_host_key: bool = True) -> str:
        def run() -> str:
            client = self.client(check_host_key=check_host_key)
            try:
                _, out, _ = client.exec_command(command, timeout=20)
                return str(out.read().decode())
            finally:
                client.close()

        return await asyncio.to_thread(run)

    async def openssh_run(self, command: str) -> subprocess.CompletedProcess[str]:
        """ssh in batch mode, checking the host key against AccessInfo's only."""
        assert self.host_keys, "AccessInfo carries no host keys"
        with tempfile.NamedTemporaryFile("w", suffix=".key", delete=False) as f:
            f.write(self.private_key_pem)
        os.chmod(f.name, 0o600)
        with tempfile.NamedTemporaryFile("w", suffix=".known_hosts", delete=False) as hosts:
            hosts.write(self.known_hosts())
        try:
            return await asyncio.to_thread(
                subprocess.run,
                [
                    "ssh",
                    "-i",
                    f.name,
                    "-p",
                    str(self.port),
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    f"UserKnownHostsFile={hosts.name}",
                    "-o",
                    "GlobalKnownHostsFile=/dev/null",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "ConnectTimeout=20",
                    "-o",
                    "LogLevel=ERROR",
                    f"{self.username}@{self.host}",
                    command,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            os.unlink(f.name)
            os.unlink(hosts.name)
