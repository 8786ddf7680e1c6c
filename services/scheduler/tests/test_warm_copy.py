"""A standby's warm copy (app/warm.py) against a real PostgreSQL store: after any sequence of
commits it equals what a cold Store.load gives, and when it cannot (the purge took a
request it had not seen finish, a read failed) it says so and the takeover loads cold."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from boruta_scheduler.app.warm import Follower, Gap, WarmCopy
from boruta_scheduler.core import Snapshot
from boruta_scheduler.errors import BorutaError, StoreUnavailable
from boruta_scheduler.store.postgresql import PostgreSQLStore
from boruta_scheduler.store.sqlfile import load_queries
from boruta_scheduler.types import Colocation, Placement, TokenRecord, WorkerState
from core_kit import CoreKit, caps_of
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test
from pg_kit import cluster, postgres_fixture, postgres_url_fixture  # noqa: F401 - fixtures
from test_core_properties import POLICY  # short timeouts: requests and workers fail soon

NOBODY = frozenset[str]()
POOL = ("w1", "w2", "w3", "w4")
BOARDS = ("a", "b")
WORKER_ACTIONS = ("maintenance", "idle", "fail", "deregister", "heartbeat")
LIVE_TABLES = "requests, workers, worker_history, tokens, stacks, audit, change_tombstones"


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgreSQLStore]:
    made = PostgreSQLStore(postgres_url)
    yield made
    made.close()


def assert_same(warm: Snapshot, cold: Snapshot) -> None:
    assert list(warm.requests) == list(cold.requests)
    assert list(warm.workers) == list(cold.workers)
    assert list(warm.tokens) == list(cold.tokens)
    assert list(warm.stacks) == list(cold.stacks)
    assert warm.last_request_id == cold.last_request_id
    assert warm.last_token_id == cold.last_token_id


def warm_copy(store: PostgreSQLStore) -> WarmCopy:
    return WarmCopy(*store.live_state())


def empty(url: str) -> None:
    """Every table the copy follows emptied (the change numbers keep growing)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {LIVE_TABLES}")
        conn.execute("UPDATE counters SET value = 0")


