"""From asking for a board to running a command on it, with real parts (needs root, sshd).

- access: NewRequest for an idle, prepared board, AcquireWorker, SSH login with paramiko
  through the scheduler's tunnel, and the first line of `echo ready`; median and p95.
- prepare: one Dryad.Prepare (remove the old job user, make a new one, generate and
  install the key), per key size.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import paramiko
from boruta.v1 import (
    dryad_pb2,
    dryad_pb2_grpc,
    requests_pb2,
    requests_pb2_grpc,
    types_pb2,
    workers_pb2,
    workers_pb2_grpc,
)
from boruta_dryad.devsshd import DevSshd

from bench.grpc_bench import SCHEDULER_READY, scheduler_command, spawn

USER = (("x-boruta-user", "bench"),)
ADMIN = (("x-boruta-user", "root"), ("x-boruta-role", "admin"))


def dryad_toml(scheduler: str, sshd: DevSshd, state: Path, bits: int, prefix: str) -> str:
    return (
        f'scheduler = "{scheduler}"\nlisten = "127.0.0.1:0"\n'
        f'plaintext = true\nstate_dir = "{state}"\n'
        f'key_bits = {bits}\nlog_level = "WARNING"\n\n[[board]]\nname = "b0"\n'
        f'uuid = "bench-{prefix}"\ncaps = {{ board = "rpi4" }}\nssh_address = "{sshd.address}"\n'
        f'ssh_host_keys = ["{sshd.host_key_public}"]\nuser_prefix = "{prefix}"\n'
    )


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(len(ordered) * 0.95)] * 1000,
        "n": len(ordered),
    }


def wait_state(channel: grpc.Channel, uuid: str, state: int) -> None:
    workers = workers_pb2_grpc.WorkersStub(channel)
    stream = workers.WatchWorkers(
        workers_pb2.WatchWorkersRequest(
            filter=workers_pb2.WorkerFilter(uuids=[uuid]), include_current=True
        ),
        metadata=ADMIN,
        timeout=60,
    )
    for event in stream:
        if event.worker.state == state:
            stream.cancel()
            return


def first_line_over_ssh(access: types_pb2.AccessInfo) -> str:
    key = paramiko.RSAKey.from_private_key(io.StringIO(access.private_key_pem))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        access.host,
        access.port,
        username=access.username,
        pkey=key,
        allow_agent=False,
        look_for_keys=False,
        timeout=20,
    )
    try:
        _, out, _ = client.exec_command("echo ready")
        return str(out.readline().strip())
    finally:
        client.close()


def login_time(access: types_pb2.AccessInfo) -> float:
    """Seconds from connecting to the first line of `echo ready`."""
    started = time.perf_counter()
    line = first_line_over_ssh(access)
    assert line == "ready", line
    return time.perf_counter() - started


def straight_to(access: types_pb2.AccessInfo, address: str) -> types_pb2.AccessInfo:
    """The same access, to the board's sshd itself instead of the scheduler's tunnel."""
    host, port = address.rsplit(":", 1)
    direct = types_pb2.AccessInfo()
    direct.CopyFrom(access)
    direct.host, direct.port = host, int(port)
    return direct


def access_latency(workdir: Path, sshd: DevSshd, rounds: int = 30) -> dict[str, dict[str, float]]:
    scheduler = spawn(
        scheduler_command(workdir / "scheduler"), SCHEDULER_READY, workdir / "scheduler.log"
    )
    address = scheduler.address
    config = workdir / "dryad.toml"
    config.write_text(dryad_toml(address, sshd, workdir / "dryad", 3072, "bacc-"))
    dryad = spawn(
        [sys.executable, "-m", "boruta_dryad.main", "--config", str(config)],
        "boruta-dryad listening on ",
        workdir / "dryad.log",
    )
    try:
        with grpc.insecure_channel(address) as channel:
            wait_state(channel, "bench-bacc-", types_pb2.WORKER_STATE_MAINTENANCE)
            workers_pb2_grpc.WorkersStub(channel).SetState(
                workers_pb2.SetStateRequest(
                    worker_uuid="bench-bacc-", state=types_pb2.WORKER_STATE_IDLE
                ),
                metadata=ADMIN,
            )
            requests = requests_pb2_grpc.RequestsStub(channel)
            samples, granted, direct = [], [], []
            for round_ in range(rounds):
                wait_state(channel, "bench-bacc-", types_pb2.WORKER_STATE_IDLE)
                started = time.perf_counter()
                request = requests.NewRequest(
                    requests_pb2.NewRequestRequest(caps={"board": "rpi4"}), metadata=USER
                ).request
                access = requests.AcquireWorker(
                    requests_pb2.AcquireWorkerRequest(request_id=request.id),
                    metadata=USER,
                    timeout=30,
                ).access
                granted.append(time.perf_counter() - started)
                # The same login straight to sshd, first in every other round, so that
                # neither of the two always meets the caches the other warmed.
                if round_ % 2:
                    direct.append(login_time(straight_to(access, sshd.address)))
                samples.append(granted[-1] + login_time(access))
                if not round_ % 2:
                    direct.append(login_time(straight_to(access, sshd.address)))
                requests.CloseRequest(
                    requests_pb2.CloseRequestRequest(request_id=request.id), metadata=USER
                )
        return {
            "access": summary(samples),
            "granted": summary(granted),
            "direct": summary(direct),
        }
    finally:
        dryad.stop()
        scheduler.stop()


def prepare_time(workdir: Path, sshd: DevSshd, bits: int, rounds: int = 15) -> dict[str, float]:
    """Dryad.Prepare as the scheduler calls it, with no scheduler listening (none needed)."""
    unused = socket_port()
    prefix = f"bpr{bits}-"
    config = workdir / f"dryad-{bits}.toml"
    config.write_text(dryad_toml(f"127.0.0.1:{unused}", sshd, workdir / f"d{bits}", bits, prefix))
    dryad = spawn(
        [sys.executable, "-m", "boruta_dryad.main", "--config", str(config)],
        "boruta-dryad listening on ",
        workdir / f"dryad-{bits}.log",
    )
    try:
        with grpc.insecure_channel(dryad.address) as channel:
            stub = dryad_pb2_grpc.DryadStub(channel)
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                stub.Prepare(dryad_pb2.PrepareRequest(worker_uuid=f"bench-{prefix}"), timeout=60)
                samples.append(time.perf_counter() - started)
        return {**summary(samples), "key_bits": bits}
    finally:
        dryad.stop()


def socket_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run() -> dict[str, dict[str, float]] | None:
    """None when this machine cannot run it (needs root and OpenSSH)."""
    if os.geteuid() != 0 or not shutil.which("ssh"):
        return None
    workdir = Path(tempfile.mkdtemp(prefix="boruta-access-bench-"))
    sshd = DevSshd(workdir=str(workdir / "sshd"))
    sshd.start()
    try:
        return {
            **access_latency(workdir, sshd),
            "prepare_3072": prepare_time(workdir, sshd, 3072),
            "prepare_2048": prepare_time(workdir, sshd, 2048),
        }
    finally:
        sshd.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
