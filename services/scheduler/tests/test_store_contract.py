"""One contract suite for every store: what goes in comes out, atomically and in order."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from boruta_scheduler.core import Changes, Core, DryadCallKind, Policy, Snapshot
from boruta_scheduler.core.health import KEPT
from boruta_scheduler.core.idempotency import Idempotency
from boruta_scheduler.core.outbox import merge
from boruta_scheduler.errors import InvalidArgument, StoreUnavailable
from boruta_scheduler.listing import RequestQuery, RequestSort
from boruta_scheduler.store import MemoryStore, Purged, SQLiteStore, Store
from boruta_scheduler.store.codec import request_row, worker_row
from boruta_scheduler.store.postgresql import PostgreSQLStore
from boruta_scheduler.store.sqlfile import load_migrations
from boruta_scheduler.types import (
    AuditEvent,
    Colocation,
    FailureKind,
    Health,
    HistoryEntry,
    Placement,
    RequestState,
    TokenRecord,
    UsageQuery,
    WorkerState,
)
from core_kit import CoreKit
from pg_kit import postgres_fixture, postgres_url_fixture  # noqa: F401 - fixtures

NOBODY = frozenset[str]()


def open_kind(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A new, empty store of a kind: memory, sqlite (a file) or postgresql (a database of
    its own on the session's throwaway cluster)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "b.db")
    return PostgreSQLStore(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made = open_kind(request.param, request, tmp_path)
    yield made
    made.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made = open_kind(request.param, request, tmp_path)
    yield made
    made.close()


def farm_changes(kit: CoreKit) -> None:
    """Two idle workers, one running job, one waiting, one cancelled, one of another owner."""
    kit.add_worker("w1", {"board": "x"})
    kit.add_worker("w2", {"board": "y"}, groups=frozenset({"lab"}))
    kit.core.new_request(kit.now, "ann", NOBODY, {"board": "x"}, priority=3)  # 1 runs
    kit.core.new_request(kit.now, "ann", NOBODY, {"board": "x"}, priority=5, job_timeout=90)  # 2
    kit.core.new_request(kit.now, "bob", NOBODY, {"board": "x"}, priority=5)  # 3 cancelled
    kit.core.close_request(kit.now, 3)
    kit.core.new_request(kit.now + 1, "bob", frozenset({"lab"}), {"board": "y"}, priority=1)


def loaded(store: Store) -> Snapshot:
    """The store's snapshot with its requests read at once (a store may stream them)."""
    snapshot = store.load()
    return Snapshot(list(snapshot.requests), snapshot.workers, snapshot.last_request_id)


def commit_all(store: Store, kit: CoreKit) -> None:
    kit.drain()
    for changes in kit.changes:
        store.commit(changes)
    kit.changes.clear()


def test_empty_store_loads_empty(store: Store) -> None:
    assert loaded(store) == Snapshot([], [], 0)
    assert store.get_request(1) is None
    assert store.list_requests(RequestQuery()).items == []


def test_load_returns_live_requests_and_all_workers(store: Store) -> None:
    kit = CoreKit()
    farm_changes(kit)
    commit_all(store, kit)
    snapshot = loaded(store)
    assert sorted(r.id for r in snapshot.requests) == [1, 2, 4]
    assert {w.uuid for w in snapshot.workers} == {"w1", "w2"}
    assert snapshot.last_request_id == 4
    for view in snapshot.requests:
        assert view == kit.core.request(view.id)
    for wv in snapshot.workers:
        expected = kit.core.worker(wv.uuid)
        assert wv == expected.__class__(**{**_fields(expected), "host_status": None})


def _fields(view: object) -> dict[str, object]:
    return {name: getattr(view, name) for name in view.__slots__}  # type: ignore[attr-defined]


def test_core_restored_from_store_equals_original(store: Store) -> None:
    kit = CoreKit()
    farm_changes(kit)
    commit_all(store, kit)
    restored = Core.restore(loaded(store), kit.now, kit.core.policy)
    assert sorted(map(_fields, restored.live_requests()), key=lambda f: f["id"]) == sorted(
        map(_fields, kit.core.live_requests()), key=lambda f: f["id"]
    )
    running = restored.request(1)
    assert running.job is not None and running.job.access is not None