class FollowMachine(RuleBasedStateMachine):
    """A farm driven at random through the core, every change committed to the store; one
    copy follows after every commit (and must never miss anything), another now and then
    (and may find a gap after a purge: then it loads again)."""

    def __init__(self, store: PostgreSQLStore, url: str) -> None:
        super().__init__()
        empty(url)
        self.store = store
        self.kit = CoreKit(POLICY)
        self.tokens: list[int] = []
        self.eager = warm_copy(store)
        self.lazy = warm_copy(store)
        self.on_commit: Callable[[], None] = lambda: None  # after every single commit
        self.note: Callable[[str], None] = note  # hypothesis's, while it runs the machine

    def _do(self, command: object) -> None:
        """Run a core command (one the core refuses changes nothing), commit what changed,
        and bring the eager copy up to date."""
        with contextlib.suppress(BorutaError):
            assert callable(command)
            command()
        self.kit.drain()
        for changes in self.kit.changes:
            self.store.commit(changes)
            self.on_commit()
        self.kit.changes.clear()
        self._follow_eagerly()

    def _follow_eagerly(self) -> None:
        changed = self.store.changes_since(self.eager.seq)
        self.note(f"eager copy: {changed.rows} rows after {changed.since}, to {changed.seq}")
        self.eager.apply(changed)  # never a Gap: it saw every request finish
        assert_same(self.eager.snapshot(), self.store.load())

    @rule(uuid=st.sampled_from(POOL), board=st.sampled_from(BOARDS), idle=st.booleans())
    def register(self, uuid: str, board: str, idle: bool) -> None:
        kit = self.kit

        def register() -> None:
            kit.core.register(
                kit.now, caps_of(uuid, board=board), f"{uuid}.lab:7175", f"{uuid}.lab:22"
            )
            if idle:
                kit.core.set_state(kit.now, uuid, WorkerState.IDLE)

        self._do(register)

    @rule()
    def answer_dryad_calls(self) -> None:
        self._do(self.kit.answer_calls)

    @rule(
        uuid=st.sampled_from(POOL),
        action=st.sampled_from(WORKER_ACTIONS),
    )
    def worker(self, uuid: str, action: str) -> None:
        core, now = self.kit.core, self.kit.now
        self._do(
            {
                "maintenance": lambda: core.set_state(now, uuid, WorkerState.MAINTENANCE),
                "idle": lambda: core.set_state(now, uuid, WorkerState.IDLE),
                "fail": lambda: core.set_fail(now, uuid, "board on fire"),
                "deregister": lambda: core.deregister(now, uuid),
                "heartbeat": lambda: core.heartbeat(now, uuid),
            }[action]
        )

    @rule(
        owner=st.sampled_from(("ann", "bob")),
        board=st.sampled_from(BOARDS),
        priority=st.integers(1, 16),
        count=st.integers(1, 3),
    )
    def new_requests(self, owner: str, board: str, priority: int, count: int) -> None:
        kit = self.kit

        def new() -> None:
            for _ in range(count):
                kit.core.new_request(
                    kit.now,
                    owner,
                    NOBODY,
                    {"board": board},
                    priority=priority,
                    accept_unsatisfiable=True,
                )

        self._do(new)

    @rule(index=st.integers(0, 50))
    def close_request(self, index: int) -> None:
        live = [r.id for r in self.kit.core.live_requests()]
        if live:
            self._do(lambda: self.kit.core.close_request(self.kit.now, live[index % len(live)]))

    @rule(seconds=st.sampled_from((1, 20, 45, 120)), heartbeats=st.booleans())
    def advance(self, seconds: int, heartbeats: bool) -> None:
        self._do(lambda: self.kit.advance(seconds, heartbeats=heartbeats))

    @rule(user=st.sampled_from(("ci", "alice")))
    def issue_token(self, user: str) -> None:
        token = TokenRecord(
            user, frozenset({"lab"}), False, b"h-" + user.encode(), self.kit.now, 1e10, "root", ""
        )
        self._do(lambda: self.tokens.append(self.kit.core.issue_token(token).id))

    @precondition(lambda self: bool(self.tokens))
    @rule(index=st.integers(0, 50))
    def revoke_token(self, index: int) -> None:
        token_id = self.tokens[index % len(self.tokens)]
        self._do(lambda: self.kit.core.revoke_token(self.kit.now, token_id))

    @precondition(lambda self: bool(self.tokens))
    @rule(limit=st.sampled_from((1, 500)))
    def purge_tokens(self, limit: int) -> None:
        """Revoked tokens go (the newest perhaps): a delete the copy follows, while the id
        counter keeps the newest id."""
        self._do(lambda: self.kit.core.purge_tokens(self.kit.now + 1, 0.0, limit))

    @rule(
        name=st.sampled_from(("s1", "s2")),
        members=st.lists(st.sampled_from(POOL), min_size=2, max_size=3, unique=True),
    )
    def create_stack(self, name: str, members: list[str]) -> None:
        self._do(lambda: self.kit.core.create_stack(self.kit.now, name, members))

    @rule(name=st.sampled_from(("s1", "s2")))
    def delete_stack(self, name: str) -> None:
        self._do(lambda: self.kit.core.delete_stack(self.kit.now, name))

    @rule(limit=st.sampled_from((1, 3, 500)), close=st.booleans(), index=st.integers(0, 50))
    def purge(self, limit: int, close: bool, index: int) -> None:
        """Finished requests go (all of them are old enough here), one perhaps just closed:
        a copy that saw them finish does not care; one that did not cannot know what it
        missed."""
        if close:
            self.close_request(index)
        self.store.purge(self.kit.now + 1, limit)
        self.on_commit()
        self._follow_eagerly()

    @rule()
    def follow_lazily(self) -> None:
        changed = self.store.changes_since(self.lazy.seq)
        try:
            self.lazy.apply(changed)
        except Gap:
            # Only a purge of a request changed after the copy's number makes one.
            assert changed.gap.startswith("the purge deleted"), changed.gap
            self.note("lazy copy: gap, loaded again")
            self.lazy = warm_copy(self.store)
        assert_same(self.lazy.snapshot(), self.store.load())

    @rule()
    def load_lazily_again(self) -> None:
        self.lazy = warm_copy(self.store)
        assert_same(self.lazy.snapshot(), self.store.load())


def as_lists(snapshot: Snapshot) -> tuple[list[object], ...]:
    return (
        list(snapshot.requests),
        list(snapshot.workers),
        list(snapshot.tokens),
        list(snapshot.stacks),
        [snapshot.last_request_id, snapshot.last_token_id],
    )


