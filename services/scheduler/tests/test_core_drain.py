"""Maintenance after the current job (a drain): a RUNNING worker set to MAINTENANCE with
after_job takes no new job, and goes into MAINTENANCE when its job ends. Pure core."""

from __future__ import annotations

import dataclasses

import pytest
from boruta_scheduler.core import Core, DryadCallKind, Policy, Snapshot
from boruta_scheduler.errors import WrongWorkerState
from boruta_scheduler.types import PendingCode, RequestState, WorkerState
from core_kit import CoreKit, state_of

NOBODY = frozenset[str]()
PHONE_AND_RELAY = [("dut", {"board": "phone"}), ("relay", {"board": "relay"})]
POLICY = Policy(
    job_timeout=100.0,
    prolong_step=100.0,
    min_job_timeout=10.0,
    heartbeat_timeout=1e9,
    healthcheck_interval=0.0,
)


def running(kit: CoreKit, uuid: str = "w1", caps: dict[str, str] | None = None) -> int:
    """Register an idle worker and start a job on it; the request's id."""
    kit.add_worker(uuid, caps)
    request = kit.core.new_request(kit.now, "u", NOBODY, caps or {"UUID": uuid})
    assert request.state is RequestState.IN_PROGRESS
    kit.drain()
    return request.id


def calls(kit: CoreKit) -> list[tuple[DryadCallKind, str]]:
    kit.drain()
    return [(call.kind, call.message) for call in kit.pending]


def test_a_draining_worker_keeps_its_job_then_goes_into_maintenance() -> None:
    kit = CoreKit()
    request_id = running(kit)
    view = kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    assert (view.state, view.drain_reason) == (WorkerState.RUNNING, "reflash")
    assert kit.drain().workers[-1].drain_reason == "reflash"  # stored with the worker
    assert kit.core.request(request_id).state is RequestState.IN_PROGRESS
    assert calls(kit) == []
    # Another request for the board waits: the board takes no new job.
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"UUID": "w1"})
    kit.core.close_request(kit.now, request_id)
    assert state_of(kit, request_id) is RequestState.DONE
    view = kit.core.worker("w1")
    assert (view.state, view.reason, view.drain_reason) == (WorkerState.BUSY, "reflash", "")
    assert calls(kit) == [(DryadCallKind.PUT_IN_MAINTENANCE, "reflash")]
    kit.answer_calls()
    view = kit.core.worker("w1")
    assert (view.state, view.reason) == (WorkerState.MAINTENANCE, "reflash")
    assert kit.core.request(waiting.id).state is RequestState.WAITING


def test_a_worker_without_a_job_goes_into_maintenance_at_once() -> None:
    kit = CoreKit()
    kit.add_worker("w1")
    view = kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    assert (view.state, view.drain_reason) == (WorkerState.BUSY, "")
    assert calls(kit) == [(DryadCallKind.PUT_IN_MAINTENANCE, "reflash")]


def test_maintenance_now_on_a_draining_worker_fails_the_job() -> None:
    kit = CoreKit()
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "later", after_job=True)
    view = kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "now")
    assert (view.state, view.reason, view.drain_reason) == (WorkerState.BUSY, "now", "")
    assert state_of(kit, request_id) is RequestState.FAILED


def test_draining_again_replaces_the_reason() -> None:
    kit = CoreKit()
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "first", after_job=True)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "second", after_job=True)
    kit.core.close_request(kit.now, request_id)
    assert kit.core.worker("w1").reason == "second"


def test_idle_calls_off_the_drain_and_the_job_goes_on() -> None:
    kit = CoreKit()
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    view = kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    assert (view.state, view.drain_reason) == (WorkerState.RUNNING, "")
    assert kit.drain().workers[-1].drain_reason == ""
    assert kit.core.request(request_id).state is RequestState.IN_PROGRESS
    kit.core.close_request(kit.now, request_id)
    assert calls(kit) == [(DryadCallKind.PREPARE, "")]
    kit.answer_calls()
    assert kit.core.worker("w1").state is WorkerState.IDLE


def test_a_draining_worker_that_fails_forgets_the_drain() -> None:
    kit = CoreKit()
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    kit.core.set_fail(kit.now, "w1", "board on fire")
    view = kit.core.worker("w1")
    assert (view.state, view.drain_reason) == (WorkerState.FAILED, "")
    assert state_of(kit, request_id) is RequestState.FAILED
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    assert kit.core.worker("w1").state is WorkerState.IDLE


