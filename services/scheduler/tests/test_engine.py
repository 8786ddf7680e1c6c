"""The engine's guarantees: nobody hears of a change before it is committed, in order; a
failed commit costs only the batches it lost, and the engine goes on from the store."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from boruta_scheduler.app.audit import AuditLog
from boruta_scheduler.app.engine import AUDIT_RIDE, Command, Engine
from boruta_scheduler.app.restore import freeze_heap, restore_core
from boruta_scheduler.app.service import SchedulerService, ServiceSettings
from boruta_scheduler.app.upkeep import PURGE_BATCH, PURGE_PAUSE, Upkeep
from boruta_scheduler.app.watch import WatchHub
from boruta_scheduler.core import Changes, Core, Policy
from boruta_scheduler.errors import (
    InternalError,
    InvalidArgument,
    RequestNotFound,
    StoreUnavailable,
    Unavailable,
)
from boruta_scheduler.store import MemoryStore, Purged, SQLiteStore
from boruta_scheduler.types import (
    Access,
    AuditEvent,
    Identity,
    RequestState,
    Role,
    UsageQuery,
    WorkerState,
)


class Dryads:
    async def call(self, call: object) -> Access | None:
        return Access("job", "KEY")


class GatedStore(MemoryStore):
    """A memory store whose commits wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.committed: list[Changes] = []

    def commit(self, changes: Changes) -> None:
        self.gate.wait(10)
        super().commit(changes)
        self.committed.append(changes)


class FillingStore(GatedStore):
    """A gated memory store whose disk the test can fill: commits then fail as SQLite's do."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def commit(self, changes: Changes) -> None:
        self.gate.wait(10)
        if self.full:
            raise StoreUnavailable("disk full: cannot write /test/boruta.db")
        super().commit(changes)
        self.committed.append(changes)


def new_request(owner: str = "u") -> object:
    return lambda core, now: core.new_request(
        now, owner, frozenset(), {}, accept_unsatisfiable=True
    )


async def settle(engine: Engine) -> None:
    """Let the engine apply what is queued (its commits may still wait)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_reply_waits_for_commit() -> None:
    store = GatedStore()
    engine = Engine(Core(), store, Dryads())
    engine.start()
    reply = asyncio.ensure_future(
        engine.execute(
            lambda core, now: core.new_request(now, "u", frozenset(), {}, accept_unsatisfiable=True)
        )
    )
    read = asyncio.ensure_future(engine.execute(lambda core, now: core.waiting_count))
    for _ in range(20):
        await asyncio.sleep(0)
    # Both commands were applied, but neither caller hears of it before the commit.
    assert engine.core.waiting_count == 1
    assert not reply.done() and not read.done()
    store.gate.set()
    view = await reply
    assert view.id == 1 and await read == 1
    assert [r.id for c in store.committed for r in c.requests] == [1]
    await engine.stop()


class Recorder:
    """A publisher that lets a test wait for a committed change."""

    def __init__(self) -> None:
        self.changes: list[Changes] = []
        self.event = asyncio.Event()

    def publish(self, changes: Changes) -> None:
        self.changes.append(changes)
        self.event.set()


async def test_timers_fire_with_no_commands_coming_in() -> None:
    store = GatedStore()
    store.gate.set()
    recorder = Recorder()
    engine = Engine(Core(), store, Dryads(), recorder)
    engine.start()
    now = time.time()
    view = await engine.execute(
        lambda core, t: core.new_request(
            t, "u", frozenset(), {}, deadline=now + 0.3, accept_unsatisfiable=True
        )
    )
    # Nothing else is sent: only the engine's own timer can time the request out.
    while not any(
        r.id == view.id and r.state is RequestState.TIMEOUT
        for c in recorder.changes
        for r in c.requests
    ):
        recorder.event.clear()
        await asyncio.wait_for(recorder.event.wait(), 10)
    await engine.stop()


async def test_errors_are_replied_without_changes() -> None:
    store = GatedStore()
    store.gate.set()
    engine = Engine(Core(), store, Dryads())
    engine.start()
    with pytest.raises(InvalidArgument):
        await engine.execute(
            lambda core, now: core.new_request(now, "u", frozenset(), {}, priority=99)
        )
    assert store.committed == []
    await engine.stop()


