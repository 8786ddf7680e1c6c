"""A boruta-relay process for tests, and a direct line to its control API."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from boruta.v1 import relay_pb2, relay_pb2_grpc
from boruta_scheduler.relay.main import READY
from farm_kit import stop_process

RELAY = [sys.executable, "-m", "boruta_scheduler.relay.main"]


class RelayProcess:
    """boruta-relay on a socket of its own (short: a Unix socket's path has at most 107
    bytes); start() waits for the readiness line."""

    def __init__(self, log_dir: Path, *options: str, public_host: str = "127.0.0.1") -> None:
        self.public_host = public_host
        self.dir = Path(tempfile.mkdtemp(prefix="relay-"))
        self.socket = str(self.dir / "relay.sock")
        self.options = list(options)
        self.log_path = log_dir / "relay.log"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*RELAY, "--socket", self.socket, "--public-host", self.public_host, *self.options],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(READY):
            self.proc.kill()
            raise RuntimeError(f"relay did not start: {line!r}\n{self.log_path.read_text()}")
        return self.socket

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        return -1 if self.proc is None else stop_process(self.proc)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def open_tunnel(self, request_id: int, ssh_address: str) -> int:
        """Open a tunnel as if a scheduler had asked (the test runs as the relay's user)."""
        async with grpc.aio.insecure_channel(f"unix:{self.socket}") as channel:
            tunnel = relay_pb2.Tunnel(request_id=request_id, ssh_address=ssh_address)
            reply = await relay_pb2_grpc.RelayStub(channel).OpenTunnel(
                relay_pb2.OpenTunnelRequest(tunnel=tunnel)
            )
            return reply.port
