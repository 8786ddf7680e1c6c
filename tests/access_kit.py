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
    name: str = "b0",
    caps: str = 'board = "rpi4"',
    key_bits: int = 2048,
    uuid: str = "",
) -> str:
    uuid_line = f'uuid = "{uuid}"\n' if uuid else ""
    return (
        f'scheduler = "{scheduler}"\nlisten = "127.0.0.1:0"\n'
        f'plaintext = true\nstate_dir = "{state_dir}"\n'
        f'key_bits = {key_bits}\nlog_level = "DEBUG"\n\n'
        f'[[board]]\nname = "{name}"\n{uuid_line}caps = {{ {caps} }}\n'
        f'ssh_address = "{ssh_address}"\nuser_prefix = "{prefix}"\n'
        f'backend_options = {{ record_file = "{state_dir}/{name}.record" }}\n'
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
        return self.address

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        # A killed dryad leaves its job cgroups (a restarted one would remove them).
        remove_job_cgroups(load_config(["--config", str(self.config)], environ={}).state_dir)


@dataclass
class Login:
    host: str
    port: int
    username: str
    private_key_pem: str

    @classmethod
    def of(cls, access: types_pb2.AccessInfo) -> Login:
        return cls(access.host, access.port, access.username, access.private_key_pem)

    def client(self) -> paramiko.SSHClient:
        """A connected paramiko client (blocking: call it from a thread)."""
        key = paramiko.RSAKey.from_private_key(io.StringIO(self.private_key_pem))
        client = paramiko.SSHClient()
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

    async def paramiko_run(self, command: str) -> str:
        def run() -> str:
            client = self.client()
            try:
                _, out, _ = client.exec_command(command, timeout=20)
                return str(out.read().decode())
            finally:
                client.close()

        return await asyncio.to_thread(run)

    async def openssh_run(self, command: str) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".key", delete=False) as f:
            f.write(self.private_key_pem)
        os.chmod(f.name, 0o600)
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
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
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