async def test_a_failed_commit_costs_only_the_batches_it_lost() -> None:
    store = FillingStore()
    store.gate.set()
    recorder = Recorder()
    engine = Engine(Core(), store, Dryads(), recorder)
    engine.start()
    first = await engine.execute(new_request())  # acknowledged: must survive everything
    # The next commit is held; meanwhile two more batches are applied on top of it.
    store.gate.clear()
    lost_new = asyncio.ensure_future(engine.execute(new_request()))
    await settle(engine)
    lost_close = asyncio.ensure_future(engine.execute(lambda c, t: c.close_request(t, first.id)))
    closed_subs: list[str] = []
    watch = asyncio.ensure_future(
        engine.read(lambda c, t: sorted(r.id for r in c.live_requests()), closed_subs.append)
    )
    await settle(engine)
    assert engine.core.live_request(first.id) is None  # applied, not yet stored
    store.full = True
    store.gate.set()
    for lost in (lost_new, lost_close):
        with pytest.raises(StoreUnavailable, match="disk full"):
            await lost
    # The read applied on top of the lost batches was thrown away and answered again
    # from the core rebuilt from the store: the close and the second request never were.
    assert await watch == [first.id]
    assert len(closed_subs) == 1
    assert engine.outage is not None and "disk full" in engine.outage
    with pytest.raises(StoreUnavailable, match="disk full"):
        await engine.execute(new_request())
    assert await engine.read(lambda c, t: c.waiting_count) == 1
    assert engine.running
    # Space comes back: the engine notices by itself and writes go through again.
    store.full = False
    while engine.outage is not None:
        await asyncio.sleep(0.01)
    second = await engine.execute(new_request())
    assert second.id == first.id + 1  # the lost request's id was never acknowledged
    await engine.stop()
    stored = {r.id: r.state for r in store.load().requests}
    assert stored == {first.id: RequestState.WAITING, second.id: RequestState.WAITING}
    published = [(r.id, r.state) for c in recorder.changes for r in c.requests]
    assert published == [(first.id, RequestState.WAITING), (second.id, RequestState.WAITING)]
    outages = [e for e in store.audit(10) if e.action == "StoreOutage"]
    assert len(outages) == 1 and "disk full" in outages[0].detail


async def test_silence_during_an_outage_fails_no_worker() -> None:
    """Dryads cannot be heard while nothing can be stored; the engine counts their silence
    from its recovery, as it does from a restart."""
    clock = [1_700_000_000.0]
    store = FillingStore()
    store.gate.set()
    policy = Policy(heartbeat_timeout=30)
    # Time passes (both clocks move), unlike a step of the wall clock.
    engine = Engine(
        Core(policy), store, Dryads(), clock=lambda: clock[0], monotonic=lambda: clock[0]
    )
    engine.start()
    caps = {"UUID": "w1"}
    await engine.execute(lambda c, t: c.register(t, caps, "127.0.0.1:1", "127.0.0.1:2"))
    store.full = True
    with pytest.raises(StoreUnavailable):
        await engine.execute(new_request())
    clock[0] += 10 * policy.heartbeat_timeout  # a long outage
    store.full = False
    while engine.outage is not None:
        await asyncio.sleep(0.01)
    worker = await engine.execute(lambda c, t: c.worker("w1"))
    assert worker.state is WorkerState.MAINTENANCE
    clock[0] += policy.heartbeat_timeout + 1  # silence after the recovery still counts
    worker = await engine.execute(lambda c, t: c.worker("w1"))
    assert worker.state is WorkerState.FAILED
    await engine.stop()


async def engine_with_w1(policy: Policy, clock: list[float], mono: list[float]) -> Engine:
    """A started engine on these wall and monotonic clocks, worker w1 registered, idle with
    its heartbeat timer armed."""
    engine = Engine(
        Core(policy), MemoryStore(), Dryads(), clock=lambda: clock[0], monotonic=lambda: mono[0]
    )
    engine.start()
    caps = {"UUID": "w1"}
    await engine.execute(lambda c, t: c.register(t, caps, "127.0.0.1:1", "127.0.0.1:2"))
    await asyncio.sleep(0)  # the engine idles, its heartbeat timer armed
    return engine


async def test_a_heartbeat_queued_before_the_deadline_keeps_its_board() -> None:
    """A heartbeat that reached the scheduler before its board's deadline but waited past it
    (a busy engine, a slow commit) counts: due timers fire in order with the commands'
    arrival, not all before the commands of the batch."""
    policy = Policy(heartbeat_timeout=30)
    clock = [1_700_000_000.0]
    engine = await engine_with_w1(policy, clock, clock)
    clock[0] += policy.heartbeat_timeout - 1
    engine.submit(lambda c, t: c.heartbeat(t, "w1"))  # 1 s before the deadline
    clock[0] += 2  # the batch runs 1 s after it
    worker = await engine.execute(lambda c, t: c.worker("w1"))
    assert worker.state is WorkerState.MAINTENANCE
    clock[0] += policy.heartbeat_timeout  # silence from the heartbeat on still counts
    worker = await engine.execute(lambda c, t: c.worker("w1"))
    assert worker.state is WorkerState.FAILED
    await engine.stop()


