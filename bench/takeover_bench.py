"""Takeover time of a standby scheduler: two schedulers on one PostgreSQL database, the
leader killed with SIGKILL KILLS times; each time, the seconds from the kill to the first
NewRequest the other one answers. `python -m bench.takeover_bench`.

The farm holds WAITING live requests for the new leader to load; the killed scheduler is
started again as the standby before the next kill, as systemd would. The time is mostly the
rest of the dead leader's lease (by the database's clock), which depends on when in its
renewal cycle it died: hence the median and the max over many kills.

Then the same with long queues (QUEUES waiting requests, written straight into the
database), the standby warm (it follows the leader's commits, app/warm.py) or cold
(`--standby-copy false`: it loads the live state at takeover), taking turns ROUNDS times
each: besides the time from the kill, the new leader's own time from taking the lease to
serving (its log), and the standby's memory with and without its copy.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from boruta.v1 import requests_pb2, requests_pb2_grpc

from bench.grpc_bench import (
    BOARD_TYPES,
    ONE_USER,
    SCHEDULER_READY,
    USER,
    Proc,
    scheduler_command,
    spawn,
)
from bench.machine import machine, print_report

KILLS = 12
WAITING = 2000
QUEUES = (20_000, 100_000)
ROUNDS = 3  # kills per queue length with the standby warm, and as many cold
LEASE, RENEW = "2s", "0.5s"
FLOOR = 1.5  # seconds of the lease that are left at least when the leader dies
LEADING = "boruta-scheduler leading as epoch "
# INFO, for the lines read below: the copy loaded, and the lease-to-serving time.
LOGGED = ("--log-level", "INFO", *ONE_USER)
SERVING = re.compile(r"serving as leader .*seconds=([0-9.]+)")
SETTLE = 1.0  # seconds the new leader is left alone before its RSS is read


def start(workdir: Path, name: str, store: str, *options: str) -> Proc:
    command = scheduler_command(
        workdir / name, "--store", store, "--lease", LEASE, "--lease-renew", RENEW, *options
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


def fill_store(url: str, waiting: int) -> None:
    """waiting requests as NewRequest would queue them (10 board types, priorities 1-16, one
    owner), committed straight to the store: quicker than over gRPC, the same rows."""
    from boruta_scheduler.core import Core
    from boruta_scheduler.store.postgresql import PostgreSQLStore

    store = PostgreSQLStore(url)
    try:
        core = Core()
        now = time.time()
        for k in range(waiting):
            caps = {"board": f"board{k % BOARD_TYPES}"}
            core.new_request(
                now, "bench", frozenset(), caps, priority=1 + k % 16, accept_unsatisfiable=True
            )
            if k % 1000 == 999:
                store.commit(core.drain())
        store.commit(core.drain())
    finally:
        store.close()


def wait_in_log(log: Path, pattern: re.Pattern[str] | str, timeout: float = 120) -> re.Match[str]:
    """The first match of pattern in the log, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, log.read_text())
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pattern!r} not in {log} after {timeout:.0f} s")
        time.sleep(0.05)


def long_queue(server: Any, workdir: Path, waiting: int) -> dict[str, float]:
    """Takeovers with `waiting` requests queued, the standby cold and warm in turn."""
    url = server.create_database(f"boruta_takeover_{waiting}")
    fill_store(url, waiting)
    runs: dict[str, list[float]] = {"cold": [], "warm": [], "cold_own": [], "warm_own": []}
    rss: dict[str, list[float]] = {"cold": [], "warm": [], "cold_leader": [], "warm_leader": []}
    names = iter(f"q{waiting}-{n}" for n in range(100))
    name = next(names)
    leader = start(workdir, name, url, *LOGGED)
    wait_leading(leader)
    procs = [leader]
    try:
        for _ in range(ROUNDS):
            for mode in ("cold", "warm"):
                name = next(names)
                standby = start(
                    workdir, name, url, *LOGGED, "--standby-copy", str(mode == "warm").lower()
                )
                procs.append(standby)
                if mode == "warm":
                    wait_in_log(workdir / f"{name}.log", "warm copy loaded")
                else:
                    time.sleep(1.0)  # as settled as the warm one is after its load
                rss[mode].append(standby.rss_bytes() / 2**20)
                leader.popen.kill()
                killed = time.monotonic()
                leader.popen.wait()
                asyncio.run(first_answer(standby.address, {"board": "none"}))
                runs[mode].append(time.monotonic() - killed)
                wait_leading(standby)
                own = wait_in_log(workdir / f"{name}.log", SERVING)
                runs[f"{mode}_own"].append(float(own.group(1)))
                time.sleep(SETTLE)
                rss[f"{mode}_leader"].append(standby.rss_bytes() / 2**20)
                leader = standby
    finally:
        for proc in procs:
            proc.stop()
    result = {"waiting": float(waiting)}
    for key, values in runs.items():
        result[f"{key}_median"] = statistics.median(values)
        result[f"{key}_max"] = max(values)
    for mode, values in rss.items():
        result[f"{mode}_rss_mb"] = statistics.median(values)
    return result