@pytest.mark.slow
def test_a_copy_read_while_commits_go_on_is_always_as_of_one_commit(
    store: PostgreSQLStore, postgres_url: str
) -> None:
    """Reads race the commits (another thread, other connections): every state the copy
    passes through is the state after some one commit, never a mix of two."""
    machine = FollowMachine(store, postgres_url)
    machine.note = lambda text: None
    committed = [as_lists(store.load())]  # the main thread commits, then records
    machine.on_commit = lambda: committed.append(as_lists(store.load()))
    seen: list[tuple[list[object], ...]] = []
    done = threading.Event()
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            copy = warm_copy(store)
            seen.append(as_lists(copy.snapshot()))
            while not done.is_set():
                seq = copy.seq
                try:
                    copy.apply(store.changes_since(seq))
                except Gap:
                    copy = warm_copy(store)
                if copy.seq != seq:
                    seen.append(as_lists(copy.snapshot()))
        except BaseException as exc:
            failed.append(exc)

    rng = random.Random(20261202)
    steps: list[Callable[[], None]] = [
        lambda: machine.register(rng.choice(POOL), rng.choice(BOARDS), rng.random() < 0.7),
        machine.answer_dryad_calls,
        lambda: machine.worker(rng.choice(POOL), rng.choice(WORKER_ACTIONS)),
        lambda: machine.new_requests(
            rng.choice(("ann", "bob")), rng.choice(BOARDS), rng.randint(1, 16), rng.randint(1, 3)
        ),
        lambda: machine.close_request(rng.randrange(50)),
        lambda: machine.advance(rng.choice((1, 20, 45, 120)), rng.random() < 0.5),
        lambda: machine.issue_token(rng.choice(("ci", "alice"))),
        lambda: machine.create_stack(rng.choice(("s1", "s2")), rng.sample(POOL, 2)),
        lambda: machine.delete_stack(rng.choice(("s1", "s2"))),
        lambda: machine.purge(rng.choice((1, 3, 500)), rng.random() < 0.5, rng.randrange(50)),
    ]
    follower = threading.Thread(target=follow)
    follower.start()
    try:
        for _ in range(200):
            rng.choice(steps)()
    finally:
        done.set()
        follower.join()
    assert failed == []
    assert len(committed) > 100 and len(seen) > 10, (len(committed), len(seen))
    for state in seen:
        assert state in committed


@pytest.mark.slow
def test_a_copy_following_random_commits_equals_a_cold_load(
    store: PostgreSQLStore, postgres_url: str
) -> None:
    run_state_machine_as_test(
        lambda: FollowMachine(store, postgres_url),
        settings=settings(max_examples=60, stateful_step_count=40, deadline=None),
    )


def busy_farm(kit: CoreKit) -> None:
    """Workers idle, running and deregistered, requests waiting, running and finished (of
    one board and of two), a token issued and one revoked, a stack made and one deleted."""
    kit.add_worker("w1", {"board": "x"})
    kit.add_worker("w2", {"board": "y"})
    kit.add_worker("gone", {"board": "x"}, idle=False)
    kit.core.deregister(kit.now, "gone")
    for priority in (3, 5, 5):
        kit.core.new_request(kit.now, "ann", NOBODY, {"board": "x"}, priority=priority)
    kit.core.close_request(kit.now, 3)
    kit.answer_calls()
    # Requests of two boards, one running (its later job is kept apart) and one waiting.
    kit.add_worker("w3", {"board": "y"})
    kit.add_worker("w4", {"board": "x"})
    pair = [("one", {"board": "y"}), ("two", {"board": "x"})]
    kit.core.new_request(kit.now, "bob", NOBODY, {}, profiles=pair)
    kit.core.new_request(kit.now, "bob", NOBODY, {}, profiles=pair)
    # And one whose boards must be on one host (none has both: it waits).
    together = (Colocation((), Placement.HOST),)
    kit.core.new_request(
        kit.now, "bob", NOBODY, {}, profiles=pair, together=together, accept_unsatisfiable=True
    )
    kit.answer_calls()
    for user in ("ci", "alice"):
        kit.core.issue_token(TokenRecord(user, NOBODY, False, b"h", kit.now, 1e10, "root", ""))
    kit.core.revoke_token(kit.now, 1)
    kit.core.create_stack(kit.now, "gone", ["w1", "w2"])
    kit.core.delete_stack(kit.now, "gone")
    kit.core.create_stack(kit.now, "bench", ["w2", "w3"])


def commit(store: PostgreSQLStore, kit: CoreKit) -> None:
    kit.drain()
    for changes in kit.changes:
        store.commit(changes)
    kit.changes.clear()


def finish_and_purge(store: PostgreSQLStore, kit: CoreKit) -> int:
    """A live request finished and purged at once; returns its id."""
    request_id = next(iter(kit.core.live_requests())).id
    kit.core.close_request(kit.now, request_id)
    commit(store, kit)
    assert store.purge(kit.now + 1, 500).requests >= 1
    return request_id


async def following(store: PostgreSQLStore) -> tuple[CoreKit, Follower]:
    """A busy farm committed, and a follower that has loaded its copy of it."""
    kit = CoreKit()
    busy_farm(kit)
    commit(store, kit)
    follower = Follower(store)
    await follower.step()
    return kit, follower


