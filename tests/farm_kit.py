"""Helpers for integration tests: real schedulers on port 0, stub dryads, clients by identity."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from boruta.v1 import (
    requests_pb2,
    requests_pb2_grpc,
    superviser_pb2_grpc,
    types_pb2,
    workers_pb2,
    workers_pb2_grpc,
)
from boruta_dryad.stub import KeySource, StubBoard, StubDryad

READY = "boruta-scheduler listening on "
LEADING = "boruta-scheduler leading as epoch "
SCHEDULER = [sys.executable, "-m", "boruta_scheduler.main"]


def schedctl_env(address: str, home: Path, user: str = "alice") -> dict[str, str]:
    """Environment for schedctl as a user of the scheduler at address, with a home (config,
    cache, saved keys) of its own and no BORUTA_* settings from outside the test."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BORUTA_")}
    return {
        **clean,
        "BORUTA_SCHEDULER": address,
        "BORUTA_USER": user,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }


def stop_process(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, as systemd stops a unit, then SIGKILL if it has not ended in 20 s; returns
    its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class SchedulerProcess:
    """A boruta-scheduler process; its port is read from the readiness line."""

    def __init__(self, data_dir: Path, *options: str) -> None:
        self.data_dir = data_dir
        # Plaintext on loopback unless the options configure TLS.
        tls = any(o.startswith("--tls-") for o in options)
        self.options = list(options) if tls else ["--plaintext", "yes", *options]
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.token_address = ""
        self.metrics_address = ""
        self.log_path = data_dir / "scheduler.log"

    def start(self, listen: str = "127.0.0.1:0") -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*SCHEDULER, "--listen", listen, "--data-dir", str(self.data_dir), *self.options],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(READY):
            self.proc.kill()
            raise RuntimeError(f"scheduler did not start: {line!r}\n{self.log_path.read_text()}")
        self.address = line[len(READY) :].strip()
        if "--listen-tokens" in self.options:
            tokens = self.proc.stdout.readline()
            self.token_address = tokens.rpartition(" on ")[2].strip()
        if "--metrics-listen" in self.options:
            metrics = self.proc.stdout.readline()
            self.metrics_address = metrics.rpartition(" on ")[2].strip()
        return self.address

    def wait_leading(self) -> int:
        """Block until the scheduler (on a shared store) says it leads; returns its epoch."""
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(LEADING):
            raise RuntimeError(f"scheduler did not lead: {line!r}\n{self.log_path.read_text()}")
        return int(line[len(LEADING) :])

    def kill(self) -> None:
        """kill -9: no chance to flush or say goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        return stop_process(self.proc)


class Schedulers:
    """Makes scheduler processes with the same options, each in a folder of its own under
    base; stop_all() stops every one it made."""

    def __init__(self, base: Path, *options: str) -> None:
        self.base = base
        self.options = options
        self.made: list[SchedulerProcess] = []

    def __call__(self, name: str) -> SchedulerProcess:
        proc = SchedulerProcess(self.base / name, *self.options)
        self.made.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.made:
            proc.stop()


@dataclass
class Client:
    """Stubs of the public services, calling as one identity."""

    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]

    @property
    def requests(self) -> requests_pb2_grpc.RequestsStub:
        return requests_pb2_grpc.RequestsStub(self.channel)

    @property
    def workers(self) -> workers_pb2_grpc.WorkersStub:
        return workers_pb2_grpc.WorkersStub(self.channel)

    @property
    def superviser(self) -> superviser_pb2_grpc.SuperviserStub:
        return superviser_pb2_grpc.SuperviserStub(self.channel)

    async def new(
        self, caps: dict[str, str] | None = None, **fields: object
    ) -> types_pb2.RequestInfo:
        reply = await self.requests.NewRequest(
            requests_pb2.NewRequestRequest(caps=caps or {}, **fields),  # type: ignore[arg-type]
            metadata=self.metadata,
        )
        return reply.request

    async def info(self, request_id: int) -> types_pb2.RequestInfo:
        reply = await self.requests.GetRequestInfo(
            requests_pb2.GetRequestInfoRequest(request_id=request_id), metadata=self.metadata
        )
        return reply.request

    async def close(self, request_id: int) -> types_pb2.RequestInfo:
        reply = await self.requests.CloseRequest(
            requests_pb2.CloseRequestRequest(request_id=request_id), metadata=self.metadata
        )
        return reply.request

    async def acquire(
        self, request_id: int, timeout: float | None = 30
    ) -> requests_pb2.AcquireWorkerResponse:
        return await self.requests.AcquireWorker(
            requests_pb2.AcquireWorkerRequest(request_id=request_id),
            metadata=self.metadata,
            timeout=timeout,
        )

    async def worker(self, uuid: str) -> types_pb2.WorkerInfo:
        reply = await self.workers.GetWorkerInfo(
            workers_pb2.GetWorkerInfoRequest(worker_uuid=uuid), metadata=self.metadata
        )
        return reply.worker

    async def set_state(
        self, uuid: str, state: int, reason: str = "", *, after_job: bool = False
    ) -> types_pb2.WorkerInfo:
        reply = await self.workers.SetState(
            workers_pb2.SetStateRequest(
                worker_uuid=uuid,
                state=state,  # type: ignore[arg-type]
                reason=reason,
                after_job=after_job,
            ),
            metadata=self.metadata,
        )
        return reply.worker

    async def wait_worker(self, uuid: str, state: int, timeout: float = 30) -> types_pb2.WorkerInfo:
        """Watch until the worker reaches state (no polling sleeps)."""
        stream = self.workers.WatchWorkers(
            workers_pb2.WatchWorkersRequest(
                filter=workers_pb2.WorkerFilter(uuids=[uuid]), include_current=True
            ),
            metadata=self.metadata,
            timeout=timeout,
        )
        async for event in stream:
            if event.worker.state == state:
                stream.cancel()
                return event.worker
        raise AssertionError(f"worker {uuid} never reached state {state}")

    async def wait_request(
        self, request_id: int, state: int, timeout: float = 30
    ) -> types_pb2.RequestInfo:
        """Watch until the request reaches state (no polling sleeps)."""
        stream = self.requests.WatchRequests(
            requests_pb2.WatchRequestsRequest(
                filter=requests_pb2.RequestFilter(ids=[request_id]), include_current=True
            ),
            metadata=self.metadata,
            timeout=timeout,
        )
        current = await self.info(request_id)
        if current.state == state:
            stream.cancel()
            return current
        async for event in stream:
            if event.request.state == state:
                stream.cancel()
                return event.request
        raise AssertionError(f"request {request_id} never reached state {state}")


def identity(
    user: str, groups: Sequence[str] = (), role: str = "user"
) -> tuple[tuple[str, str], ...]:
    meta = [("x-boruta-user", user), ("x-boruta-role", role)]
    if groups:
        meta.append(("x-boruta-groups", ",".join(groups)))
    return tuple(meta)


class Farm:
    """A scheduler address plus clients and stub dryads attached to it."""

    def __init__(self, address: str) -> None:
        self.address = address
        # A subchannel of its own: grpc shares subchannels between channels to one address,
        # and one left in reconnect backoff by a killed scheduler would fail this farm's first
        # call with the old "connection refused" although the new scheduler is listening.
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.dryads: list[StubDryad] = []

    def client(self, user: str = "alice", groups: Sequence[str] = (), role: str = "user") -> Client:
        return Client(self.channel, identity(user, groups, role))

    @property
    def admin(self) -> Client:
        return self.client("root", role="admin")

    async def add_dryad(
        self,
        boards: Sequence[StubBoard],
        *,
        idle: bool = True,
        keys: KeySource | None = None,
        instance_id: str | None = None,
        ssh_address: str = "127.0.0.1:22",
    ) -> StubDryad:
        dryad = StubDryad(
            self.address,
            boards,
            keys=keys or SHARED_KEYS,
            instance_id=instance_id,
            ssh_address=ssh_address,
        )
        await dryad.start()
        await dryad.wait_registered()
        self.dryads.append(dryad)
        if idle:
            admin = self.admin
            for board in boards:
                await admin.set_state(board.uuid, types_pb2.WORKER_STATE_IDLE)
            for board in boards:
                await admin.wait_worker(board.uuid, types_pb2.WORKER_STATE_IDLE)
        return dryad

    async def close(self) -> None:
        for dryad in self.dryads:
            await dryad.stop()
        await self.channel.close()


# Fresh 2048-bit keys cost tens of milliseconds each; tests that do not look at keys share
# this source, which still generates a real, fresh key for every Prepare.
SHARED_KEYS = KeySource(bits=2048)


def board(uuid: str, **caps: str) -> StubBoard:
    return StubBoard(uuid, dict(caps))


async def settle() -> None:
    """Let queued callbacks run once (not a wait for time to pass)."""
    await asyncio.sleep(0)
