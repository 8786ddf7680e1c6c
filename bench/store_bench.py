"""Store.commit of NewRequest batches per second, SQLite against PostgreSQL, in one run;
then NewRequests and full cycles per second of a whole scheduler on each.

What the engine's writer thread does for NewRequest: each batch holds new WAITING requests
and their audit events, as the core and the audit log make them, committed in one
transaction. Batches of 1 are a lone caller (one sync per request); batches of 32 are what
group commit makes of 32 callers at once. Both stores are durable: SQLite in WAL mode with
synchronous=FULL, PostgreSQL with fsync and synchronous_commit on, in a throwaway cluster
on a Unix socket, both in the same temporary folder's file system. The two take turns,
ROUNDS times, and the report gives medians: `python -m bench.store_bench`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from boruta_scheduler.core import Changes, Core
from boruta_scheduler.store import SQLiteStore, Store
from boruta_scheduler.types import AuditEvent

from bench import grpc_bench
from bench.machine import machine, print_report

ROUNDS = 5
GRPC_ROUNDS = 3
BATCH_SIZES = (1, 32)
REQUESTS = 3200  # per batch size and round
CAPS = {"board": "rpi4", "display": "hdmi", "camera": "yes", "arch": "armv8"}


def batches(size: int, count: int) -> list[Changes]:
    """count batches of size NewRequests each, with their audit events (the requests wait:
    no board could take them, as in a busy farm)."""
    core = Core()
    now = 1_800_000_000.0
    made = []
    for _ in range(count):
        events = []
        for _ in range(size):
            view = core.new_request(
                now, "ci-bot", frozenset({"lab"}), CAPS, priority=8, accept_unsatisfiable=True
            )
            events.append(AuditEvent(now, "ci-bot", "user", "NewRequest", f"request {view.id}"))
            now += 0.001
        changes = core.drain()
        changes.audit.extend(events)
        made.append(changes)
    return made


def commits_per_second(store: Store, work: list[Changes]) -> float:
    """Requests made durable per second over the batches, one commit each."""
    requests = sum(len(c.requests) for c in work)
    started = time.perf_counter()
    for changes in work:
        store.commit(changes)
    return requests / (time.perf_counter() - started)


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory(prefix="boruta-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "boruta.db")
        try:
            yield store
        finally:
            store.close()


# What migration 8 adds to a commit for standbys to follow (app/warm.py): turned off, the
# cost of following shows as the difference.
UNFOLLOWED = (
    "ALTER TABLE requests DISABLE TRIGGER requests_change",
    "DROP INDEX requests_by_change",
)


def postgresql_store(server: Any, name: str, *, followed: bool = True) -> Callable[[], Any]:
    @contextmanager
    def opened() -> Iterator[Store]:
        import psycopg
        from boruta_scheduler.store.postgresql import PostgreSQLStore

        server.drop_database(name)
        url = server.create_database(name)
        store = PostgreSQLStore(url)
        if not followed:
            with psycopg.connect(url, autocommit=True) as conn:
                for statement in UNFOLLOWED:
                    conn.execute(statement)
        try:
            yield store
        finally:
            store.close()

    return opened


def run() -> dict[str, dict[str, float]] | None:
    """Per batch size: requests per second on each store (medians) and their ratio; None
    where PostgreSQL's server programs are not installed."""
    try:
        from boruta_scheduler.store.devpg import DevPostgres, find_bindir

        find_bindir()
    except (ImportError, FileNotFoundError) as exc:
        print(f"store benchmark skipped: {exc}", file=sys.stderr)
        return None
    results: dict[str, dict[str, float]] = {"load": {"before": os.getloadavg()[0]}}
    with DevPostgres(durable=True) as server:
        kinds: dict[str, Callable[[], Any]] = {
            "sqlite": sqlite_store,
            "postgresql": postgresql_store(server, "boruta_bench"),
            "unfollowed": postgresql_store(server, "boruta_bench_unfollowed", followed=False),
        }
        for size in BATCH_SIZES:
            work = batches(size, REQUESTS // size)
            rates: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(ROUNDS):
                for kind, opened in kinds.items():
                    with opened() as store:
                        store.commit(work[0])  # warm up: schema, caches, connections
                        rates[kind].append(commits_per_second(store, work[1:]))
            unfollowed = statistics.median(rates.pop("unfollowed"))
            results[f"batch_{size}"] = {
                "batch": size,
                **compared(rates),
                "unfollowed": unfollowed,
                "followed_ratio": statistics.median(rates["postgresql"]) / unfollowed,
            }
        results.update(asyncio.run(through_grpc(server)))
    results["load"]["after"] = os.getloadavg()[0]
    return results


def compared(rates: dict[str, list[float]]) -> dict[str, float]:
    """Medians, ranges and the ratio PostgreSQL / SQLite of runs on both stores."""
    sqlite, postgresql = statistics.median(rates["sqlite"]), statistics.median(rates["postgresql"])
    return {
        "sqlite": sqlite,
        "postgresql": postgresql,
        "ratio": postgresql / sqlite,
        "sqlite_min": min(rates["sqlite"]),
        "sqlite_max": max(rates["sqlite"]),
        "postgresql_min": min(rates["postgresql"]),
        "postgresql_max": max(rates["postgresql"]),
    }


async def through_grpc(server: Any) -> dict[str, dict[str, float]]:
    """NewRequests and full cycles per second of a whole scheduler process (as
    bench/grpc_bench.py measures them) on each store, taking turns GRPC_ROUNDS times."""
    measures: dict[str, Callable[..., Awaitable[dict[str, float]]]] = {
        "new_request": grpc_bench.new_request_rate,
        "cycles": grpc_bench.cycle_rate,
    }
    rates: dict[str, dict[str, list[float]]] = {
        name: {"sqlite": [], "postgresql": []} for name in measures
    }
    for round_ in range(GRPC_ROUNDS):
        for name, measure in measures.items():
            rates[name]["sqlite"].append((await measure())["per_second"])
            database = f"boruta_bench_{name}_{round_}"
            url = server.create_database(database)
            try:
                rates[name]["postgresql"].append((await measure(store=url))["per_second"])
            finally:
                server.drop_database(database)
    return {name: compared(rates[name]) for name in measures}


def render(results: dict[str, dict[str, float]] | None, when: str) -> list[str]:
    lines = ["## Store: durable commits of NewRequests, PostgreSQL against SQLite", ""]
    if results is None:
        return [*lines, "Not measured on this run: PostgreSQL is not installed.", ""]
    lines += [
        f"`bench/store_bench.py`, {when}, on {machine()}.",
        "`Store.commit` alone (no gRPC, no engine) of",
        "batches of new requests with their audit events, as the writer thread commits",
        "them for NewRequest. Both durable: SQLite WAL with synchronous=FULL; PostgreSQL 15",
        "with fsync and synchronous_commit on, over a Unix socket on the same machine and",
        f"disk. Requests made durable per second, median of {ROUNDS} runs taking turns",
        "(range in brackets). The machine is shared: its load average was "
        f"{results['load']['before']:.1f} before and {results['load']['after']:.1f} after.",
        "",
        "*Unfollowed*: PostgreSQL without what migration 8 adds to each commit for",
        "standbys to follow (the trigger that numbers each request row and its index),",
        "to show what following costs the leader.",
        "",
        "| batch | SQLite | PostgreSQL | PostgreSQL / SQLite | unfollowed "
        "| PostgreSQL / unfollowed |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        if not key.startswith("batch_"):
            continue
        lines.append(
            f"| {r['batch']:.0f} request(s) per commit | {_rate(r, 'sqlite')} | "
            f"{_rate(r, 'postgresql')} | {r['ratio']:.2f} | {r['unfollowed']:,.0f} | "
            f"{r['followed_ratio']:.2f} |"
        )
    new, cycles = results["new_request"], results["cycles"]
    lines += [
        "",
        "A lone PostgreSQL commit pays a round trip to another process (BEGIN, the",
        "statements and COMMIT go out in one pipeline) on top of a write-ahead log flush",
        "like SQLite's; through the scheduler, group commit and gRPC's own per-call work hide",
        "most of that. The same through a whole scheduler process over gRPC (on PostgreSQL",
        "it runs as the leader, every commit fenced by its epoch), as `bench/grpc_bench.py`",
        "measures it (32 client tasks sending NewRequest; 8 running full cycles on 1,000",
        "boards), on the default SQLite store and on a fresh PostgreSQL database, "
        f"median of {GRPC_ROUNDS}:",
        "",
        "| measure | SQLite | PostgreSQL | PostgreSQL / SQLite | target |",
        "|---|---|---|---|---|",
        f"| NewRequest per second | {_rate(new, 'sqlite')} | {_rate(new, 'postgresql')} | "
        f"{new['ratio']:.2f} | >= 0.6 of SQLite: {_verdict(new['ratio'] >= 0.6)} |",
        f"| full cycles per second | {_rate(cycles, 'sqlite')} | {_rate(cycles, 'postgresql')}"
        f" | {cycles['ratio']:.2f} | |",
    ]
    return [*lines, ""]


def _rate(r: dict[str, float], kind: str) -> str:
    return f"{r[kind]:,.0f} ({r[kind + '_min']:,.0f}-{r[kind + '_max']:,.0f})"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main() -> None:
    print_report(run, render)


if __name__ == "__main__":
    main()