def run() -> dict[str, Any] | None:
    try:
        from boruta_scheduler.store.devpg import DevPostgres, find_bindir

        find_bindir()
    except (ImportError, FileNotFoundError) as exc:
        print(f"takeover benchmark skipped: {exc}", file=sys.stderr)
        return None
    workdir = Path(tempfile.mkdtemp(prefix="boruta-takeover-"))
    times: list[float] = []
    long: list[dict[str, float]] = []
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
        for waiting in QUEUES:
            print(f"takeover with {waiting:,} waiting ...", file=sys.stderr)
            long.append(long_queue(server, workdir, waiting))
    return {
        "long": long,
        "kills": len(times),
        "median": statistics.median(times),
        "max": max(times),
        "min": min(times),
        "live_requests": WAITING + KILLS,
        "load": os.getloadavg()[0],
    }


def render(results: dict[str, Any] | None, when: str) -> list[str]:
    lines = ["## Takeover: a standby scheduler after kill -9 of the leader", ""]
    if results is None:
        return [*lines, "Not measured on this run: PostgreSQL is not installed.", ""]
    met = "met" if results["median"] < 3 else "**missed**"
    return [
        *lines,
        f"`bench/takeover_bench.py`, {when}, on {machine()}.",
        "Two scheduler processes on one durable",
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
        "standby's poll of the lease (every 0.1 s), bringing its warm copy up to date,",
        "restoring the core from it and binding the ports.",
        "",
        *render_long(results["long"]),
    ]


def render_long(long: list[dict[str, float]]) -> list[str]:
    lines = [
        "### With a long queue: the standby warm or cold",
        "",
        "The same two schedulers, with the queue written straight into the database",
        "(10 board types, priorities 1-16). *Warm*: the standby follows the leader's",
        "commits (its copy loaded before the kill; the default). *Cold*: started with",
        f"`--standby-copy false`, it loads the live state at takeover. {ROUNDS} kills each,",
        "taking turns. *Lease to serving*: the new leader's own time from taking the lease",
        "to serving (catching up, restoring the core, binding the ports), from its log.",
        "*Standby RSS*: the standby's memory just before the kill; *leader RSS*, the same",
        f"process's {SETTLE:.0f} s after it serves as the leader.",
        "",
        "| waiting | standby | kill to first answer, median (max) | lease to serving, median "
        "(max) | standby RSS | leader RSS |",
        "|---|---|---|---|---|---|",
    ]
    for r in long:
        for mode in ("cold", "warm"):
            lines.append(
                f"| {r['waiting']:,.0f} | {mode} | {r[f'{mode}_median']:.2f} s "
                f"({r[f'{mode}_max']:.2f} s) | {r[f'{mode}_own_median']:.2f} s "
                f"({r[f'{mode}_own_max']:.2f} s) | {r[f'{mode}_rss_mb']:.0f} MB | "
                f"{r[f'{mode}_leader_rss_mb']:.0f} MB |"
            )
    longest = long[-1]
    return [
        *lines,
        "",
        "Warm, the new leader's own part grows far less with the queue: at "
        f"{longest['waiting']:,.0f} waiting",
        f"requests {longest['warm_own_median']:.2f} s from the lease to serving against "
        f"{longest['cold_own_median']:.2f} s cold, which is the load of the",
        "live state it no longer does (decoding every live row); what is left is mostly",
        "`Core.restore` itself. The copy costs the standby about "
        f"{longest['warm_rss_mb'] - longest['cold_rss_mb']:.0f} MB at "
        f"{longest['waiting']:,.0f} live requests;",
        f"the new leader holds {longest['warm_leader_rss_mb']:.0f} MB after a warm takeover, "
        f"{longest['cold_leader_rss_mb']:.0f} MB after a cold one.",
        "",
    ]


def main() -> None:
    print_report(run, render)


if __name__ == "__main__":
    main()