async def test_a_command_queued_behind_a_bug_applies_after_the_rebuilt_core_s_time() -> None:
    """The core rebuilt after a bug has fired its timers due by the time it was rebuilt at:
    a command that arrived before then, queued behind the bug, applies at that time, not
    at its arrival (it would find a request timed out before its deadline)."""
    clock = [1_700_000_000.0]
    store = GatedStore()
    store.gate.set()
    engine = Engine(Core(), store, Dryads(), clock=lambda: clock[0], monotonic=lambda: clock[0])
    engine.start()
    deadline = clock[0] + 2
    view = await engine.execute(
        lambda c, t: c.new_request(
            t, "u", frozenset(), {}, deadline=deadline, accept_unsatisfiable=True
        )
    )

    def bug(core: Core, now: float) -> None:
        raise KeyError("a bug")

    store.gate.clear()
    held = asyncio.ensure_future(engine.execute(new_request()))  # the rebuild waits for it
    await settle(engine)
    failing = asyncio.ensure_future(engine.execute(bug))
    after = asyncio.ensure_future(
        engine.execute(lambda c, t: (t, c.live_request(view.id) is not None))
    )
    await settle(engine)
    clock[0] = deadline + 1  # the core is rebuilt past the deadline
    store.gate.set()
    await held
    with pytest.raises(InternalError):
        await failing
    applied_at, live = await after
    assert not live
    assert applied_at >= deadline  # what it saw was so by the time it applied at
    await engine.stop()


async def test_a_timer_that_raises_a_bug_blames_no_command() -> None:
    """Timers due before a command fire before it is taken from the queue: a bug in one
    costs the command nothing (it applies on the rebuilt core), as when they all fired
    before the batch's commands."""
    clock = [1_700_000_000.0]
    store = MemoryStore()
    engine = Engine(Core(), store, Dryads(), clock=lambda: clock[0], monotonic=lambda: clock[0])
    engine.start()
    deadline = clock[0] + 2
    await engine.execute(
        lambda c, t: c.new_request(
            t, "u", frozenset(), {}, deadline=deadline, accept_unsatisfiable=True
        )
    )

    def bug(now: float) -> None:
        raise KeyError("a bug in a timer")

    engine.core.tick = bug  # type: ignore[method-assign]
    clock[0] = deadline + 1
    # Not blamed for the timer's bug: applied on the rebuilt core, which times it out.
    assert await engine.execute(lambda c, t: c.live_count) == 0
    await engine.stop()


async def silent_while_deaf(wall: float, steady: float) -> tuple[WorkerState, WorkerState]:
    """w1's state after the wall clock moved by wall and the monotonic clock by steady while
    the engine, idle, heard nothing (not even its own timer), and after a true silence of a
    heartbeat timeout that follows."""
    policy = Policy(heartbeat_timeout=30)
    clock, mono = [1_700_000_000.0], [1_000.0]
    engine = await engine_with_w1(policy, clock, mono)
    clock[0] += wall
    mono[0] += steady
    deaf = await engine.execute(lambda c, t: c.worker("w1"))
    clock[0] += policy.heartbeat_timeout + 1
    mono[0] += policy.heartbeat_timeout + 1
    later = await engine.execute(lambda c, t: c.worker("w1"))
    await engine.stop()
    return deaf.state, later.state


async def test_a_forward_step_of_the_clock_is_no_silence_of_the_dryads() -> None:
    """NTP stepping the clock, or a host resumed from suspend, moves the wall clock past
    every heartbeat timeout at once: the scheduler heard nothing meanwhile, so it counts the
    dryads' silence from then on, as after a restart (every running job failed before)."""
    assert await silent_while_deaf(wall=300, steady=0) == (
        WorkerState.MAINTENANCE,
        WorkerState.FAILED,
    )


async def test_a_stall_of_the_scheduler_is_no_silence_of_the_dryads() -> None:
    """The process paused (SIGSTOP, a frozen VM) well past its own timer: the same."""
    assert await silent_while_deaf(wall=300, steady=300) == (
        WorkerState.MAINTENANCE,
        WorkerState.FAILED,
    )


async def test_the_dryads_silence_counts_when_the_scheduler_was_listening() -> None:
    assert await silent_while_deaf(wall=31, steady=31) == (
        WorkerState.FAILED,
        WorkerState.FAILED,
    )


async def test_heartbeats_cost_no_commit_each_and_are_stored_in_batches() -> None:
    clock = [1_700_000_000.0]
    store = GatedStore()
    store.gate.set()
    engine = Engine(Core(), store, Dryads(), clock=lambda: clock[0], last_seen_flush=60)
    engine.start()
    for uuid in ("w1", "w2"):
        caps = {"UUID": uuid}
        await engine.execute(lambda c, t, caps=caps: c.register(t, caps, "h:1", "h:2"))
    commits = len(store.committed)
    for _ in range(5):
        clock[0] += 10
        await engine.execute(lambda c, t: c.heartbeat(t, "w1"))
        await engine.execute(lambda c, t: c.heartbeat(t, "w2"))
    assert len(store.committed) == commits  # nothing durable changed
    clock[0] += 15  # 65 s after the last flush
    await engine.execute(lambda c, t: c.heartbeat(t, "w1"))
    assert len(store.committed) == commits + 1
    assert store.committed[-1].last_seen == {"w1": clock[0], "w2": clock[0] - 15}
    clock[0] += 1
    await engine.execute(lambda c, t: c.heartbeat(t, "w2"))
    await engine.stop()  # a clean stop stores what was heard since
    assert store.committed[-1].last_seen == {"w2": clock[0]}
    assert {w.uuid: w.last_seen for w in store.load().workers} == {
        "w1": clock[0] - 1,
        "w2": clock[0],
    }


