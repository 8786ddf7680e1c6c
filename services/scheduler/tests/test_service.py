"""The service's reads agree with what is committed, also while a commit is in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from boruta_scheduler.app.audit import clip
from boruta_scheduler.app.authz import RULES
from boruta_scheduler.app.engine import Engine
from boruta_scheduler.app.service import REASONS_PER_READ, SchedulerService
from boruta_scheduler.app.watch import WatchHub
from boruta_scheduler.core import Changes, Core
from boruta_scheduler.errors import IdempotencyKeyReused, InvalidArgument
from boruta_scheduler.store import MemoryStore
from boruta_scheduler.types import Access, Identity, PendingCode, RequestState, Role, WorkerState


class NoDryads:
    async def call(self, call: object) -> Access | None:
        return None


class HeldCommits(MemoryStore):
    """A memory store whose commits wait while the test holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()

    def commit(self, changes: Changes) -> None:
        self.open.wait(10)
        super().commit(changes)


async def test_the_pending_reason_agrees_with_the_request_it_is_reported_with() -> None:
    store = HeldCommits()
    engine = Engine(Core(), store, NoDryads())
    engine.start()
    service = SchedulerService(engine, store, WatchHub())
    alice = Identity("alice")
    first = await service.new_request(alice, {}, accept_unsatisfiable=True)
    second = await service.new_request(alice, {}, accept_unsatisfiable=True)
    view, reason = await service.request_info(alice, second.id)
    # No board is registered: none could serve it, and no request competes for one.
    assert view == second and reason is not None
    assert (reason.code, reason.requests_ahead) == (PendingCode.NO_MATCHING_BOARD, 0)
    assert store.get_request(second.id) == second  # the core's view is the stored one
    # The close of the first request is applied to the core, its commit held.
    store.open.clear()
    applied = engine.commands
    closing = asyncio.ensure_future(service.close_request(alice, first.id))
    deadline = time.monotonic() + 10
    while engine.commands == applied and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    asked = engine.commands
    info = asyncio.ensure_future(service.request_info(alice, first.id))
    # Until the call either answers or is queued in the engine behind the held commit.
    while not info.done() and engine.commands == asked and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    store.open.set()
    view, reason = await info
    await closing
    # Reported WAITING with no reason, or a reason for a closed request, would describe
    # two different moments; the answer is the committed state, CANCELLED.
    assert (view.state, reason) == (RequestState.CANCELLED, None)
    assert store.get_request(first.id) == view
    await engine.stop()


async def test_reasons_of_a_long_page_are_worked_out_a_few_requests_per_engine_read() -> None:
    store = MemoryStore()
    engine = Engine(Core(), store, NoDryads())
    engine.start()
    service = SchedulerService(engine, store, WatchHub())
    alice = Identity("alice")
    made = [
        await service.new_request(alice, {"n": str(i % 3)}, accept_unsatisfiable=True)
        for i in range(2 * REASONS_PER_READ + 1)
    ]
    closed = await service.close_request(alice, made[0].id)
    reads = 0
    read = engine.read

    async def counted(query: Any, discard: Any = None) -> Any:
        nonlocal reads
        reads += 1
        return await read(query, discard)

    engine.read = counted  # type: ignore[method-assign]
    # The page as the store had it: the closed request still WAITING there.
    reasons = await service.pending_reasons(alice, made)
    assert reads == 3  # 51 waiting requests, 25 per read
    assert closed.state is RequestState.CANCELLED and made[0].id not in reasons
    assert sorted(reasons) == [r.id for r in made[1:]]
    assert {r.code for r in reasons.values()} == {PendingCode.NO_MATCHING_BOARD}
    await engine.stop()


def test_refusals_name_who_may_make_the_call() -> None:
    rules = RULES["boruta.v1.Workers"]
    assert (
        rules["SetState"].refusal_message(Identity("alice"))
        == "only admins may change a worker's state; alice is a user"
    )
    assert (
        RULES["boruta.v1.Requests"]["NewRequest"].refusal_message(Identity("root", role=Role.ADMIN))
        == "only users and admins may create requests; root is an admin"
    )


