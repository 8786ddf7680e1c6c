"""Usage records in every store: written with the changes that start and end jobs, summed
over a period by user or group, kept across a reopen, purged by their own retention, and
made once from the requests of a store older than them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from boruta_scheduler.store import SQLiteStore, Store
from boruta_scheduler.store.codec import request_row, worker_row
from boruta_scheduler.store.postgresql import PostgreSQLStore
from boruta_scheduler.store.sqlfile import load_migrations
from boruta_scheduler.types import UsageBy, UsageQuery, UsageTotals
from core_kit import T0, CoreKit
from pg_kit import postgres_fixture, postgres_url_fixture  # noqa: F401 - fixtures
from test_store_contract import open_kind

ANN = frozenset({"lab", "qa"})
BOB = frozenset({"qa"})
# The period the scenario is summed over, and when it is asked (jobs still running end
# there for the sums), as seconds after T0.
SINCE, UNTIL, NOW = 50.0, 200.0, 300.0


def at(kit: CoreKit, t: float) -> None:
    """Move the scenario's clock to T0 + t (heartbeats and timers on the way)."""
    kit.advance(T0 + t - kit.now)


def scenario(kit: CoreKit, *, regroup: bool = True) -> None:
    """Jobs across both edges of [SINCE, UNTIL), a request of two boards, one that never
    starts and one still running, on boards with no group, one group and two groups.

    ann (lab, qa):  1: board a (open)     runs 0-100
                    3: boards a and c     waits 10-100, runs 100-250 (a: open, c: lab)
                    5: board b (lab)      runs 30-60
    bob (qa):       2: board d (qa)       runs from 0, still running
                    4: board d            waits 20-150, cancelled
    With regroup, board c moves to group qa while 3 runs: its job stays lab's.
    """
    kit.add_worker("w1", {"board": "a"})
    kit.add_worker("w2", {"board": "b"}, groups=frozenset({"lab"}))
    kit.add_worker("w3", {"board": "c"}, groups=frozenset({"qa", "lab"}))
    kit.add_worker("w4", {"board": "d"}, groups=frozenset({"qa"}))
    at(kit, 0)
    assert kit.core.new_request(kit.now, "ann", ANN, {"board": "a"}).id == 1
    assert kit.core.new_request(kit.now, "bob", BOB, {"board": "d"}).id == 2
    at(kit, 10)
    profiles = [("phone", {"board": "a"}), ("relay", {"board": "c"})]
    assert kit.core.new_request(kit.now, "ann", ANN, {}, profiles=profiles).id == 3
    at(kit, 20)
    assert kit.core.new_request(kit.now, "bob", BOB, {"board": "d"}).id == 4
    at(kit, 30)
    assert kit.core.new_request(kit.now, "ann", ANN, {"board": "b"}).id == 5
    at(kit, 60)
    kit.core.close_request(kit.now, 5)
    at(kit, 100)
    kit.core.close_request(kit.now, 1)  # 3 starts on w1 and w3
    kit.answer_calls()
    assert kit.core.request(3).state.name == "IN_PROGRESS"
    at(kit, 120)
    if regroup:
        kit.core.set_groups(kit.now, "w3", frozenset({"qa"}))
    at(kit, 150)
    kit.core.close_request(kit.now, 4)
    at(kit, 250)
    kit.core.close_request(kit.now, 3)
    at(kit, NOW)
    kit.answer_calls()
    kit.drain()


BY_USER = [
    # ann: 1 inside 50-100, 3's two boards 100-200 each, 5 inside 50-60; 3 started in the
    # period after waiting 90 s. bob: 2 inside 50-200; 4 ended unstarted after 130 s.
    UsageTotals("ann", 260.0, jobs=2, requests=1, wait_seconds=90.0, max_wait_seconds=90.0),
    UsageTotals("bob", 150.0, unstarted=1, unstarted_wait_seconds=130.0),
]
BY_GROUP = [
    UsageTotals("(none)", 0.0, unstarted=1, unstarted_wait_seconds=130.0),
    UsageTotals("(open)", 150.0, jobs=1, requests=1, wait_seconds=90.0, max_wait_seconds=90.0),
    UsageTotals("lab", 110.0, jobs=1),
    UsageTotals("qa", 150.0),
]


def query(by: UsageBy = UsageBy.USER, owner: str = "", since: float = SINCE) -> UsageQuery:
    return UsageQuery(T0 + since, T0 + UNTIL, T0 + NOW, by, owner)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made = open_kind(request.param, request, tmp_path)
    yield made
    made.close()


def committed(store: Store, *, regroup: bool = True) -> CoreKit:
    kit = CoreKit()
    scenario(kit, regroup=regroup)
    for changes in kit.changes:
        store.commit(changes)
    return kit


def test_usage_by_user_clips_jobs_to_the_period(store: Store) -> None:
    committed(store)
    assert store.usage(query()) == BY_USER


def test_usage_by_group_counts_each_job_once_for_the_group_that_granted_it(
    store: Store,
) -> None:
    committed(store)
    assert store.usage(query(UsageBy.GROUP)) == BY_GROUP
    board_time = sum(t.board_seconds for t in store.usage(query(UsageBy.GROUP)))
    assert board_time == sum(t.board_seconds for t in BY_USER)