def test_a_job_that_times_out_also_drains() -> None:
    kit = CoreKit(POLICY)
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    kit.advance(POLICY.job_timeout + 1)
    assert state_of(kit, request_id) is RequestState.DONE  # a job that times out is done
    assert kit.core.worker("w1").state is WorkerState.BUSY
    kit.answer_calls()
    view = kit.core.worker("w1")
    assert (view.state, view.reason) == (WorkerState.MAINTENANCE, "reflash")


def test_a_dryad_restart_ends_the_job_and_the_drain_goes_on() -> None:
    kit = CoreKit()
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    kit.core.register(kit.now, {"UUID": "w1"}, "w1.lab:7175", "w1.lab:22", instance_id="i2")
    assert state_of(kit, request_id) is RequestState.FAILED
    assert calls(kit) == [(DryadCallKind.PUT_IN_MAINTENANCE, "reflash")]


def test_one_drained_board_of_a_request_of_two_goes_alone() -> None:
    kit = CoreKit()
    kit.add_worker("p0", {"board": "phone"})
    kit.add_worker("r0", {"board": "relay"})
    pair = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    assert pair.state is RequestState.IN_PROGRESS
    kit.core.set_state(kit.now, "r0", WorkerState.MAINTENANCE, "rewire", after_job=True)
    kit.core.close_request(kit.now, pair.id)
    kit.answer_calls()
    assert kit.core.worker("p0").state is WorkerState.IDLE
    assert kit.core.worker("r0").state is WorkerState.MAINTENANCE


def test_a_drained_board_of_a_stack_frees_its_collateral() -> None:
    kit = CoreKit()
    kit.add_worker("a", {"board": "phone"})
    kit.add_worker("b", {"board": "phone"})
    kit.core.create_stack(kit.now, "bench", ["a", "b"])
    first = kit.core.new_request(kit.now, "u", NOBODY, {"UUID": "a"})
    assert kit.core.worker("b").collateral_of == first.id
    second = kit.core.new_request(kit.now, "u", NOBODY, {"UUID": "b"})
    assert second.state is RequestState.WAITING
    kit.core.set_state(kit.now, "a", WorkerState.MAINTENANCE, "reflash", after_job=True)
    kit.core.close_request(kit.now, first.id)
    assert kit.core.worker("a").state is WorkerState.BUSY
    # b is collateral no more: it takes the waiting request.
    assert kit.core.request(second.id).state is RequestState.IN_PROGRESS
    kit.answer_calls()
    assert kit.core.worker("a").state is WorkerState.MAINTENANCE


def pair_behind_relay() -> tuple[CoreKit, int, int]:
    """One phone and one relay; the relay runs a job (timeout 50), a pair of both waits;
    the relay's request and the pair's."""
    kit = CoreKit(POLICY)
    kit.add_worker("p0", {"board": "phone"})
    kit.add_worker("r0", {"board": "relay"})
    relay = kit.core.new_request(kit.now, "u", NOBODY, {"board": "relay"}, job_timeout=50)
    pair = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=5)
    assert pair.state is RequestState.WAITING
    return kit, relay.id, pair.id


def test_a_draining_board_is_not_counted_on_by_a_waiting_request() -> None:
    kit, relay, pair = pair_behind_relay()
    core = kit.core
    assert core.reservation(kit.now, pair) == (("p0",), kit.now + 50)
    why = core.pending_reason(kit.now, pair)
    assert why is not None and why.expected_start == kit.now + 50
    core.set_state(kit.now, "r0", WorkerState.MAINTENANCE, "rewire", after_job=True)
    assert core.reservation(kit.now, pair) == (("p0",), float("inf"))
    why = core.pending_reason(kit.now, pair)
    assert why is not None and why.expected_start == 0.0
    relay_board = next(board for board in why.boards if board.uuid == "r0")
    assert relay_board.held_by == relay
    assert relay_board.frees_at == 0.0 and relay_board.frees_at_latest == 0.0


def test_a_draining_board_drops_its_reservation() -> None:
    kit, _, pair = pair_behind_relay()
    core = kit.core
    # A short job backfills the phone reserved for the pair; the phone stays reserved.
    short = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, job_timeout=30)
    assert short.state is RequestState.IN_PROGRESS
    assert core.reservation(kit.now, pair) == (("p0",), kit.now + 50)
    core.set_state(kit.now, "p0", WorkerState.MAINTENANCE, "reflash", after_job=True)
    assert core.reservation(kit.now, pair) == ((), float("inf"))