async def test_audit_events_say_what_each_change_did() -> None:
    store = MemoryStore()
    engine = Engine(Core(), store, NoDryads())
    engine.start()
    service = SchedulerService(engine, store, WatchHub())
    alice, root = Identity("alice"), Identity("root", role=Role.ADMIN)
    dryad = Identity("lab-pc", role=Role.DRYAD)
    await service.register(
        dryad, {"UUID": "w1", "board": "rpi4"}, "127.0.0.1:1", "[::1]:22", "i", ""
    )
    await service.register(
        dryad, {"UUID": "w2", "board": "rpi4"}, "127.0.0.1:1", "[::1]:22", "i", ""
    )
    made = await service.new_request(
        alice, {"board": "rpi4", "x": "y" * 250, "z": "y" * 250}, accept_unsatisfiable=True
    )
    await service.update_request(alice, made.id, priority=7)
    await service.close_request(root, made.id)
    await service.set_groups(root, "w1", frozenset({"lab", "ci"}))
    await service.set_state(root, "w1", WorkerState.IDLE, "")
    await service.set_state(root, "w1", WorkerState.MAINTENANCE, "new cable")
    await service.deregister(root, "w2")
    await engine.read(lambda core, now: None)  # commits what was recorded last
    seen = [(e.actor, e.action, e.target, e.detail) for e in reversed(store.audit(100, None))]
    caps = f"board=rpi4 x={'y' * 250} z={'y' * 250}"
    assert seen == [
        ("alice", "NewRequest", "request 1", f"caps {clip(caps, 200)}, priority 8, WAITING"),
        ("alice", "UpdateRequest", "request 1", "priority 7"),
        ("root", "CloseRequest", "request 1", "CANCELLED"),
        ("root", "SetGroups", "worker w1", "ci,lab"),
        ("root", "SetState", "worker w1", "IDLE"),
        ("root", "SetState", "worker w1", "MAINTENANCE: new cable"),
        ("root", "Deregister", "worker w2", ""),
    ]
    await engine.stop()


async def _applied(engine: Engine, before: int) -> None:
    """Wait until the engine applied a command after the count before (its commit may wait)."""
    deadline = time.monotonic() + 10
    while engine.commands == before and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert engine.commands > before


async def test_a_retried_new_request_returns_the_request_its_key_made() -> None:
    store = HeldCommits()
    engine = Engine(Core(), store, NoDryads())
    engine.start()
    service = SchedulerService(engine, store, WatchHub())
    alice, bob = Identity("alice"), Identity("bob")
    first = await service.new_request(
        alice, {"b": "x"}, accept_unsatisfiable=True, idempotency_key="k"
    )
    again = await service.new_request(
        alice, {"b": "x"}, accept_unsatisfiable=True, idempotency_key="k"
    )
    assert again == first
    # Another owner's key is another key; another key is another request.
    assert (
        await service.new_request(bob, {"b": "x"}, accept_unsatisfiable=True, idempotency_key="k")
    ).id == 2
    assert (await service.new_request(alice, {"b": "x"}, accept_unsatisfiable=True)).id == 3
    with pytest.raises(IdempotencyKeyReused, match="request 1, with other arguments"):
        await service.new_request(alice, {"b": "y"}, accept_unsatisfiable=True, idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused):
        await service.new_request(
            alice, {"b": "x"}, accept_unsatisfiable=True, priority=3, idempotency_key="k"
        )
    with pytest.raises(InvalidArgument, match="at most 128"):
        await service.new_request(alice, {}, accept_unsatisfiable=True, idempotency_key="k" * 129)
    # A retry that comes while the first call's commit is still on its way (the first
    # answer lost, the client retrying) finds it in the core.
    store.open.clear()
    applied = engine.commands
    one = asyncio.ensure_future(
        service.new_request(alice, {}, accept_unsatisfiable=True, idempotency_key="k2")
    )
    await _applied(engine, applied)
    two = asyncio.ensure_future(
        service.new_request(alice, {}, accept_unsatisfiable=True, idempotency_key="k2")
    )
    # Even if the request ended before the retry reached the core.
    applied = engine.commands
    closing = asyncio.ensure_future(service.close_request(alice, 4))
    await _applied(engine, applied)
    store.open.set()
    made, retried, closed = await one, await two, await closing
    assert made.id == 4 and made.state is RequestState.WAITING
    assert (retried.id, retried.state) == (4, RequestState.CANCELLED) and retried == closed
    assert store.load().last_request_id == 4
    # After a restart the key is read back from the store.
    await engine.stop()
    engine = Engine(Core.restore(store.load(), time.time()), store, NoDryads())
    engine.start()
    service = SchedulerService(engine, store, WatchHub())
    assert (
        await service.new_request(alice, {}, accept_unsatisfiable=True, idempotency_key="k2")
    ) == closed
    kept = await service.new_request(
        alice, {"b": "x"}, accept_unsatisfiable=True, idempotency_key="k"
    )
    assert kept.id == 1 and kept.state is RequestState.WAITING
    await engine.stop()