def test_usage_of_one_owner(store: Store) -> None:
    committed(store)
    assert store.usage(query(owner="bob")) == BY_USER[1:]
    assert store.usage(query(UsageBy.GROUP, owner="bob")) == [BY_GROUP[0], BY_GROUP[3]]
    assert store.usage(query(owner="nobody")) == []


def test_a_running_job_counts_up_to_now_and_periods_add_up(store: Store) -> None:
    """Board time and counts of adjacent periods add up to those of the whole; a job still
    running counts up to now, never past it."""
    committed(store)

    def sums(since: float, until: float) -> dict[str, tuple[float, int, int, int]]:
        found = store.usage(UsageQuery(T0 + since, T0 + until, T0 + NOW))
        return {t.key: (t.board_seconds, t.jobs, t.requests, t.unstarted) for t in found}

    whole = sums(0, 1000)
    assert whole == {"ann": (30.0 + 100.0 + 150.0 * 2, 4, 3, 0), "bob": (300.0, 1, 1, 1)}
    parts = [sums(0, 75), sums(75, 175), sums(175, 1000)]
    for user, totals in whole.items():
        assert tuple(sum(p[user][i] for p in parts if user in p) for i in range(4)) == totals


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_usage_outlives_the_requests_and_a_reopen(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The records are the store's: a new store on the same file or database sums the
    same, also after the requests are purged."""
    first = open_kind(kind, request, tmp_path)
    committed(first)
    first.purge(T0 + 10_000, 500)  # every finished request
    first.close()
    second = open_kind(kind, request, tmp_path)
    try:
        assert second.get_request(1) is None
        assert second.usage(query()) == BY_USER
        assert second.usage(query(UsageBy.GROUP)) == BY_GROUP
    finally:
        second.close()


def test_purge_usage_takes_only_records_of_jobs_ended_before(store: Store) -> None:
    committed(store)
    # Ended before 120: 5 (60), 1 (100). 3 (250) and 4 (150) stay, 2 runs.
    assert store.purge_usage(T0 + 120, 500) == 2
    assert store.purge_usage(T0 + 120, 500) == 0
    left = {t.key: t for t in store.usage(UsageQuery(T0, T0 + 1000, T0 + NOW))}
    assert left["ann"].board_seconds == 300.0 and left["ann"].jobs == 2
    assert left["bob"].board_seconds == 300.0
    # In batches of the limit; the running job is never purged.
    assert store.purge_usage(T0 + 10_000, 1) == 1
    assert store.purge_usage(T0 + 10_000, 500) == 2
    assert [t.board_seconds for t in store.usage(UsageQuery(T0, T0 + 1000, T0 + NOW))] == [300.0]


# ------------------------------------------------------- stores older than the records


# Request columns added after schema version 10 (none of the scenario's requests uses them).
LATER_COLUMNS = {"together"}


def _old_rows(kit: CoreKit) -> tuple[dict[str, dict[str, object]], dict[int, dict[str, object]]]:
    """The last row of every worker and request the scenario wrote, as version 10 has them
    (without the columns of later migrations)."""
    workers: dict[str, dict[str, object]] = {}
    requests: dict[int, dict[str, object]] = {}
    for changes in kit.changes:
        for w in changes.workers:
            workers[w.uuid] = {
                k: v for k, v in worker_row(w).items() if k not in ("health", "drain_reason")
            }
        for r in changes.requests:
            row = request_row(r)
            assert all(row[k] is None for k in LATER_COLUMNS)
            requests[r.id] = {k: v for k, v in row.items() if k not in LATER_COLUMNS}
    return workers, requests


def _insert_old(
    execute: Callable[[str, dict[str, object]], object], mark: Callable[[str], str], kit: CoreKit
) -> None:
    workers, requests = _old_rows(kit)
    for table, rows in (("workers", workers.values()), ("requests", requests.values())):
        for row in rows:
            marks = ", ".join(mark(k) for k in row)
            execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", row)


def test_a_sqlite_store_from_before_usage_records_makes_them_from_its_requests(
    tmp_path: Path,
) -> None:
    kit = CoreKit()
    scenario(kit, regroup=False)
    path = tmp_path / "v10.db"
    with sqlite3.connect(path) as conn:
        for number, script in load_migrations("sqlite"):
            if number <= 10:
                conn.executescript(script)
        conn.execute("PRAGMA user_version=10")
        _insert_old(conn.execute, lambda k: f":{k}", kit)
    conn.close()
    store = SQLiteStore(path)
    try:
        assert store.usage(query()) == BY_USER
        assert store.usage(query(UsageBy.GROUP)) == BY_GROUP
    finally:
        store.close()


def test_a_postgresql_store_from_before_usage_records_makes_them_from_its_requests(
    postgres_url: str,
) -> None:
    kit = CoreKit()
    scenario(kit, regroup=False)
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE schema_version (only_row BOOLEAN PRIMARY KEY, version INT)")
        for number, script in load_migrations("postgresql"):
            if number <= 10:
                conn.execute(script)
        conn.execute("INSERT INTO schema_version VALUES (TRUE, 10)")
        _insert_old(conn.execute, lambda k: f"%({k})s", kit)
    store = PostgreSQLStore(postgres_url)
    try:
        assert store.usage(query()) == BY_USER
        assert store.usage(query(UsageBy.GROUP)) == BY_GROUP
    finally:
        store.close()
