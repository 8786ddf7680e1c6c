"""The engine's guarantees: nobody hears of a change before it is committed, in order, and
a failed commit stops everything."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from boruta_scheduler.core import Changes, Core
from boruta_scheduler.engine import Engine, EngineStopped
from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.store import MemoryStore
from boruta_scheduler.types import Access, RequestState


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