async def test_events_recorded_outside_commands_ride_the_next_commit() -> None:
    """An event recorded outside a command (AcquireWorker's access handed out) costs no
    commit of its own: it rides the next batch that commits anyway, or commits by itself
    once AUDIT_RIDE has passed, or when the audit log is read; it comes before the events of
    the batch it rides."""
    clock = [1_700_000_000.0]
    store = GatedStore()
    store.gate.set()
    engine = Engine(Core(), store, Dryads(), clock=lambda: clock[0])
    engine.start()
    commits = len(store.committed)

    def event(action: str) -> AuditEvent:
        return AuditEvent(clock[0], "ann", "user", action, "request 1")

    engine.audit(event("AcquireWorker"))
    await engine.read(lambda c, t: c.waiting_count)  # a batch that stores nothing
    assert len(store.committed) == commits
    await engine.execute(
        lambda c, t: (engine.audit(event("NewRequest")), new_request()(c, t))  # type: ignore[operator]
    )
    assert [e.action for e in store.committed[-1].audit] == ["AcquireWorker", "NewRequest"]
    assert len(store.committed) == commits + 1
    engine.audit(event("refused"))
    clock[0] += AUDIT_RIDE  # due: the next batch commits it, though it stores nothing else
    await engine.read(lambda c, t: c.waiting_count)
    assert len(store.committed) == commits + 2
    assert [e.action for e in store.committed[-1].audit] == ["refused"]
    engine.audit(event("AcquireWorker"))
    await engine.commit_audit()  # what readers of the log call first
    assert [e.action for e in store.committed[-1].audit] == ["AcquireWorker"]
    engine.audit(event("refused"))
    await engine.stop()  # a clean stop commits what is carried
    assert [e.action for e in store.committed[-1].audit] == ["refused"]


async def test_restart_from_a_stale_last_seen_fails_dead_workers_only() -> None:
    """The stored last-seen time may be up to LAST_SEEN_FLUSH old after a kill: silence
    is counted from the restart, so a live worker has a full timeout to be heard, and a
    dead one fails one timeout after the restart."""
    clock = [1_700_000_000.0]
    policy = Policy(heartbeat_timeout=30)
    store = MemoryStore()
    engine = Engine(Core(policy), store, Dryads(), clock=lambda: clock[0], last_seen_flush=60)
    engine.start()
    for uuid in ("live", "dead"):
        caps = {"UUID": uuid}
        await engine.execute(lambda c, t, caps=caps: c.register(t, caps, "h:1", "h:2"))
    for _ in range(5):  # heard, but not stored: no flush is due yet
        clock[0] += 10
        await engine.execute(lambda c, t: c.heartbeat(t, "live"))
        await engine.execute(lambda c, t: c.heartbeat(t, "dead"))
    left = store.load()  # what a kill -9 now leaves
    await engine.stop()
    stored = {w.uuid: w.last_seen for w in left.workers}
    assert stored["live"] < clock[0] - policy.heartbeat_timeout  # stale beyond a timeout
    clock[0] += 5
    core = Core.restore(left, clock[0], policy)
    assert core.worker("live").state is WorkerState.MAINTENANCE
    store = MemoryStore()
    restarted = Engine(core, store, Dryads(), clock=lambda: clock[0], last_seen_flush=60)
    restarted.start(core.drain())
    clock[0] += policy.heartbeat_timeout - 1
    await restarted.execute(lambda c, t: c.heartbeat(t, "live"))
    clock[0] += 2  # a timeout after the restart: only the silent worker has failed
    states = await restarted.execute(lambda c, t: {u: c.worker(u).state for u in ("live", "dead")})
    assert states == {"live": WorkerState.MAINTENANCE, "dead": WorkerState.FAILED}
    await restarted.stop()


class Tunnels:
    async def open(self, request_id: int, ssh_address: str, port: int = 0) -> int:
        return 40000 + request_id

    async def close(self, request_id: int) -> None:
        pass

    async def close_all(self) -> None:
        pass