def test_a_drain_survives_a_restore() -> None:
    kit = CoreKit()
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    kit.drain()
    snapshot = Snapshot(list(kit.core.live_requests()), kit.core.workers(), request_id)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    assert restored.worker("w1").drain_reason == "reflash"
    restored.close_request(kit.now, request_id)
    view = restored.worker("w1")
    assert (view.state, view.reason) == (WorkerState.BUSY, "reflash")
    assert [c.kind for c in restored.drain().calls] == [DryadCallKind.PUT_IN_MAINTENANCE]


def test_a_worker_whose_job_was_lost_in_a_restore_still_drains() -> None:
    kit = CoreKit()
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    kit.drain()
    # The request is gone from the snapshot (finished by a writer the core never heard).
    snapshot = Snapshot([], kit.core.workers(), request_id)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    view = restored.worker("w1")
    assert (view.state, view.reason) == (WorkerState.BUSY, "reflash")
    assert [c.kind for c in restored.drain().calls] == [DryadCallKind.PUT_IN_MAINTENANCE]


def test_a_request_whose_only_board_drains_says_no_board_is_in_service() -> None:
    kit = CoreKit()
    request_id = running(kit)
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"UUID": "w1"})
    why = kit.core.pending_reason(kit.now, waiting.id)
    assert why is not None and why.code is PendingCode.BOARDS_BUSY
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    why = kit.core.pending_reason(kit.now, waiting.id)
    assert why is not None and why.code is PendingCode.BOARDS_UNAVAILABLE
    assert "1 RUNNING (draining)" in why.message
    assert kit.core.request(request_id).state is RequestState.IN_PROGRESS


def test_calling_off_a_drain_twice_is_refused_by_the_core_as_documented() -> None:
    """The core refuses IDLE on a RUNNING board that is not draining (FAILED_PRECONDITION,
    docs/api.md): a retried call-off is recognised by the client, which reads the board
    (tests/test_retry_once.py)."""
    kit = CoreKit()
    running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    view = kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    assert (view.state, view.drain_reason) == (WorkerState.RUNNING, "")
    with pytest.raises(WrongWorkerState, match="RUNNING the job of request"):
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)  # the retry


def test_a_draining_board_back_from_a_heartbeat_loss_stays_out_of_service() -> None:
    kit = CoreKit(dataclasses.replace(POLICY, heartbeat_timeout=30.0))
    request_id = running(kit)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    kit.silent.add("w1")
    kit.advance(31)  # a network blip: the job fails with the heartbeat
    assert state_of(kit, request_id) is RequestState.FAILED
    kit.silent.discard("w1")
    kit.core.heartbeat(kit.now, "w1")
    kit.answer_calls()
    # The admin asked it out of service: it does not come back IDLE by itself.
    assert kit.core.worker("w1").state is not WorkerState.IDLE
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"UUID": "w1"})
    assert waiting.state is RequestState.WAITING


def test_a_set_losing_its_reserved_board_to_a_drain_keeps_an_idle_one() -> None:
    kit = CoreKit(POLICY)
    core = kit.core
    for uuid in ("p0", "p1"):
        kit.add_worker(uuid, {"board": "phone"})
    kit.add_worker("r0", {"board": "relay"})
    core.new_request(kit.now, "u", NOBODY, {"board": "relay"}, job_timeout=50)
    pair = core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=5)
    found = core.reservation(kit.now, pair.id)
    assert found is not None
    (kept,), _ = found
    other = "p1" if kept == "p0" else "p0"
    # A short job takes the free phone, a second one backfills the kept one; the first ends.
    q1 = core.new_request(kit.now, "u", NOBODY, {"UUID": other}, job_timeout=30, priority=6)
    q2 = core.new_request(kit.now, "u", NOBODY, {"UUID": kept}, job_timeout=30, priority=6)
    assert q1.state is q2.state is RequestState.IN_PROGRESS
    core.close_request(kit.now, q1.id)
    kit.answer_calls()
    assert core.reservation(kit.now, pair.id) == ((kept,), kit.now + 50)
    core.set_state(kit.now, kept, WorkerState.MAINTENANCE, "reflash", after_job=True)
    # The other phone is idle and free: the pair keeps it now...
    assert core.reservation(kit.now, pair.id) == ((other,), kit.now + 50)
    # ...so a less important job longer than the pair's wait does not take it.
    long = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, job_timeout=100, priority=6)
    assert long.state is RequestState.WAITING
