"""The engine's guarantees: nobody hears of a change before it is committed, in order, and
a failed commit stops everything."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from boruta_scheduler.core import Changes, Core
from boruta_scheduler.engine import PURGE_BATCH, PURGE_PAUSE, Command, Engine, EngineStopped
from boruta_scheduler.errors import InvalidArgument, RequestNotFound
from boruta_scheduler.service import SchedulerService, ServiceSettings
from boruta_scheduler.store import MemoryStore, Purged, SQLiteStore
from boruta_scheduler.types import Access, AuditEvent, Identity, RequestState
from boruta_scheduler.watch import WatchHub


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


class BrokenStore(MemoryStore):
    def commit(self, changes: Changes) -> None:
        raise OSError("disk full")


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


async def test_failed_commit_is_fatal_and_reported() -> None:
    engine = Engine(Core(), BrokenStore(), Dryads())
    engine.start()
    with pytest.raises(EngineStopped, match="disk full"):
        await engine.execute(
            lambda core, now: core.new_request(now, "u", frozenset(), {}, accept_unsatisfiable=True)
        )
    await engine.wait_closed()
    assert isinstance(engine.failure, OSError)
    with pytest.raises(EngineStopped):
        await engine.execute(lambda core, now: core.waiting_count)


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
