"""Usage queries on a farm's worth of records: 10,000 jobs a day for 90 days (900,000
records, 200 users in 20 groups), written through Store.commit as the scheduler writes
them, then GetUsage's sums over a day, a week and the 90 days, by user and by group, on
SQLite and on PostgreSQL. `python -m bench.usage_bench [--report]`; `python -m bench`
runs it too."""

from __future__ import annotations

import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from boruta_scheduler.core import Changes
from boruta_scheduler.store import SQLiteStore, Store
from boruta_scheduler.types import JobUsage, RequestState, UsageBy, UsageQuery

from bench.machine import machine
from bench.report import replace_section
from bench.store_bench import sqlite_store

HEADING = "## Usage: sums over 90 days of records"
DAY = 86400.0
JOBS_PER_DAY = 10_000
DAYS = 90
USERS = 200
GROUPS = 20
BATCH = 5_000  # records per commit while loading
REPEATS = 5
T0 = 1_800_000_000.0


def records(days: int = DAYS) -> Iterator[list[JobUsage]]:
    """Batches of the records of days of a busy farm: jobs of 1-60 minutes after waits of
    up to 10, one request in 20 ending unstarted; the last day's last jobs still run."""
    rng = random.Random(7)
    total = days * JOBS_PER_DAY
    end_of_time = T0 + days * DAY
    batch: list[JobUsage] = []
    for n in range(total):
        user = rng.randrange(USERS)
        submitted = T0 + n * (DAY / JOBS_PER_DAY)
        waited = rng.uniform(0, 600)
        if rng.random() < 0.05:
            owner = f"user{user}"
            ended_unstarted = submitted + waited
            cancelled = RequestState.CANCELLED
            batch.append(
                JobUsage(n + 1, 0, owner, "(none)", "", submitted, None, ended_unstarted, cancelled)
            )
        else:
            started = submitted + waited
            finish = started + rng.uniform(60, 3600)
            ended = None if finish > end_of_time else finish
            state = RequestState.IN_PROGRESS if ended is None else RequestState.DONE
            group, worker = f"group{user % GROUPS}", f"board{n % 500}"
            batch.append(
                JobUsage(n + 1, 0, f"user{user}", group, worker, submitted, started, ended, state)
            )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def load(store: Store) -> float:
    """Write every record, a batch per commit; seconds taken."""
    started = time.perf_counter()
    for batch in records():
        store.commit(Changes(usage=batch))
    return time.perf_counter() - started


def timed(store: Store, query: UsageQuery) -> tuple[float, int]:
    """Median milliseconds of the query, and the rows it returns."""
    times = []
    rows = 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        rows = len(store.usage(query))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), rows


def measure(store: Store) -> dict[str, float]:
    result = {"load_s": load(store)}
    now = T0 + DAYS * DAY
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for days in (1, 7, 90):
        for by in UsageBy:
            ms, rows = timed(store, UsageQuery(now - days * DAY, now, now, by))
            result[f"{days}d_{by.value}_ms"] = ms
            result[f"{days}d_{by.value}_rows"] = rows
    # Peak memory of this process while the queries ran, above what loading left: the
    # store sums the records itself (SQLite in this process), so it stays small.
    result["query_rss_growth_mb"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    ) / 1024
    return result


def run() -> dict[str, dict[str, float]]:
    """Figures per store; PostgreSQL only where its server programs are installed."""
    results: dict[str, dict[str, float]] = {}
    with sqlite_store() as store:
        results["sqlite"] = measure(store)
        assert isinstance(store, SQLiteStore)
        files = store.path.parent.iterdir()
        results["sqlite"]["size_mb"] = sum(f.stat().st_size for f in files) / 1e6
    try:
        from boruta_scheduler.store.devpg import DevPostgres, find_bindir

        find_bindir()
    except (ImportError, FileNotFoundError) as exc:
        print(f"PostgreSQL part skipped: {exc}", file=sys.stderr)
        return results
    import psycopg
    from boruta_scheduler.store.postgresql import PostgreSQLStore

    with DevPostgres(durable=True) as server:
        url = server.create_database("boruta_usage_bench")
        pg = PostgreSQLStore(url)
        try:
            results["postgresql"] = measure(pg)
        finally:
            pg.close()
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_total_relation_size('job_usage')").fetchone()
        assert row is not None
        results["postgresql"]["size_mb"] = row[0] / 1e6
    return results


def render(result: dict[str, dict[str, float]] | None, when: str) -> list[str]:
    """This benchmark's section of docs/benchmarks.md."""
    if not result:
        return []
    kinds = list(result)

    def cells(key: str, fmt: Callable[[float], str]) -> str:
        return " | ".join(fmt(result[k][key]) for k in kinds)

    rows = [
        f"| {days} day{'s' if days > 1 else ''}, by {by.value} | "
        + cells(f"{days}d_{by.value}_ms", lambda v: f"{v:,.0f}")
        + " |"
        for days in (1, 7, 90)
        for by in UsageBy
    ]
    return [
        HEADING,
        "",
        f"Measured {when} on {machine()}.",
        f"`bench/usage_bench.py`: {JOBS_PER_DAY:,} jobs a day for {DAYS} days "
        f"({JOBS_PER_DAY * DAYS:,} usage records; {USERS} users in {GROUPS} groups, jobs of",
        "1-60 minutes, one request in 20 never starting), written through `Store.commit` in",
        f"batches of {BATCH:,}; then `Store.usage` (what GetUsage runs) over the last day, week",
        f"and the whole {DAYS} days, median of {REPEATS}, in milliseconds. The store sums in SQL",
        "(one aggregation, rows found by the index on the end time), so only one row per",
        "user or group comes back, whatever the period holds.",
        "",
        f"| period | {' | '.join(kinds)} |",
        "|---|" + "---|" * len(kinds),
        *rows,
        f"| loading all records (s) | {cells('load_s', lambda v: f'{v:,.0f}')} |",
        f"| records on disk, indexes included (MB) | {cells('size_mb', lambda v: f'{v:,.0f}')} |",
        f"| peak memory growth while querying (MB) | "
        f"{cells('query_rss_growth_mb', lambda v: f'{v:,.1f}')} |",
        "",
        "Time grows with the records in the period (SQLite sorts them by user or group for",
        "the GROUP BY, spilling to a temporary file rather than growing), memory with the rows",
        "returned only: the scheduler process grows by a few megabytes at most (PostgreSQL",
        "sums in its own server process). A week, what `schedctl usage --since 7d` asks, is",
        "well under a second on either store.",
        "",
    ]


def main() -> None:
    import argparse
    import datetime

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--report", action="store_true", help="rewrite this section of docs/benchmarks.md"
    )
    args = parser.parse_args()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result: Any = run()
    print(json.dumps(result, indent=2))
    if args.report:
        replace_section(HEADING, render(result, when), before="## Reading the figures")


if __name__ == "__main__":
    main()