async def test_a_tunnel_port_rides_with_the_next_commit() -> None:
    """The port a tunnel opened on is handed out at once, but costs no commit of its own:
    a restart opens the tunnel again. It is stored with the next batch that commits."""
    store = GatedStore()
    store.gate.set()
    engine = Engine(Core(), store, Dryads(), tunnels=Tunnels())
    engine.start()
    caps = {"UUID": "w1"}
    await engine.execute(lambda c, t: c.register(t, caps, "h:1", "h:2"))
    await engine.execute(lambda c, t: c.set_state(t, "w1", WorkerState.IDLE))
    while (await engine.execute(lambda c, t: c.worker("w1"))).state is not WorkerState.IDLE:
        await asyncio.sleep(0.01)
    request = await engine.execute(new_request())
    commits = len(store.committed)
    running = await engine.wait_for_job(request.id, 10)
    assert running.job is not None and running.job.tunnel_port == 40000 + request.id
    assert len(store.committed) == commits
    stored = store.get_request(request.id)
    assert stored is not None and stored.job is not None and stored.job.tunnel_port == 0
    await engine.execute(new_request())  # any batch that commits takes it along
    assert len(store.committed) == commits + 1
    stored = store.get_request(request.id)
    assert stored is not None and stored.job is not None
    assert stored.job.tunnel_port == 40000 + request.id
    await engine.stop()


async def prepared_board() -> tuple[GatedStore, Engine, int]:
    """An engine whose board w1 was just prepared (IDLE), and the commits made before."""
    store = GatedStore()
    store.gate.set()
    engine = Engine(Core(), store, Dryads())
    engine.start()
    await engine.execute(lambda c, t: c.register(t, {"UUID": "w1"}, "h:1", "h:2"))
    await engine.execute(lambda c, t: c.set_state(t, "w1", WorkerState.IDLE))
    commits = len(store.committed)
    while (await engine.read(lambda c, t: c.worker("w1"))).state is not WorkerState.IDLE:
        await asyncio.sleep(0.01)
    assert len(store.committed) == commits
    return store, engine, commits


async def test_reading_a_worker_s_history_commits_what_is_held() -> None:
    store, engine, commits = await prepared_board()
    await engine.commit_history()
    assert len(store.committed) == commits + 1
    assert [w.state for w in store.load().workers] == [WorkerState.IDLE]
    assert store.worker_history("w1", 1).entries[0].to_state is WorkerState.IDLE
    await engine.stop()


async def test_a_board_prepared_again_rides_with_the_next_commit() -> None:
    """A board's move to IDLE once its dryad answered Prepare costs no commit of its own: a
    restart prepares every board it finds in PREPARE again. The move and its history entry
    are stored with the next batch that commits, before that batch's own."""
    store, engine, commits = await prepared_board()
    left = store.load()  # what a kill -9 now leaves: the board is prepared again
    assert [w.state for w in left.workers] == [WorkerState.PREPARE]
    restored = Core.restore(left, time.time(), Policy()).drain()
    assert [c.worker_uuid for c in restored.calls] == ["w1"]
    await engine.execute(new_request())  # matched to w1, and takes the move along
    assert len(store.committed) == commits + 1
    moves = [(h.from_state, h.to_state) for h in store.committed[-1].history]
    assert moves == [
        (WorkerState.PREPARE, WorkerState.IDLE),
        (WorkerState.IDLE, WorkerState.RUNNING),
    ]
    await engine.stop()


async def test_a_command_that_raises_a_bug_costs_only_its_batch() -> None:
    store = GatedStore()
    store.gate.set()
    engine = Engine(Core(), store, Dryads())
    engine.start()
    first = await engine.execute(new_request())

    def bug(core: Core, now: float) -> None:
        core.close_request(now, first.id)  # half done, then:
        raise KeyError("a bug")

    store.gate.clear()
    held = asyncio.ensure_future(engine.execute(new_request()))  # commits before the bug
    await settle(engine)
    neighbour = asyncio.ensure_future(engine.execute(new_request()))
    failing = asyncio.ensure_future(engine.execute(bug))
    after = asyncio.ensure_future(engine.execute(new_request()))
    await settle(engine)
    store.gate.set()
    with pytest.raises(InternalError, match=r"internal error \(id [0-9a-f]{8}\)"):
        await failing
    with pytest.raises(Unavailable, match="retry"):
        await neighbour
    assert (await held).id == first.id + 1
    # Commands queued behind the bug run on the core rebuilt from the store.
    assert (await after).state is RequestState.WAITING
    assert engine.running and engine.outage is None
    assert engine.core.live_request(first.id) is not None  # the half-done close is gone
    await engine.stop()
    stored = {r.id for r in store.load().requests}
    assert stored == {first.id, first.id + 1, (await after).id}


DAY = 86400.0
T0 = 1_700_000_000.0