def test_a_drain_is_stored_with_the_worker_and_called_off(store: Store) -> None:
    """A worker going into maintenance after its job keeps the reason across a reload (a
    restart), and loses it when an admin calls the drain off."""
    kit = CoreKit()
    farm_changes(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash after", after_job=True)
    commit_all(store, kit)
    running = next(w for w in loaded(store).workers if w.uuid == "w1")
    assert (running.state, running.drain_reason) == (WorkerState.RUNNING, "reflash after")
    restored = Core.restore(loaded(store), kit.now, kit.core.policy)
    assert restored.worker("w1").drain_reason == "reflash after"
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    commit_all(store, kit)
    assert next(w for w in loaded(store).workers if w.uuid == "w1").drain_reason == ""


def test_terminal_requests_stay_readable_without_secrets(store: Store) -> None:
    kit = CoreKit()
    farm_changes(kit)
    kit.core.close_request(kit.now, 1)
    commit_all(store, kit)
    done = store.get_request(1)
    assert done is not None and done.state is RequestState.DONE
    assert done.job is not None and done.job.access is None
    cancelled = store.get_request(3)
    assert cancelled is not None and cancelled.state is RequestState.CANCELLED


def test_prepared_access_survives_for_idle_workers(store: Store) -> None:
    kit = CoreKit()
    kit.add_worker("w1")
    commit_all(store, kit)
    (worker,) = loaded(store).workers
    assert worker.state is WorkerState.IDLE and worker.prepared is not None
    assert worker.prepared.host_keys == ("ssh-ed25519 HOST1",)


def test_host_keys_and_job_timeout_survive_a_restart(store: Store) -> None:
    kit = CoreKit()
    kit.add_worker("w1")
    kit.add_worker("w2")
    kit.core.new_request(kit.now, "ann", NOBODY, {"UUID": "w1"}, job_timeout=90)
    commit_all(store, kit)
    restored = Core.restore(loaded(store), kit.now, kit.core.policy)
    running = restored.request(1)
    assert running.job_timeout == 90
    assert running.job is not None and running.job.access is not None
    assert running.job.access.host_keys == ("ssh-ed25519 HOST1",)
    prepared = restored.worker("w2").prepared
    assert prepared is not None and prepared.host_keys == ("ssh-ed25519 HOST2",)


def test_requests_of_several_boards_survive_a_restart(store: Store) -> None:
    kit = CoreKit()
    for uuid, board in (("p1", "phone"), ("r1", "relay"), ("p2", "phone")):
        kit.add_worker(uuid, {"board": board})
    kit.core.set_state(kit.now, "p2", WorkerState.MAINTENANCE)
    kit.answer_calls()
    profiles = [("dut", {"board": "phone"}), ("relay", {"board": "relay|usb"})]
    running = kit.core.new_request(kit.now, "ann", NOBODY, {}, profiles=profiles)
    kit.core.tunnel_opened(kit.now, running.id, 40002, 1)
    waiting = kit.core.new_request(kit.now, "ann", NOBODY, {}, profiles=profiles)
    named = kit.core.new_request(
        kit.now, "ann", NOBODY, {}, profiles=[("solo", {"board": "phone"})]
    )
    commit_all(store, kit)
    snapshot = loaded(store)
    for view in snapshot.requests:
        assert view == kit.core.request(view.id)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    jobs = restored.request(running.id).jobs
    assert [j.worker_uuid for j in jobs] == ["p1", "r1"]
    assert all(j.access is not None for j in jobs) and jobs[1].tunnel_port == 40002
    assert [p.name for p in restored.request(waiting.id).profiles] == ["dut", "relay"]
    assert [p.name for p in restored.request(named.id).profiles] == ["solo"]
    # The end of a request of several boards drops every job's secret from the store.
    kit.core.close_request(kit.now, running.id)
    commit_all(store, kit)
    done = store.get_request(running.id)
    assert done is not None and done.state is RequestState.DONE
    assert [j.worker_uuid for j in done.jobs] == ["p1", "r1"]
    assert all(j.access is None for j in done.jobs)


def test_co_located_groups_survive_a_restart(store: Store) -> None:
    kit = CoreKit()
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab1")
    kit.add_worker("s1", {"board": "server"}, host="lab2")
    kit.add_worker("r2", {"board": "relay"}, host="lab2")
    profiles = [("dut", {"board": "phone"}), ("relay", {"board": "relay"})]
    together = (Colocation((), Placement.HOST),)
    running = kit.core.new_request(kit.now, "ann", NOBODY, {}, profiles=profiles, together=together)
    partial = (Colocation(("relay", "server"), Placement.STACK),)
    waiting = kit.core.new_request(
        kit.now,
        "ann",
        NOBODY,
        {},
        profiles=[*profiles, ("server", {"board": "server"})],
        together=partial,
        accept_unsatisfiable=True,
    )
    commit_all(store, kit)
    snapshot = loaded(store)
    for view in snapshot.requests:
        assert view == kit.core.request(view.id)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    assert restored.request(running.id).together == together
    assert restored.request(waiting.id).together == partial
    kit.core.close_request(kit.now, running.id)
    commit_all(store, kit)
    done = store.get_request(running.id)
    assert done is not None and done.together == together


def test_a_store_from_before_host_keys_migrates_and_reads_them_as_none(tmp_path: Path) -> None:
    """A file written at schema version 4 (no host keys, no job timeouts) is migrated, and
    its rows read as no host keys and the policy's job timeout."""
    kit = CoreKit()
    kit.add_worker("w1")
    kit.add_worker("w2")
    kit.core.new_request(kit.now, "ann", NOBODY, {"UUID": "w1"})
    kit.drain()
    path = tmp_path / "v4.db"
    with sqlite3.connect(path) as conn:
        for number, script in load_migrations("sqlite"):
            if number <= 4:
                conn.executescript(script)
        conn.execute("PRAGMA user_version=4")
        for changes in kit.changes:
            for table, rows in (
                ("workers", [worker_row(w) for w in changes.workers]),
                ("requests", [request_row(r) for r in changes.requests]),
            ):
                for row in rows:
                    old = {k: v for k, v in row.items() if k not in NEW_COLUMNS}
                    marks = ", ".join(f":{k}" for k in old)
                    conn.execute(
                        f"INSERT OR REPLACE INTO {table} ({', '.join(old)}) VALUES ({marks})", old
                    )
    conn.close()
    store = SQLiteStore(path)
    try:
        snapshot = loaded(store)
    finally:
        store.close()
    assert_read_as_before_host_keys(snapshot)


def assert_read_as_before_host_keys(snapshot: Snapshot) -> None:
    """What a store of schema version 4 with one running job (on w1) and one prepared
    board (w2) loads as after its migration: no host keys, the policy's job timeout."""
    (running,) = snapshot.requests
    assert running.job is not None and running.job.access is not None
    assert (running.job.access.username, running.job.access.host_keys) == ("job1", ())
    assert running.job_timeout == 0.0
    prepared = {w.uuid: w.prepared for w in snapshot.workers}["w2"]
    assert prepared is not None and (prepared.username, prepared.host_keys) == ("job2", ())
    # Migration 0015: no failures kept from before.
    assert all(w.health == Health() for w in snapshot.workers)


def test_health_survives_a_restart(store: Store) -> None:
    """Failures with their kinds, a quarantine and a pending recovery come back as stored."""
    kit = CoreKit(Policy(quarantine_failures=2))
    kit.add_worker("w1")
    kit.add_worker("w2")
    kit.core.set_fail(kit.now, "w1", "camera gone")
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    kit.core.set_fail(kit.now, "w1", "camera gone again")
    kit.silent.add("w2")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    commit_all(store, kit)
    workers = {w.uuid: w for w in loaded(store).workers}
    assert workers["w1"].state is WorkerState.MAINTENANCE and workers["w1"].health.quarantined
    assert [f.kind for f in workers["w1"].health.failures] == [FailureKind.REPORTED] * 2
    assert workers["w2"].health.recoverable
    for uuid in workers:
        assert workers[uuid].health == kit.core.worker(uuid).health
    restored = Core.restore(loaded(store), kit.now, kit.core.policy)
    restored.heartbeat(kit.now + 1, "w2")
    assert restored.worker("w2").state is WorkerState.PREPARE


def test_a_board_taken_out_of_quarantine_is_stored_as_starting_afresh(store: Store) -> None:
    kit = CoreKit(Policy(quarantine_failures=2))
    kit.add_worker("w1")
    for _ in range(2):
        kit.core.set_fail(kit.now, "w1", "camera gone")
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
        kit.answer_calls()
    commit_all(store, kit)
    (stored,) = loaded(store).workers
    assert stored.health == kit.core.worker("w1").health
    assert stored.health.counted_from == kit.now and not stored.health.quarantined


def as_before_health(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The store closed with its health records emptied, as migration 0015 left those of a
    store it upgraded, its version set back to 16 (without the column of migration 0019),
    and opened again, as an upgrade would."""
    if isinstance(store, SQLiteStore):
        store._writer.execute("UPDATE workers SET health = '{}'")
        store._writer.execute("ALTER TABLE workers DROP COLUMN drain_reason")
        store._writer.execute("PRAGMA user_version=16")
        store.close()
        return SQLiteStore(tmp_path / "b.db")
    assert isinstance(store, PostgreSQLStore)
    with store._transaction(fenced=False) as conn:
        conn.execute("UPDATE workers SET health = '{}'")
        conn.execute("ALTER TABLE workers DROP COLUMN drain_reason")
        conn.execute("UPDATE schema_version SET version = 16")
    store.close()
    return PostgreSQLStore(request.getfixturevalue("postgres_url"))


def test_an_upgrade_rebuilds_health_records_from_the_history(
    sql_store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Boards that failed before the scheduler kept health records show those failures
    after the upgrade (their latest 64, kinds told by their reasons), not none."""
    kit = CoreKit(Policy(quarantine_failures=0))
    for uuid in ("w1", "w2", "w3", "w4"):
        kit.add_worker(uuid)
    for n in range(KEPT + 2):
        kit.core.set_fail(kit.now + n, "w1", f"camera gone {n}")
        kit.core.set_state(kit.now + n, "w1", WorkerState.IDLE)
        kit.answer_calls()
    kit.silent.add("w2")
    kit.core.set_state(kit.now, "w3", WorkerState.MAINTENANCE)
    kit.answer_calls(fail=DryadCallKind.PUT_IN_MAINTENANCE)
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    commit_all(sql_store, kit)
    store = as_before_health(sql_store, request, tmp_path)
    try:
        workers = {w.uuid: w for w in loaded(store).workers}
    finally:
        store.close()
    for uuid in ("w1", "w2", "w3"):
        kept = kit.core.worker(uuid).health.failures
        assert workers[uuid].health == Health(kept), uuid
    assert [f.kind for f in workers["w2"].health.failures] == [FailureKind.HEARTBEAT]
    assert [f.kind for f in workers["w3"].health.failures] == [FailureKind.DRYAD_CALL]
    assert len(workers["w1"].health.failures) == KEPT
    assert workers["w4"].health == Health()


# Columns added after schema version 4.
NEW_COLUMNS = {
    "prepared_host_keys",
    "access_host_keys",
    "job_timeout",
    "idempotency_key",
    "arguments_hash",
    "profiles",
    "more_jobs",
    "together",
    "health",
    "drain_reason",
}


def test_last_seen_and_removal(store: Store) -> None:
    kit = CoreKit()
    kit.add_worker("w1", idle=False)
    kit.add_worker("w2", idle=False)
    commit_all(store, kit)
    kit.core.heartbeat(kit.now + 7, "w1")
    kit.core.deregister(kit.now + 7, "w2")
    commit_all(store, kit)
    (worker,) = loaded(store).workers
    assert (worker.uuid, worker.last_seen) == ("w1", kit.now + 7)
    assert store.worker_history("w2", 10).entries == []


def test_a_merged_commit_stores_what_its_batches_would_one_at_a_time(store: Store) -> None:
    """Group commit merges batches: rows written several times in one commit (a request
    created and closed, a job's usage started and ended) and more rows of a kind than one
    statement takes end as they would, committed one batch at a time."""
    kit = CoreKit()
    kit.add_worker("w1", {"board": "x"})
    for n in range(1, 301):  # each runs on w1 in turn: 3 history entries each
        kit.core.new_request(kit.now, "ann", NOBODY, {"board": "x"})
        kit.core.close_request(kit.now, n)
        kit.answer_calls()
        kit.now += 1
    kit.drain()
    events = [
        AuditEvent(kit.now, "ann", "user", "CloseRequest", f"request {n}") for n in range(300)
    ]
    kit.changes[-1].audit.extend(events)
    reference = MemoryStore()
    for changes in kit.changes:
        reference.commit(changes)
    store.commit(merge(kit.changes))
    assert [store.get_request(n) for n in range(1, 301)] == [
        reference.get_request(n) for n in range(1, 301)
    ]
    assert loaded(store) == loaded(reference)
    history = store.worker_history("w1", 2000).entries
    assert len(history) > 900 and history == reference.worker_history("w1", 2000).entries
    assert store.audit(1000) == reference.audit(1000)
    query = UsageQuery(since=0, until=kit.now + 1, now=kit.now)
    assert store.usage(query) == reference.usage(query)


def test_history_newest_first_and_paged(store: Store) -> None:
    kit = CoreKit()
    kit.add_worker("w1")  # MAINTENANCE, PREPARE, IDLE
    kit.add_worker("w2")
    for _ in range(3):
        kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
        kit.answer_calls()
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
        kit.answer_calls()
    commit_all(store, kit)
    seen: list[HistoryEntry] = []
    page = store.worker_history("w1", 4)
    seen.extend(page.entries)
    while page.next_before is not None:
        page = store.worker_history("w1", 4, page.next_before)
        seen.extend(page.entries)
    states = [e.to_state for e in reversed(seen)]
    assert states[:3] == [WorkerState.MAINTENANCE, WorkerState.PREPARE, WorkerState.IDLE]
    assert len(states) == 3 + 3 * 4
    assert all(e.worker_uuid == "w1" for e in seen)
    assert seen[-1].from_state is None


@pytest.mark.parametrize("sort", list(RequestSort))
@pytest.mark.parametrize("descending", [False, True])
def test_list_pages_cover_everything_once_in_order(
    store: Store, sort: RequestSort, descending: bool
) -> None:
    kit = CoreKit()
    kit.add_worker("w1", idle=False)
    for i in range(23):
        kit.core.new_request(
            kit.now + i % 4,
            f"user{i % 3}",
            NOBODY,
            {},
            priority=1 + i % 5,
            valid_after=kit.now + 100 - i % 7,
        )
    kit.core.close_request(kit.now, 5)
    commit_all(store, kit)
    ids: list[int] = []
    query = RequestQuery(sort=sort, descending=descending, limit=4)
    while True:
        page = store.list_requests(query)
        ids.extend(r.id for r in page.items)
        if page.next_after is None:
            break
        query = RequestQuery(sort=sort, descending=descending, limit=4, after=page.next_after)
    assert sorted(ids) == list(range(1, 24))
    views = [store.get_request(i) for i in ids]
    keys = [
        (int(getattr(v, sort.value)), v.id)
        if sort is RequestSort.STATE
        else (getattr(v, sort.value), v.id)
        for v in views
        if v
    ]
    assert keys == sorted(keys, reverse=descending)


def test_list_filters(store: Store) -> None:
    kit = CoreKit()
    farm_changes(kit)
    commit_all(store, kit)

    def ids(**kw: object) -> list[int]:
        return [r.id for r in store.list_requests(RequestQuery(**kw)).items]  # type: ignore[arg-type]

    assert ids() == [1, 2, 3, 4]
    assert ids(owners=frozenset({"bob"})) == [3, 4]
    assert ids(states=frozenset({RequestState.WAITING, RequestState.CANCELLED})) == [2, 3]
    assert ids(priorities=frozenset({5})) == [2, 3]
    assert ids(ids=frozenset({4, 1, 99})) == [1, 4]
    assert ids(owners=frozenset({"ann"}), priorities=frozenset({3})) == [1]


def test_last_request_id_never_goes_back(store: Store) -> None:
    store.commit(Changes(last_request_id=7))
    store.commit(Changes(last_request_id=3))
    assert loaded(store).last_request_id == 7


def test_sqlite_survives_reopen_and_is_private(tmp_path: Path) -> None:
    kit = CoreKit()
    farm_changes(kit)
    path = tmp_path / "state" / "boruta.db"
    first = SQLiteStore(path)
    commit_all(first, kit)
    before = loaded(first)
    first.close()
    second = SQLiteStore(path)
    assert loaded(second) == before
    second.close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700


def test_sql_commit_is_atomic(sql_store: Store) -> None:
    kit = CoreKit()
    farm_changes(kit)
    kit.drain()
    good = kit.changes[0]
    broken = Changes(
        requests=good.requests,
        history=[HistoryEntry("w1", 1.0, None, None, "x")],  # type: ignore[arg-type]
        last_request_id=99,
    )
    with pytest.raises(TypeError):
        sql_store.commit(broken)
    assert loaded(sql_store) == Snapshot([], [], 0)
    sql_store.commit(good)  # the failed transaction left nothing behind to trip on
    assert sql_store.load().last_request_id == good.last_request_id


def new_token(user: str) -> TokenRecord:
    return TokenRecord(
        user, frozenset({"lab"}), False, b"h-" + user.encode(), 1.0, 99.0, "root", "ci"
    )


def test_tokens_are_kept_and_revoked_once(store: Store) -> None:
    core = Core()
    first = core.issue_token(new_token("ci-bot"))
    second = core.issue_token(new_token("alice"))
    assert (first.id, second.id) == (1, 2)
    store.commit(core.drain())
    assert store.load().tokens == [first, second]
    assert first.groups == {"lab"} and first.secret_hash == b"h-ci-bot"
    assert first.revoked_at is None
    revoked = core.revoke_token(50.0, 1)
    assert revoked.revoked_at == 50.0
    assert core.revoke_token(60.0, 1).revoked_at == 50.0  # a second revoke keeps the first
    store.commit(core.drain())
    assert store.load().tokens == [revoked, second]
    # A core restored from the store goes on with the next id.
    again = Core.restore(store.load(), 70.0)
    assert again.tokens() == [revoked, second]
    assert again.issue_token(new_token("bob")).id == 3
    with pytest.raises(InvalidArgument, match="no token 7; see ListTokens"):
        again.revoke_token(80.0, 7)


def test_purged_tokens_are_deleted_and_their_ids_never_come_back(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    core = Core()
    for user in ("ci-1", "ci-2", "ci-3"):
        core.issue_token(new_token(user))  # 1, 2, 3: expire at 99
    core.revoke_token(50.0, 2)
    store.commit(core.drain())
    # Revoked 2 at 50 and the rest expired at 99: at 160, with a retention of 100, only 2 goes.
    assert core.purge_tokens(160.0, 100.0, limit=10) == [2]
    store.commit(core.drain())
    assert [t.id for t in store.load().tokens] == [1, 3]
    # Every token purged, the newest (3) too: the store still knows ids up to 3 were used.
    assert core.purge_tokens(200.0, 100.0, limit=10) == [1, 3]
    store.commit(core.drain())
    snapshot = store.load()
    assert (snapshot.tokens, snapshot.last_token_id) == ([], 3)
    if isinstance(store, MemoryStore):
        reopened = store
    else:  # a store opened again reads the same
        store.close()
        reopened = open_again(store, request, tmp_path)
    try:
        snapshot = reopened.load()
        assert (snapshot.tokens, snapshot.last_token_id) == ([], 3)
        again = Core.restore(snapshot, 300.0)
        assert again.issue_token(new_token("ci-4")).id == 4
        reopened.commit(again.drain())
        snapshot = reopened.load()
        assert ([t.id for t in snapshot.tokens], snapshot.last_token_id) == ([4], 4)
        # Issued and purged in one merged commit: nothing of it is left but its id.
        again.issue_token(new_token("ci-5"))
        issued = again.drain()
        again.purge_tokens(300.0, 0.0, limit=10)
        reopened.commit(merge([issued, again.drain()]))
        snapshot = reopened.load()
        assert (snapshot.tokens, snapshot.last_token_id) == ([], 5)
    finally:
        if reopened is not store:
            reopened.close()


def open_again(store: Store, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A closed SQL store of open_kind's opened again."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(tmp_path / "b.db")
    return PostgreSQLStore(request.getfixturevalue("postgres_url"))


def test_the_upgrade_counts_token_ids_from_the_tokens_kept(
    sql_store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Migration 0018 sets the token id counter from the highest id stored (0 for none)."""
    core = Core()
    for user in ("ci-1", "ci-2", "ci-3"):
        core.issue_token(new_token(user))
    sql_store.commit(core.drain())
    # Back to version 17, without the counter (and migration 0019's column), as before.
    if isinstance(sql_store, SQLiteStore):
        sql_store._writer.execute("DELETE FROM counters WHERE name = 'last_token_id'")
        sql_store._writer.execute("ALTER TABLE workers DROP COLUMN drain_reason")
        sql_store._writer.execute("PRAGMA user_version=17")
    else:
        assert isinstance(sql_store, PostgreSQLStore)
        with sql_store._transaction(fenced=False) as conn:
            conn.execute("DELETE FROM counters WHERE name = 'last_token_id'")
            conn.execute("ALTER TABLE workers DROP COLUMN drain_reason")
            conn.execute("UPDATE schema_version SET version = 17")
    sql_store.close()
    upgraded = open_again(sql_store, request, tmp_path)
    try:
        assert upgraded.load().last_token_id == 3
    finally:
        upgraded.close()


def test_stacks_are_kept_deleted_and_restored(store: Store) -> None:
    core = Core()
    for uuid, board in (("p1", "phone"), ("r1", "relay"), ("p2", "phone"), ("r2", "relay")):
        core.register(0.0, {"UUID": uuid, "board": board}, f"{uuid}.lab:1", f"{uuid}.lab:22")
    core.create_stack(1.0, "bench1", ["p1", "r1"])
    core.create_stack(1.0, "bench2", ["p2", "r2"])
    store.commit(core.drain())
    assert [(s.name, s.workers, s.created_at) for s in store.load().stacks] == [
        ("bench1", ("p1", "r1"), 1.0),
        ("bench2", ("p2", "r2"), 1.0),
    ]
    # Deleted and made again with other workers in one commit: the last one wins.
    core.delete_stack(2.0, "bench2")
    core.delete_stack(2.0, "bench1")
    core.create_stack(3.0, "bench1", ["p1", "r2"])
    store.commit(core.drain())
    assert [(s.name, s.workers) for s in store.load().stacks] == [("bench1", ("p1", "r2"))]
    again = Core.restore(store.load(), 4.0)
    assert again.worker("r2").stack == "bench1" and again.worker("r1").stack == ""


def test_sql_a_token_commits_with_its_audit_event_or_not_at_all(sql_store: Store) -> None:
    store = sql_store
    core = Core()
    core.issue_token(new_token("ci-bot"))
    changes = core.drain()
    # The event is written after the token: its failure must take the token with it.
    nobody: str = None  # type: ignore[assignment]
    changes.audit.append(AuditEvent(1.0, nobody, "admin", "IssueToken", "token 1"))
    refused = (
        r"NOT NULL constraint failed: audit\.actor"  # SQLite
        r'|null value in column "actor" of relation "audit"'  # PostgreSQL
    )
    with pytest.raises(StoreUnavailable, match=refused):
        store.commit(changes)
    assert store.load().tokens == [] and store.audit(10) == []


def test_audit_events_newest_first_and_paged(store: Store) -> None:
    events = [AuditEvent(float(i), "u", "user", "NewRequest", f"request {i}") for i in (1, 2, 3)]
    store.commit(Changes(audit=events))
    store.commit(Changes(audit=[AuditEvent(4.0, "root", "admin", "SetState", "worker w1", "IDLE")]))
    newest = store.audit(2)
    assert [(e.id, e.target) for e in newest] == [(4, "worker w1"), (3, "request 3")]
    assert newest[0].detail == "IDLE" and newest[0].role == "admin"
    assert [e.id for e in store.audit(10, before=3)] == [2, 1]
    assert store.audit(10, before=1) == []


def test_purge_takes_old_finished_rows_in_batches_and_keeps_live_and_recent_ones(
    store: Store,
) -> None:
    kit = CoreKit()
    kit.add_worker("w1")
    running = kit.core.new_request(kit.now, "ann", NOBODY, {})
    waiting = kit.core.new_request(kit.now, "ann", NOBODY, {}, priority=9)
    old = [kit.core.new_request(kit.now, "bob", NOBODY, {}, priority=9).id for _ in range(5)]
    for request_id in old:
        kit.core.close_request(kit.now, request_id)
    commit_all(store, kit)
    store.commit(Changes(audit=[AuditEvent(kit.now, "bob", "user", "x", "") for _ in range(5)]))
    # A thousand seconds later: a new worker, a request finished now and two events.
    kit.now += 1000
    kit.add_worker("w2")
    recent = kit.core.new_request(kit.now, "bob", NOBODY, {}, priority=9).id
    kit.core.close_request(kit.now, recent)
    commit_all(store, kit)
    store.commit(Changes(audit=[AuditEvent(kit.now, "bob", "user", "y", "") for _ in range(2)]))
    w1_history = len(store.worker_history("w1", 100).entries)
    w2_history = len(store.worker_history("w2", 100).entries)
    cutoff = kit.now - 500

    first = store.purge(cutoff, 2)
    assert (first.requests, first.history, first.audit) == (2, 2, 2) and first.reached(2)
    while store.purge(cutoff, 2).reached(2):
        pass

    left = {r.id for r in store.list_requests(RequestQuery(limit=100)).items}
    assert left == {running.id, waiting.id, recent}
    assert all(store.get_request(i) is None for i in old)
    assert sorted(r.id for r in loaded(store).requests) == [running.id, waiting.id]
    assert {w.uuid for w in loaded(store).workers} == {"w1", "w2"}
    assert store.worker_history("w1", 100).entries == []  # all of it was older
    assert w1_history > 0 and len(store.worker_history("w2", 100).entries) == w2_history
    assert [(e.id, e.action) for e in store.audit(100)] == [(7, "y"), (6, "y")]
    # Ids are never reused, and paging still works after a purge.
    store.commit(Changes(audit=[AuditEvent(kit.now, "bob", "user", "z", "")]))
    assert [e.id for e in store.audit(100)] == [8, 7, 6]
    assert [e.id for e in store.audit(1, before=8)] == [7]
    assert store.purge(cutoff, 2) == Purged(0, 0, 0)


PEM_BEGIN = b"-----BEGIN RSA PRIVATE KEY-----"
PEM_KEY = re.compile(rb"-----BEGIN RSA PRIVATE KEY-----\n([A-Za-z0-9+/=\n]+?)\n-----END")


def pem_key(n: int) -> str:
    """A private key as a dryad hands it over (random bytes: only the form matters here)."""
    body = base64.encodebytes(os.urandom(1200)).decode().strip()
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n"


def keys_in_files(path: Path) -> tuple[int, set[bytes]]:
    """Private-key markers, and the keys whole enough to read, in the file and its log."""
    markers, keys = 0, set()
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-journal")):
        if name.exists():
            # Keys in a JSON column (a request's later boards) have their newlines escaped.
            data = name.read_bytes().replace(b"\\n", b"\n")
            markers += data.count(PEM_BEGIN)
            keys.update(PEM_KEY.findall(data))
    return markers, keys


def run_jobs(store: SQLiteStore) -> set[str]:
    """Jobs end and boards are prepared again many times, each change in a commit of its
    own; returns the keys still in use."""
    kit = CoreKit(key=pem_key)
    # Long caps make rows larger than a page, so that keys also land in overflow pages,
    # which go to the free list when their row changes.
    caps = {f"feature{i}": f"{i}".ljust(250, "x") for i in range(12)}
    for uuid in ("w1", "w2", "w3"):
        kit.add_worker(uuid, caps)
        commit_all(store, kit)
    for _ in range(40):
        jobs = [kit.core.new_request(kit.now, "ann", NOBODY, caps) for _ in range(3)]
        commit_all(store, kit)
        for job in jobs:
            kit.core.prolong_access(kit.now, job.id)  # a running job's row is rewritten
            commit_all(store, kit)
            kit.core.close_request(kit.now, job.id)
            commit_all(store, kit)
        kit.answer_calls()  # each board gets a new key for its next job
        commit_all(store, kit)
    running = kit.core.new_request(kit.now, "ann", NOBODY, caps)
    commit_all(store, kit)
    # A board taken out of service drops the key it was prepared with.
    idle = next(w.uuid for w in kit.core.workers() if w.state is WorkerState.IDLE)
    kit.core.set_state(kit.now, idle, WorkerState.MAINTENANCE)
    kit.answer_calls()
    commit_all(store, kit)
    assert running.job is not None and running.job.access is not None
    snapshot = loaded(store)
    live = {w.prepared.private_key_pem for w in snapshot.workers if w.prepared}
    live.add(running.job.access.private_key_pem)
    assert len(live) == 2
    return live


def assert_only_live_keys(path: Path, live: set[str]) -> None:
    markers, keys = keys_in_files(path)
    assert keys == {PEM_KEY.findall(k.encode())[0] for k in live}
    assert markers == len(live)


def test_sqlite_files_keep_no_key_of_an_ended_job(tmp_path: Path) -> None:
    """After many jobs, the file and its log hold exactly the keys still in use, once each
    (no copies in free space or in old frames of the log)."""
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    live = run_jobs(store)
    assert store.scrub()  # what the engine's upkeep does after such commits
    assert_only_live_keys(path, live)
    store.close()


def test_sqlite_files_keep_no_key_of_an_ended_job_of_several_boards(tmp_path: Path) -> None:
    """The same for requests of two boards, whose second board's key is kept in a column
    of its own (requests.more_jobs): none outlives its job either."""
    path = tmp_path / "keys.db"
    store = SQLiteStore(path)
    kit = CoreKit(key=pem_key)
    caps = {f"feature{i}": f"{i}".ljust(250, "x") for i in range(12)}
    for uuid, board in (("p1", "phone"), ("r1", "relay")):
        kit.add_worker(uuid, {**caps, "board": board})
        commit_all(store, kit)
    profiles = [("dut", {"board": "phone"}), ("relay", {"board": "relay"})]
    for _ in range(20):
        job = kit.core.new_request(kit.now, "ann", NOBODY, {}, profiles=profiles)
        commit_all(store, kit)
        kit.core.prolong_access(kit.now, job.id)  # a running job's row is rewritten
        commit_all(store, kit)
        kit.core.close_request(kit.now, job.id)
        commit_all(store, kit)
        kit.answer_calls()
        commit_all(store, kit)
    running = kit.core.new_request(kit.now, "ann", NOBODY, {}, profiles=profiles)
    commit_all(store, kit)
    live = {j.access.private_key_pem for j in running.all_jobs if j.access is not None}
    assert len(live) == 2
    assert store.scrub()
    assert_only_live_keys(path, live)
    store.close()


def test_a_store_from_before_secure_delete_is_cleared_of_dead_keys_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    # As a version-4 store wrote it: deleted content left where it was.
    store._writer.execute("PRAGMA secure_delete=OFF")
    live = run_jobs(store)
    # Undo migrations 5 and later, so that opening it again runs them as an upgrade would.
    for statement in (
        "ALTER TABLE workers DROP COLUMN drain_reason",
        "DROP INDEX tokens_by_idempotency_key",
        "ALTER TABLE tokens DROP COLUMN idempotency_key_hash",
        "ALTER TABLE tokens DROP COLUMN arguments_hash",
        "ALTER TABLE tokens DROP COLUMN sealed_secret",
        "DROP TABLE job_usage",
        "ALTER TABLE workers DROP COLUMN health",
        "DROP TABLE stacks",
        "ALTER TABLE requests DROP COLUMN together",
        "ALTER TABLE requests DROP COLUMN profiles",
        "ALTER TABLE requests DROP COLUMN more_jobs",
        "DROP INDEX requests_by_idempotency_key",
        "ALTER TABLE requests DROP COLUMN idempotency_key",
        "ALTER TABLE requests DROP COLUMN arguments_hash",
        "DROP INDEX requests_finished",
        "ALTER TABLE workers DROP COLUMN prepared_host_keys",
        "ALTER TABLE requests DROP COLUMN access_host_keys",
        "ALTER TABLE requests DROP COLUMN job_timeout",
        "PRAGMA user_version=4",
    ):
        store._writer.execute(statement)
    store.close()
    markers, _ = keys_in_files(path)
    assert markers > len(live)  # dead keys in free space: what an upgrade finds
    SQLiteStore(path).close()
    assert_only_live_keys(path, live)


def test_idempotency_keys_find_their_request_in_any_state_until_it_is_purged(
    store: Store,
) -> None:
    kit = CoreKit()
    kit.add_worker("w1")
    once = Idempotency("k-1", "hash-1", kit.now)
    kit.core.new_request(kit.now, "ann", NOBODY, {}, idempotency=once)  # 1 runs
    kit.core.new_request(kit.now, "ann", NOBODY, {}, accept_unsatisfiable=True)  # 2: no key
    commit_all(store, kit)
    found = store.find_request("ann", "k-1")
    assert found is not None and (found.id, found.arguments_hash) == (1, "hash-1")
    assert found.state is RequestState.IN_PROGRESS
    assert store.find_request("bob", "k-1") is None  # keys are the owner's
    assert store.find_request("ann", "k-2") is None
    assert store.get_request(2) is not None and store.get_request(2).idempotency_key == ""  # type: ignore[union-attr]
    # A core rebuilt from the store knows the live request's key.
    restored = Core.restore(store.load(), kit.now, kit.core.policy)
    again = restored.keyed_request(kit.now, "ann", once)
    assert again is not None and again.id == 1
    kit.core.close_request(kit.now + 1, 1)
    commit_all(store, kit)
    found = store.find_request("ann", "k-1")
    assert found is not None and found.state is RequestState.DONE
    # The retention purge takes the key with its request.
    assert store.purge(kit.now + 2, 100).requests == 1
    assert store.find_request("ann", "k-1") is None


def test_sql_one_request_per_owner_and_key(sql_store: Store) -> None:
    kit = CoreKit()
    kit.core.new_request(
        kit.now,
        "ann",
        NOBODY,
        {},
        accept_unsatisfiable=True,
        idempotency=Idempotency("k", "h", kit.now),
    )
    commit_all(store=sql_store, kit=kit)
    twin = dataclasses.replace(sql_store.get_request(1), id=2)  # type: ignore[type-var]
    with pytest.raises(StoreUnavailable):
        sql_store.commit(Changes(requests=[twin], last_request_id=2))
    assert sql_store.get_request(2) is None


def test_a_long_queue_restores_in_serving_order(store: Store) -> None:
    """Restoring queues every waiting request at once (one sort, one heapify): each keeps
    its place in the queue, and equal caps come back as one shared value."""
    kit = CoreKit()
    ids = [
        kit.core.new_request(
            kit.now + i % 7,
            "ann",
            NOBODY,
            {"board": f"b{i % 3}"},
            priority=1 + i % 16,
            valid_after=kit.now + 3600 * (i % 5 == 0),
            accept_unsatisfiable=True,
        ).id
        for i in range(200)
    ]
    commit_all(store, kit)
    restored = Core.restore(store.load(), kit.now + 10, kit.core.policy)
    assert [restored.queue_position(i) for i in ids] == [kit.core.queue_position(i) for i in ids]
    assert sorted(map(_fields, restored.live_requests()), key=lambda f: f["id"]) == sorted(
        map(_fields, kit.core.live_requests()), key=lambda f: f["id"]
    )
    assert restored.next_timer() == kit.core.next_timer()