async def test_a_takeover_restores_from_the_copy_and_reads_only_what_changed(
    store: PostgreSQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    kit, follower = await following(store)
    # What commits after the last poll, as the old leader's last batch would.
    kit.core.new_request(kit.now, "bob", NOBODY, {"board": "y"}, priority=1)
    kit.core.register(kit.now, caps_of("gone", board="x"), "gone.lab:7175", "gone.lab:22")
    commit(store, kit)
    with caplog.at_level(logging.INFO, "boruta_scheduler.app.warm"):
        snapshot = await follower.takeover()
    assert snapshot is not None
    assert_same(snapshot, store.load())
    assert follower.copy is None  # handed over, not kept
    took = [r for r in caplog.records if r.message == "taking over from the warm copy"]
    # The new request, the worker registered again (and its running request's board) only.
    assert len(took) == 1 and 0 < took[0].rows_read <= 4


async def test_a_purge_the_copy_did_not_see_coming_is_a_gap_and_it_loads_again(
    store: PostgreSQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    kit, follower = await following(store)
    assert follower.copy is not None
    purged = finish_and_purge(store, kit)
    assert purged in follower.copy.requests  # as the copy last saw it: live
    await follower.step()
    assert follower.copy is None
    assert "warm copy dropped, loading it again" in caplog.text
    await follower.step()
    assert follower.copy is not None and purged not in follower.copy.requests
    assert_same(follower.copy.snapshot(), store.load())


async def test_a_takeover_after_a_gap_loads_the_store_cold(
    store: PostgreSQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    kit, follower = await following(store)
    finish_and_purge(store, kit)
    assert await follower.takeover() is None
    assert "warm copy unusable, loading the store" in caplog.text


async def test_a_takeover_whose_last_read_fails_loads_the_store_cold(
    store: PostgreSQLStore, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, follower = await following(store)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # The read of the changes fails on the server; a cold load does not need the table.
        conn.execute("ALTER TABLE change_tombstones RENAME TO moved_away")
    assert await follower.takeover() is None
    assert "warm copy unusable, loading the store" in caplog.text
    assert len(list(store.load().requests)) == 4  # busy_farm's live requests


async def test_without_a_copy_a_takeover_loads_the_store_cold(store: PostgreSQLStore) -> None:
    """A scheduler that took the lease at once never followed."""
    assert await Follower(store).takeover() is None


def test_rows_any_writer_changes_are_followed(store: PostgreSQLStore, postgres_url: str) -> None:
    """The change numbers come from the database, not from our statements: a writer of
    another version (or an operator's UPDATE) is followed too."""
    kit = CoreKit()
    busy_farm(kit)
    commit(store, kit)
    copy = warm_copy(store)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE requests SET priority = 1 WHERE id = 2")
        conn.execute("UPDATE workers SET reason = 'noted' WHERE uuid = 'w2'")
        conn.execute("DELETE FROM tokens WHERE id = 2")
    copy.apply(store.changes_since(copy.seq))
    assert_same(copy.snapshot(), store.load())
    assert copy.requests[2].priority == 1 and 2 not in copy.tokens


def test_a_poll_reads_requests_through_the_change_index(
    store: PostgreSQLStore, postgres_url: str
) -> None:
    """Polled ten times a second, the read of changed requests must not scan a long
    queue, even before the server has statistics on the column (just migrated)."""
    core = CoreKit().core
    for n in range(20):
        for _ in range(100):
            core.new_request(1.0, f"u{n}", NOBODY, {"board": "x"}, accept_unsatisfiable=True)
        store.commit(core.drain())
    since = store.live_state()[1]
    query = load_queries("postgresql", "follow.sql")["changed_requests"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        plan = conn.execute("EXPLAIN " + query, {"since": since}).fetchall()
    text = "\n".join(str(row[0]) for row in plan)
    assert "requests_by_change" in text and "Seq Scan on requests" not in text, text


async def test_a_copy_from_before_the_database_server_restarted_is_loaded_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its server restarted, or another server answers (a failover to a replica that may
    lack the last commits): the copy cannot tell what it holds that the database lost."""
    with cluster() as server:  # a cluster of its own: this test restarts it
        store = PostgreSQLStore(server.create_database("warm"))
        try:
            _, follower = await following(store)
            await asyncio.to_thread(server.restart)
            await follower.step()
            assert follower.copy is None
            why = [getattr(r, "why", "") for r in caplog.records]
            assert any(w.startswith("the database server restarted") for w in why), why
            await follower.step()
            assert follower.copy is not None
            with pytest.raises(StoreUnavailable):  # the writer's connection was cut: once
                store.load()
            assert_same(follower.copy.snapshot(), store.load())
        finally:
            store.close()