async def test_upkeep_purges_what_is_older_than_the_retention_in_small_batches(
    tmp_path: Path,
) -> None:
    clock = [T0]
    store = SQLiteStore(tmp_path / "b.db")
    engine = Engine(
        Core(), store, Dryads(), clock=lambda: clock[0], retention=90 * DAY, upkeep_interval=0
    )
    engine.start()
    nobody = frozenset[str]()

    def finished(count: int) -> Command[list[int]]:
        def command(core: Core, now: float) -> list[int]:
            ids = []
            for _ in range(count):
                view = core.new_request(now, "u", nobody, {}, accept_unsatisfiable=True)
                core.close_request(now, view.id)
                ids.append(view.id)
            return ids

        return command

    old = await engine.execute(finished(1200))
    live = await engine.execute(
        lambda core, now: core.new_request(
            now, "u", nobody, {}, deadline=now + 1000 * DAY, accept_unsatisfiable=True
        )
    )
    for n in range(700):
        engine.audit(AuditEvent(clock[0], "u", "user", "old", f"event {n}"))
    clock[0] = T0 + 60 * DAY
    recent = await engine.execute(finished(1))
    engine.audit(AuditEvent(clock[0], "u", "user", "recent", ""))
    await engine.execute(lambda core, now: None)

    clock[0] = T0 + 91 * DAY
    rounds = []
    while True:
        upkeep = await engine.housekeep()
        rounds.append(upkeep.purged)
        if not upkeep.purged.reached(PURGE_BATCH):
            break
        clock[0] += PURGE_PAUSE  # the next batch is due this much later
    # Each round is one short transaction of at most a batch of each kind.
    assert [p.requests for p in rounds] == [500, 500, 200]
    assert [p.audit for p in rounds] == [500, 200, 0]
    assert all(store.get_request(i) is None for i in old)
    assert store.get_request(live.id) is not None and store.get_request(recent[0]) is not None
    assert [e.action for e in store.audit(10)] == ["recent"]
    # With nothing left, the next purge waits for its interval.
    assert (await engine.housekeep()).purged == Purged()
    await engine.stop()
    store.close()


async def test_usage_records_outlive_the_requests_and_go_by_their_own_retention(
    tmp_path: Path,
) -> None:
    clock = [T0]
    store = SQLiteStore(tmp_path / "b.db")
    engine = Engine(
        Core(),
        store,
        Dryads(),
        clock=lambda: clock[0],
        retention=90 * DAY,
        usage_retention=400 * DAY,
        upkeep_interval=0,
    )
    engine.start()

    def cancelled(core: Core, now: float) -> None:
        for _ in range(600):
            view = core.new_request(now, "u", frozenset(), {}, accept_unsatisfiable=True)
            core.close_request(now, view.id)

    await engine.execute(cancelled)
    year = UsageQuery(T0, T0 + DAY, T0 + 500 * DAY)
    assert [t.unstarted for t in store.usage(year)] == [600]

    async def purge_all() -> list[Purged]:
        rounds = [(await engine.housekeep()).purged]
        while rounds[-1].reached(PURGE_BATCH):
            clock[0] += PURGE_PAUSE
            rounds.append((await engine.housekeep()).purged)
        return rounds

    clock[0] = T0 + 91 * DAY
    assert [(p.requests, p.usage) for p in await purge_all()] == [(500, 0), (100, 0)]
    assert [t.unstarted for t in store.usage(year)] == [600]
    clock[0] = T0 + 401 * DAY
    assert [(p.requests, p.usage) for p in await purge_all()] == [(0, 500), (0, 100)]
    assert store.usage(year) == []
    await engine.stop()
    store.close()


async def test_without_retention_nothing_is_purged() -> None:
    clock = [T0]
    store = MemoryStore()
    engine = Engine(Core(), store, Dryads(), clock=lambda: clock[0], upkeep_interval=0)
    engine.start()
    view = await engine.execute(
        lambda core, now: core.new_request(now, "u", frozenset(), {}, accept_unsatisfiable=True)
    )
    await engine.execute(lambda core, now: core.close_request(now, view.id))
    clock[0] += 10_000 * DAY
    assert (await engine.housekeep()).purged == Purged()
    assert store.get_request(view.id) is not None
    await engine.stop()


