"""Throughput and latency over real gRPC on loopback, with the durable (SQLite) store.

Three processes: the scheduler, one stub dryad serving all boards (Prepare answers at
once with keys from a pre-generated pool), and this process as the clients.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from boruta.v1 import (
    requests_pb2,
    requests_pb2_grpc,
    types_pb2,
    workers_pb2,
    workers_pb2_grpc,
)
from boruta_dryad.stub import KeySource, StubBoard, StubDryad

from bench import baseline

USER = (("x-boruta-user", "bench"), ("x-boruta-role", "user"))
ADMIN = (("x-boruta-user", "root"), ("x-boruta-role", "admin"))
BOARD_TYPES = 10


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    address: str

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.popen.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used."""
        with open(f"/proc/{self.popen.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


SCHEDULER_READY = "boruta-scheduler listening on "
# The benchmarks queue everything as one user.
ONE_USER = ("--max-waiting-per-user", "1000000000")
# The metrics port, as bench/metrics_bench.py compares with and without it.
METRICS = ("--metrics-listen", "127.0.0.1:0", "--metrics-anonymous", "yes")


def scheduler_command(workdir: Path, *options: str) -> list[str]:
    """A plaintext scheduler on a free loopback port with its store in workdir."""
    return [
        sys.executable,
        "-m",
        "boruta_scheduler.main",
        "--plaintext",
        "yes",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(workdir),
        "--log-level",
        "WARNING",
        *options,
    ]


def spawn(args: list[str], ready: str, log: Path) -> Proc:
    popen = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115 - lives as long as the process
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert popen.stdout is not None
    line = popen.stdout.readline()
    if not line.startswith(ready):
        popen.kill()
        raise RuntimeError(f"{args[2]} did not start: {line!r}; see {log}")
    return Proc(popen, line[len(ready) :].split()[0])


async def stub_dryad(scheduler: str, boards: int, workdir: Path) -> Proc:
    """One stub dryad serving boards b0... (board=boardN), once it has registered them."""
    dryad = spawn(
        [
            sys.executable,
            "-m",
            "boruta_dryad.stub",
            "--scheduler",
            scheduler,
            "--boards",
            str(boards),
            "--key-pool",
            "8",
            "--prefix",
            "b",
            "--round-robin",
            "board=" + ",".join(f"board{i}" for i in range(BOARD_TYPES)),
        ],
        "boruta-stub-dryad listening on ",
        workdir / "dryad.log",
    )
    assert dryad.popen.stdout is not None
    line = await asyncio.to_thread(dryad.popen.stdout.readline)
    assert "registered" in line, line
    return dryad


@asynccontextmanager
async def farm(
    boards: int, *, idle: bool, bare: bool = False, store: str = "", metrics: bool = False
) -> AsyncIterator[tuple[Proc, grpc.aio.Channel]]:
    """A scheduler with `boards` stub boards (board=boardN), IDLE or in MAINTENANCE, on
    the store URL given (default: SQLite in a temporary directory); with metrics, it
    keeps them and serves its metrics port.

    With bare=True the server is bench.baseline's canned-reply server instead.
    """
    workdir = Path(tempfile.mkdtemp(prefix="boruta-bench-"))
    if bare:
        scheduler = spawn(
            [sys.executable, "-m", "bench.baseline"], baseline.READY, workdir / "bare.log"
        )
    else:
        scheduler = spawn(
            scheduler_command(
                workdir,
                "--heartbeat-interval",
                "10s",
                *ONE_USER,
                *(["--store", store] if store else []),
                *(METRICS if metrics else ()),
            ),
            SCHEDULER_READY,
            workdir / "scheduler.log",
        )
    dryad = await stub_dryad(scheduler.address, boards, workdir)
    channel = grpc.aio.insecure_channel(scheduler.address)
    try:
        if idle and not bare:
            await set_all_idle(channel, boards)
        yield scheduler, channel
    finally:
        await channel.close()
        dryad.stop()
        scheduler.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def set_all_idle(channel: grpc.aio.Channel, boards: int) -> None:
    workers = workers_pb2_grpc.WorkersStub(channel)
    await asyncio.gather(
        *(
            workers.SetState(
                workers_pb2.SetStateRequest(worker_uuid=f"b{i}", state=types_pb2.WORKER_STATE_IDLE),
                metadata=ADMIN,
            )
            for i in range(boards)
        )
    )
    stream = workers.WatchWorkers(
        workers_pb2.WatchWorkersRequest(
            filter=workers_pb2.WorkerFilter(states=[types_pb2.WORKER_STATE_IDLE]),
            include_current=True,
        ),
        metadata=ADMIN,
    )
    idle: set[str] = set()
    async for event in stream:
        idle.add(event.worker.uuid)
        if len(idle) == boards:
            stream.cancel()
            return


async def new_request_rate(
    seconds: float = 5.0,
    concurrency: int = 32,
    bare: bool = False,
    store: str = "",
    metrics: bool = False,
) -> dict[str, float]:
    """NewRequest calls per second; the boards are in MAINTENANCE, so requests queue."""
    async with farm(100, idle=False, bare=bare, store=store, metrics=metrics) as (
        scheduler,
        channel,
    ):
        stub = requests_pb2_grpc.RequestsStub(channel)
        rss_before = scheduler.rss_bytes()
        count = 0
        stop_at = time.perf_counter() + seconds

        async def client(k: int) -> None:
            nonlocal count
            caps = {"board": f"board{k % BOARD_TYPES}"}
            while time.perf_counter() < stop_at:
                await stub.NewRequest(requests_pb2.NewRequestRequest(caps=caps), metadata=USER)
                count += 1

        started = time.perf_counter()
        cpu_before = scheduler.cpu_seconds()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = scheduler.cpu_seconds() - cpu_before
        rss_after = scheduler.rss_bytes()
        return {
            "per_second": count / elapsed,
            "scheduler_cpu_ms_per_request": cpu / count * 1000,
            "scheduler_cpu_utilisation": cpu / elapsed,
            "requests": count,
            "concurrency": concurrency,
            "rss_bytes_per_waiting_request": (rss_after - rss_before) / count,
        }


async def cycle_rate(
    seconds: float = 10.0,
    concurrency: int = 8,
    boards: int = 1000,
    bare: bool = False,
    store: str = "",
    metrics: bool = False,
) -> dict[str, float]:
    """Full cycles per second: NewRequest -> (matched) -> AcquireWorker -> CloseRequest."""
    async with farm(boards, idle=True, bare=bare, store=store, metrics=metrics) as (
        scheduler,
        channel,
    ):
        stub = requests_pb2_grpc.RequestsStub(channel)
        latencies: list[float] = []
        cpu_at_start = 0.0
        count = 0
        warmup_until = time.perf_counter() + 1.0
        stop_at = warmup_until + seconds

        async def sample_cpu() -> None:
            nonlocal cpu_at_start
            await asyncio.sleep(max(0.0, warmup_until - time.perf_counter()))
            cpu_at_start = scheduler.cpu_seconds()

        async def client(k: int) -> None:
            nonlocal count
            caps = {"board": f"board{k % BOARD_TYPES}"}
            while (now := time.perf_counter()) < stop_at:
                reply = await stub.NewRequest(
                    requests_pb2.NewRequestRequest(caps=caps), metadata=USER
                )
                rid = reply.request.id
                await stub.AcquireWorker(
                    requests_pb2.AcquireWorkerRequest(request_id=rid), metadata=USER, timeout=30
                )
                await stub.CloseRequest(
                    requests_pb2.CloseRequestRequest(request_id=rid), metadata=USER
                )
                if now > warmup_until:
                    count += 1
                    latencies.append(time.perf_counter() - now)

        await asyncio.gather(sample_cpu(), *(client(k) for k in range(concurrency)))
        cpu = scheduler.cpu_seconds() - cpu_at_start
        latencies.sort()
        return {
            "per_second": count / seconds,
            "scheduler_cpu_ms_per_cycle": cpu / count * 1000,
            "scheduler_cpu_utilisation": cpu / seconds,
            "cycles": count,
            "concurrency": concurrency,
            "workers": boards,
            "cycle_ms_p50": latencies[len(latencies) // 2] * 1000,
            "cycle_ms_p99": latencies[int(len(latencies) * 0.99)] * 1000,
        }


async def acquire_latency(waiting: int = 10_000, rounds: int = 300) -> dict[str, float]:
    """From a worker freeing to a client blocked in AcquireWorker getting its access.

    A worker frees when its dryad answers Prepare after the previous job; the stub dryad
    runs in this process and stamps that moment, so both ends use one clock. The path:
    Prepare result committed, match among `waiting` requests the worker could serve,
    tunnel opened, commit, reply. Also reported: from the client's CloseRequest, which
    adds the after-job Prepare call (which runs the board's checks first).
    """
    workdir = Path(tempfile.mkdtemp(prefix="boruta-bench-"))
    scheduler = spawn(scheduler_command(workdir), SCHEDULER_READY, workdir / "scheduler.log")
    board = StubBoard("b0", {"board": "board0"})
    dryad = StubDryad(scheduler.address, [board], keys=KeySource(pool_size=4))
    await dryad.start()
    channel = grpc.aio.insecure_channel(scheduler.address)
    try:
        await dryad.wait_registered()
        await set_all_idle(channel, 1)
        stub = requests_pb2_grpc.RequestsStub(channel)
        caps = {"board": "board0"}

        async def new(priority: int) -> int:
            reply = await stub.NewRequest(
                requests_pb2.NewRequestRequest(caps=caps, priority=priority), metadata=USER
            )
            return reply.request.id

        running = await new(1)
        batch = 500
        for start in range(0, waiting, batch):
            await asyncio.gather(*(new(2 + i % 15) for i in range(min(batch, waiting - start))))
        from_free, from_close = [], []
        for _ in range(rounds):
            probe = await new(1)
            acquire = asyncio.ensure_future(
                stub.AcquireWorker(
                    requests_pb2.AcquireWorkerRequest(request_id=probe), metadata=USER, timeout=30
                )
            )
            # The acquire call must be blocked before the worker frees.
            await asyncio.sleep(0.002)
            closed_at = time.time()
            await stub.CloseRequest(
                requests_pb2.CloseRequestRequest(request_id=running), metadata=USER
            )
            await acquire
            done_at = time.time()
            from_free.append((done_at - board.prepared_at) * 1000)
            from_close.append((done_at - closed_at) * 1000)
            running = probe
        from_free.sort()
        from_close.sort()
        return {
            "waiting": waiting,
            "rounds": rounds,
            "ms_p50": statistics.median(from_free),
            "ms_p99": from_free[int(len(from_free) * 0.99)],
            "from_close_ms_p50": statistics.median(from_close),
            "from_close_ms_p99": from_close[int(len(from_close) * 0.99)],
        }
    finally:
        await channel.close()
        await dryad.stop()
        scheduler.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def run_all() -> dict[str, dict[str, float]]:
    return {
        "new_request": await new_request_rate(),
        "cycles": await cycle_rate(),
        "acquire_latency": await acquire_latency(),
    }


if __name__ == "__main__":
    import json

    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    runners = {
        "new": new_request_rate,
        "cycles": cycle_rate,
        "latency": acquire_latency,
        "bare-new": lambda: new_request_rate(bare=True),
        "bare-cycles": lambda: cycle_rate(bare=True),
        "all": run_all,
    }
    print(json.dumps(asyncio.run(runners[which]()), indent=2))  # type: ignore[operator]
