"""Takeover time of a standby scheduler: two schedulers on one PostgreSQL database, the
leader killed with SIGKILL KILLS times; each time, the seconds from the kill to the first
NewRequest the other one answers. `python -m bench.takeover_bench`.

The farm holds WAITING live requests for the new leader to load; the killed scheduler is
started again as the standby before the next kill, as systemd would. The time is mostly the
rest of the dead leader's lease (by the database's clock), which depends on when in its
renewal cycle it died: hence the median and the max over many kills.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from boruta.v1 import requests_pb2, requests_pb2_grpc

from bench.grpc_bench import SCHEDULER_READY, USER, Proc, scheduler_command, spawn
from bench.machine import print_report

KILLS = 12
WAITING = 2000
LEASE, RENEW = "2s", "0.5s"
FLOOR = 1.5  # seconds of the lease that are left at least when the leader dies
LEADING = "boruta-scheduler leading as epoch "


def start(workdir: Path, name: str, store: str) -> Proc:
    command = scheduler_command(
        workdir / name, "--store", store, "--lease", LEASE, "--lease-renew", RENEW
    )
    return spawn(command, SCHEDULER_READY, workdir / f"{name}.log")


def wait_leading(proc: Proc) -> None:
    assert proc.popen.stdout is not None
    line = proc.popen.stdout.readline()
    if not line.startswith(LEADING):
        raise RuntimeError(f"the scheduler at {proc.address} did not lead: {line!r}")


async def first_answer(address: str, caps: dict[str, str]) -> None:
    """Return once the scheduler at address acknowledges a NewRequest (a standby refuses)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = requests_pb2_grpc.RequestsStub(channel)
        while True:
            try:
                await stub.NewRequest(
                    requests_pb2.NewRequestRequest(caps=caps, accept_unsatisfiable=True),
                    metadata=USER,
                    timeout=1,
                )
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.005)


async def fill(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = requests_pb2_grpc.RequestsStub(channel)

        async def some(n: int) -> None:
            for i in range(n):
                await stub.NewRequest(
                    requests_pb2.NewRequestRequest(
                        caps={"board": f"b{i % 50}"}, accept_unsatisfiable=True
                    ),
                    metadata=USER,
                )

        await asyncio.gather(*(some(WAITING // 20) for _ in range(20)))


def run() -> dict[str, float] | None:
    try:
        from boruta_scheduler.store.devpg import DevPostgres, find_bindir

        find_bindir()
    except (ImportError, FileNotFoundError) as exc:
        print(f"takeover benchmark skipped: {exc}", file=sys.stderr)
        return None
    workdir = Path(tempfile.mkdtemp(prefix="boruta-takeover-"))
    times: list[float] = []
    with DevPostgres(durable=True) as server:
        url = server.create_database("boruta_takeover")
        procs = {"a": start(workdir, "a", url)}
        wait_leading(procs["a"])
        procs["b"] = start(workdir, "b", url)
        leader, standby = "a", "b"
        try:
            asyncio.run(fill(procs[leader].address))
            for _ in range(KILLS):
                procs[leader].popen.kill()
                killed = time.monotonic()
                procs[leader].popen.wait()
                asyncio.run(first_answer(procs[standby].address, {"board": "none"}))
                times.append(time.monotonic() - killed)
                wait_leading(procs[standby])  # the line is out by now; read it off the pipe
                procs[leader] = start(workdir, leader, url)  # back, as the standby
                leader, standby = standby, leader
        finally:
            for proc in procs.values():
                proc.stop()
    return {
        "kills": len(times),
        "median": statistics.median(times),
        "max": max(times),
        "min": min(times),
        "live_requests": WAITING + KILLS,
        "load": os.getloadavg()[0],
    }


def render(results: dict[str, float] | None, when: str) -> list[str]:
    lines = ["## Takeover: a standby scheduler after kill -9 of the leader", ""]
    if results is None:
        return [*lines, "Not measured on this run: PostgreSQL is not installed.", ""]
    met = "met" if results["median"] < 3 else "**missed**"
    return [
        *lines,
        f"`bench/takeover_bench.py`, {when}. Two scheduler processes on one durable",
        f"PostgreSQL 15 database (Unix socket, same machine), lease {LEASE} renewed every {RENEW};",
        f"about {results['live_requests']:,.0f} live WAITING requests for the new leader to",
        f"load. The leader is killed with SIGKILL {results['kills']:.0f} times (the killed one",
        "comes back as the standby before the next kill); measured from the kill to the first",
        f"NewRequest the other one acknowledges. Load average at the end: {results['load']:.1f}.",
        "",
        "| kills | median | max | min | target |",
        "|---|---|---|---|---|",
        f"| {results['kills']:.0f} | {results['median']:.2f} s | {results['max']:.2f} s | "
        f"{results['min']:.2f} s | median under 3 s: {met} |",
        "",
        "Most of it is the rest of the dead leader's lease, which depends on where in its",
        f"renewal cycle it died: between the lease minus one renewal interval ({FLOOR:.1f} s) and",
        "the whole lease. The rest, at most "
        f"{results['min'] - FLOOR:.2f} s here (the fastest kill less {FLOOR:.1f} s), is the",
        "standby's poll of the lease (every 0.1 s), loading the live state and binding",
        "the ports.",
        "",
    ]


def main() -> None:
    print_report(run, render)


if __name__ == "__main__":
    main()