class ScrubCounter(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.scrubs = 0

    def scrub(self) -> bool:
        self.scrubs += 1
        return True


async def test_upkeep_scrubs_after_commits_that_may_drop_keys_and_only_then() -> None:
    store = ScrubCounter()
    engine = Engine(Core(), store, Dryads(), upkeep_interval=0)
    engine.start()
    # After a start the files may hold keys of the last run's ended jobs.
    assert (await engine.housekeep()).scrubbed and store.scrubs == 1
    assert not (await engine.housekeep()).scrubbed
    view = await engine.execute(
        lambda core, now: core.new_request(now, "u", frozenset(), {}, accept_unsatisfiable=True)
    )
    await engine.execute(lambda core, now: core.close_request(now, view.id))
    assert (await engine.housekeep()).scrubbed and store.scrubs == 2
    await engine.execute(lambda core, now: core.waiting_count)  # changes nothing
    assert not (await engine.housekeep()).scrubbed and store.scrubs == 2
    await engine.stop()


async def test_a_purged_request_is_explained_as_such() -> None:
    clock = [T0]
    store = MemoryStore()
    engine = Engine(
        Core(), store, Dryads(), clock=lambda: clock[0], retention=90 * DAY, upkeep_interval=0
    )
    engine.start()
    service = SchedulerService(engine, store, WatchHub(), ServiceSettings(retention=90 * DAY))
    who = Identity("u")
    view = await service.new_request(who, {}, accept_unsatisfiable=True)
    await service.close_request(who, view.id)
    clock[0] += 91 * DAY
    assert (await engine.housekeep()).purged.requests == 1
    with pytest.raises(RequestNotFound, match="deleted 90 days after they end"):
        await service.get_request(who, view.id)
    with pytest.raises(RequestNotFound, match="deleted 90 days"):
        await service.close_request(who, view.id)
    with pytest.raises(RequestNotFound, match=r"^request 99 does not exist$"):
        await service.get_request(who, 99)
    await engine.stop()


class GatedScrub(MemoryStore):
    """A memory store whose scrub waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.scrubbing = threading.Event()
        self.gate = threading.Event()

    def scrub(self) -> bool:
        self.scrubbing.set()
        self.gate.wait(10)
        return True


async def test_a_commit_during_a_scrub_gets_a_scrub_of_its_own() -> None:
    store = GatedScrub()
    engine = Engine(Core(), store, Dryads(), upkeep_interval=0)
    engine.start()
    round_one = asyncio.ensure_future(engine.housekeep())
    await asyncio.to_thread(store.scrubbing.wait, 10)
    batches = engine.batches
    created = asyncio.ensure_future(
        engine.execute(
            lambda core, now: core.new_request(now, "u", frozenset(), {}, accept_unsatisfiable=True)
        )
    )
    while engine.batches == batches:  # until the engine applied it (its commit waits)
        await asyncio.sleep(0)
    store.gate.set()
    assert (await round_one).scrubbed
    await created
    # The scrub that was running started before that commit: another one must follow.
    assert (await engine.housekeep()).scrubbed
    await engine.stop()


class FillingScrubCounter(FillingStore, ScrubCounter):
    """A store whose disk the test can fill, counting its scrubs."""


async def test_upkeep_goes_on_after_an_outage() -> None:
    store = FillingScrubCounter()
    store.gate.set()
    engine = Engine(Core(), store, Dryads(), upkeep_interval=0.01)
    engine.start()
    view = await engine.execute(new_request())
    store.full = True
    with pytest.raises(StoreUnavailable):
        await engine.execute(lambda core, now: core.close_request(now, view.id))
    store.full = False
    while engine.outage is not None:
        await asyncio.sleep(0.01)
    scrubs = store.scrubs
    # A job's end may drop a key: the upkeep that runs on its own must scrub for it.
    await engine.execute(lambda core, now: core.close_request(now, view.id))
    while store.scrubs == scrubs:
        await asyncio.sleep(0.01)
    await engine.stop()


class FillingUpkeepCounter(FillingScrubCounter):
    """A store whose disk the test can fill; its purges fail then, as SQLite's would."""

    def __init__(self) -> None:
        super().__init__()
        self.purges = 0

    def purge(self, before: float, limit: int) -> Purged:
        self.purges += 1
        if self.full:
            raise StoreUnavailable("disk full: cannot write /test/boruta.db", "disk full")
        return super().purge(before, limit)


async def test_upkeep_leaves_a_store_that_refuses_writes_alone() -> None:
    clock = [T0]
    store = FillingUpkeepCounter()
    store.gate.set()
    engine = Engine(
        Core(), store, Dryads(), clock=lambda: clock[0], retention=90 * DAY, upkeep_interval=0
    )
    engine.start()
    store.full = True
    with pytest.raises(StoreUnavailable):
        await engine.execute(new_request())
    while engine.outage is None:
        await asyncio.sleep(0)
    # Purges and scrubs are writes too: during the outage a round does nothing (and
    # so has nothing to warn about, every second, for as long as the outage lasts).
    assert await engine.housekeep() == Upkeep(Purged(), scrubbed=False)
    assert (store.purges, store.scrubs) == (0, 0)
    store.full = False
    while engine.outage is not None:
        await asyncio.sleep(0.01)
    upkeep = await engine.housekeep()
    assert upkeep.scrubbed and store.purges == 1
    await engine.stop()


async def test_a_recovery_that_rewrites_rows_asks_for_a_scrub() -> None:
    clock = [T0]
    store = FillingScrubCounter()
    store.gate.set()
    engine = Engine(Core(), store, Dryads(), clock=lambda: clock[0], upkeep_interval=0)
    engine.start()
    await engine.execute(
        lambda core, now: core.new_request(
            now, "u", frozenset(), {}, deadline=T0 + 60, accept_unsatisfiable=True
        )
    )
    assert (await engine.housekeep()).scrubbed
    assert not (await engine.housekeep()).scrubbed
    # The batch the full disk refuses holds only an event: no row that may drop a key.
    store.full = True
    with pytest.raises(StoreUnavailable):
        await engine.execute(
            lambda core, now: engine.audit(AuditEvent(T0, "u", "user", "Test", "x", ""))
        )
    clock[0] += 120  # the request's deadline passes during the outage
    store.full = False
    while engine.outage is not None:
        await asyncio.sleep(0.01)
    # Restoring timed the request out, rewriting its row: the old copy must be scrubbed.
    scrubs = store.scrubs
    assert (await engine.housekeep()).scrubbed and store.scrubs == scrubs + 1
    await engine.stop()


class BrokenPurge(ScrubCounter):
    """A memory store whose purge fails (as a damaged database's would) until mended."""

    def __init__(self) -> None:
        super().__init__()
        self.purges = 0
        self.broken = True

    def purge(self, before: float, limit: int) -> Purged:
        self.purges += 1
        if self.broken:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return super().purge(before, limit)


async def test_a_failing_purge_backs_off_and_warns_once_per_run_of_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="boruta_scheduler.app.upkeep")
    clock = [T0]
    store = BrokenPurge()
    engine = Engine(
        Core(), store, Dryads(), clock=lambda: clock[0], retention=90 * DAY, upkeep_interval=0
    )
    engine.start()
    rounds = []
    for _ in range(1200):  # twenty minutes of rounds a second apart, the most the loop runs
        rounds.append(await engine.housekeep())
        clock[0] += 1
    # The scrub a start asks for does not wait for the purge.
    assert rounds[0].scrubbed and "database disk image is malformed" in rounds[0].purge_error
    assert 5 <= store.purges <= 12, store.purges
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "purging what is older than the retention failed; retrying with backoff"
    ]
    assert "malformed" in warnings[0].cause and warnings[0].exc_info is None  # type: ignore[attr-defined]
    store.broken = False
    failed = store.purges
    while store.purges == failed:
        upkeep = await engine.housekeep()
        clock[0] += 1
    assert upkeep.purge_error == ""
    assert [r.getMessage() for r in caplog.records][-1] == "purging works again"
    # Back to the normal interval: the next purge is ten minutes away.
    purges = store.purges
    clock[0] += 60
    await engine.housekeep()
    assert store.purges == purges
    await engine.stop()


def test_restore_pauses_the_collector_and_freezing_keeps_the_core_out_of_it() -> None:
    """No collection runs while restore_core rebuilds (2,000 requests would set off
    several), the collector is on again after it, and freeze_heap leaves the restored core
    out of later collections; collect=True unfreezes first, so an old core can go."""
    store = MemoryStore()
    original = Core()
    for _ in range(2000):
        original.new_request(1.0, "ann", frozenset(), {"k": "v"}, accept_unsatisfiable=True)
    store.commit(original.drain())
    collections: list[str] = []

    def note(phase: str, info: dict[str, int]) -> None:
        collections.append(phase)

    gc.callbacks.append(note)
    try:
        core = restore_core(store, 2.0)
    finally:
        gc.callbacks.remove(note)
    try:
        assert collections == [] and gc.isenabled()
        assert core.waiting_count == 2000
        before = gc.get_freeze_count()
        freeze_heap()
        assert gc.get_freeze_count() >= before + 2000
        freeze_heap(collect=True)
        assert gc.get_freeze_count() >= 2000
    finally:
        gc.unfreeze()


async def test_an_audit_event_carries_the_time_its_command_applied_at() -> None:
    """A command applies at the time it arrived (not its batch's): the event it records
    says the same time as the change it records, e.g. a request's created_at."""
    clock = [1_700_000_000.0]
    store = MemoryStore()
    engine = Engine(Core(), store, Dryads(), clock=lambda: clock[0], monotonic=lambda: clock[0])
    audit = AuditLog(engine, store)
    engine.start()
    arrived = clock[0]
    who = Identity("alice", frozenset(), Role.USER)
    command = audit.recorded(
        who, "request.create", lambda v: (f"request {v.id}", ""), new_request()
    )
    submitted = asyncio.ensure_future(engine.execute(command))
    await asyncio.sleep(0)  # queued: it arrived now
    clock[0] += 2  # the batch runs 2 s after the command arrived
    view = await submitted
    await engine.stop()
    (event,) = [e for e in store.audit(10) if e.action == "request.create"]
    assert view.created_at == arrived
    assert event.time == view.created_at
