"""Unit tests of stacks and collateral in the pure core."""

from __future__ import annotations

import pytest
from boruta_scheduler.core import Core, Snapshot
from boruta_scheduler.errors import (
    AlreadyExists,
    Busy,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    WorkerNotFound,
)
from boruta_scheduler.types import RequestState, WorkerState
from core_kit import CoreKit

NOBODY = frozenset[str]()


@pytest.fixture
def kit() -> CoreKit:
    kit = CoreKit()
    for uuid, board in (("p1", "phone"), ("r1", "relay"), ("p2", "phone"), ("x", "other")):
        kit.add_worker(uuid, {"board": board})
    return kit


def ask(kit: CoreKit, board: str, **kwargs: object) -> int:
    return kit.core.new_request(kit.now, "u", NOBODY, {"board": board}, **kwargs).id  # type: ignore[arg-type]


def test_a_stack_is_listed_with_its_workers(kit: CoreKit) -> None:
    view = kit.core.create_stack(kit.now, "bench1", ["p1", "r1", "p1"])
    assert view.workers == ("p1", "r1")
    assert view.holder == 0
    assert [s.name for s in kit.core.stacks()] == ["bench1"]
    assert kit.core.worker("p1").stack == "bench1"
    changes = kit.drain()
    assert [s.name for s in changes.stacks] == ["bench1"]
    assert {w.uuid for w in changes.workers} >= {"p1", "r1"}


@pytest.mark.parametrize(
    ("name", "workers", "error"),
    [
        ("bad name!", ["p1", "r1"], InvalidArgument),
        ("", ["p1", "r1"], InvalidArgument),
        ("one", ["p1"], InvalidArgument),
        ("ghost", ["p1", "nope"], WorkerNotFound),
    ],
)
def test_malformed_stacks_are_refused(
    kit: CoreKit, name: str, workers: list[str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        kit.core.create_stack(kit.now, name, workers)
    assert kit.core.stacks() == []
    assert kit.core.worker("p1").stack == ""


def test_a_worker_is_in_one_stack_and_a_name_is_taken_once(kit: CoreKit) -> None:
    kit.core.create_stack(kit.now, "bench1", ["p1", "r1"])
    with pytest.raises(FailedPrecondition, match="in stack 'bench1'"):
        kit.core.create_stack(kit.now, "bench2", ["r1", "p2"])
    with pytest.raises(AlreadyExists, match="exists"):
        kit.core.create_stack(kit.now, "bench1", ["p2", "x"])
    with pytest.raises(NotFound, match="no stack"):
        kit.core.delete_stack(kit.now, "bench2")


def test_taking_a_board_of_a_stack_holds_the_others_as_collateral(kit: CoreKit) -> None:
    kit.core.create_stack(kit.now, "bench1", ["p1", "r1"])
    first = ask(kit, "phone")
    assert kit.core.request(first).job.worker_uuid == "p1"  # type: ignore[union-attr]
    relay = kit.core.worker("r1")
    assert relay.state is WorkerState.IDLE and relay.collateral_of == first
    assert kit.core.stack("bench1").holder == first
    # Another user's relay request waits although r1 is IDLE, and no_wait is Busy.
    with pytest.raises(Busy):
        ask(kit, "relay", no_wait=True)
    second = ask(kit, "relay")
    assert kit.core.request(second).state is RequestState.WAITING
    # Once the holder ends, the collateral serves the waiting request.
    kit.core.close_request(kit.now, first)
    assert kit.core.request(second).state is RequestState.IN_PROGRESS
    assert kit.core.worker("r1").collateral_of == 0
    # Now r1 holds p1 (PREPARE after its job) as collateral in turn.
    kit.answer_calls()
    assert kit.core.worker("p1").collateral_of == second
    third = ask(kit, "phone")
    assert kit.core.request(third).job.worker_uuid == "p2"  # type: ignore[union-attr]


def test_the_same_request_may_take_its_collateral(kit: CoreKit) -> None:
    kit.core.create_stack(kit.now, "bench1", ["p1", "r1"])
    view = kit.core.new_request(
        kit.now,
        "u",
        NOBODY,
        {},
        profiles=[("dut", {"board": "phone"}), ("relay", {"board": "relay"})],
    )
    assert [j.worker_uuid for j in view.jobs] == ["p1", "r1"]
    assert kit.core.worker("r1").collateral_of == 0


def test_a_worker_back_from_prepare_stays_collateral(kit: CoreKit) -> None:
    kit.core.set_state(kit.now, "r1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.create_stack(kit.now, "bench1", ["p1", "r1"])
    first = ask(kit, "phone")
    kit.core.set_state(kit.now, "r1", WorkerState.IDLE)
    kit.answer_calls()
    assert kit.core.worker("r1").state is WorkerState.IDLE
    second = ask(kit, "relay")
    assert kit.core.request(second).state is RequestState.WAITING
    kit.core.close_request(kit.now, first)
    assert kit.core.request(second).state is RequestState.IN_PROGRESS


def test_a_stack_made_around_a_running_job_holds_its_other_workers(kit: CoreKit) -> None:
    first = ask(kit, "phone")
    assert kit.core.request(first).job.worker_uuid == "p1"  # type: ignore[union-attr]
    assert kit.core.create_stack(kit.now, "bench1", ["p1", "r1"]).holder == first
    assert kit.core.worker("r1").collateral_of == first
    second = ask(kit, "phone")
    kit.core.request(second)
    # Two requests holding workers of one stack-to-be: refused.
    relay_job = ask(kit, "other")
    assert kit.core.request(relay_job).state is RequestState.IN_PROGRESS
    with pytest.raises(FailedPrecondition, match="in use by requests"):
        kit.core.create_stack(kit.now, "bench2", ["p2", "x"])


def test_deleting_a_stack_frees_its_collateral_at_once(kit: CoreKit) -> None:
    kit.core.create_stack(kit.now, "bench1", ["p1", "r1"])
    first = ask(kit, "phone")
    second = ask(kit, "relay")
    kit.core.delete_stack(kit.now, "bench1")
    assert kit.core.request(second).state is RequestState.IN_PROGRESS
    assert kit.core.worker("p1").stack == ""
    assert kit.core.request(first).state is RequestState.IN_PROGRESS
    changes = kit.drain()
    assert changes.removed_stacks == ["bench1"]


def test_a_reregistered_member_comes_back_as_collateral(kit: CoreKit) -> None:
    kit.core.create_stack(kit.now, "bench1", ["p1", "r1"])
    kit.core.set_state(kit.now, "r1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.deregister(kit.now, "r1")
    first = ask(kit, "phone")
    kit.add_worker("r1", {"board": "relay"})
    assert kit.core.worker("r1").stack == "bench1"
    assert kit.core.worker("r1").collateral_of == first
    second = ask(kit, "relay")
    assert kit.core.request(second).state is RequestState.WAITING


def stored(kit: CoreKit) -> Snapshot:
    """What the store would hold of kit's core now."""
    return Snapshot(
        requests=list(kit.core.live_requests()),
        workers=kit.core.workers(),
        last_request_id=kit.core.last_request_id,
        stacks=kit.core.stacks(),
    )


def test_collateral_follows_from_the_stored_state_on_restore(kit: CoreKit) -> None:
    kit.core.create_stack(kit.now, "bench1", ["p1", "r1"])
    first = ask(kit, "phone")
    second = ask(kit, "relay")
    kit.drain()
    snapshot = stored(kit)
    restored = Core.restore(snapshot, kit.now)
    assert restored.worker("r1").collateral_of == first
    assert restored.request(second).state is RequestState.WAITING
    assert restored.stack("bench1").holder == first
    restored.close_request(kit.now, first)
    assert restored.request(second).state is RequestState.IN_PROGRESS


def test_a_restore_matches_no_request_to_another_requests_collateral() -> None:
    """Two requests became ready while the scheduler was down; after the restore the first
    takes a board of a stack and the stack's other board is its collateral, not the
    second request's (found by the state machine: the restore matched from a list of the
    idle workers taken before the first job started)."""
    kit = CoreKit()
    kit.add_worker("w0", {"board": "a"})
    kit.add_worker("w1", {"board": "a"})
    first = kit.core.new_request(kit.now, "u", NOBODY, {}, valid_after=kit.now + 5).id
    second = kit.core.new_request(kit.now, "u", NOBODY, {}, valid_after=kit.now + 5).id
    kit.core.create_stack(kit.now, "s1", ["w0", "w1"])
    kit.drain()
    snapshot = stored(kit)
    restored = Core.restore(snapshot, kit.now + 30)
    assert restored.request(first).state is RequestState.IN_PROGRESS
    assert restored.request(second).state is RequestState.WAITING
    assert restored.stack("s1").holder == first


def test_boards_that_went_silent_together_are_not_given_out_in_the_tick_that_fails_them() -> None:
    # All three boards of a stack stop heartbeating. The tick that fails the running board
    # frees its collateral; the waiting two-board request must not be started on boards
    # whose heartbeat was lost in that same tick (it would start and fail at once).
    kit = CoreKit()
    for uuid in ("w0", "w1", "w2"):
        kit.add_worker(uuid, {"board": "b"})
    kit.core.create_stack(kit.now, "s", ["w0", "w1", "w2"])
    first = ask(kit, "b")
    kit.answer_calls()
    second = kit.core.new_request(
        kit.now, "v", NOBODY, {}, profiles=[("a", {"board": "b"}), ("c", {"board": "b"})]
    ).id
    assert kit.core.request(second).state is RequestState.WAITING
    kit.silent.update({"w0", "w1", "w2"})
    kit.advance(kit.core.policy.heartbeat_timeout + 5, heartbeats=False)
    assert kit.core.request(second).state is RequestState.WAITING
    assert {w.state for w in kit.core.workers()} == {WorkerState.FAILED}
    ended = [c for c in kit.changes[-1].usage if c.request_id == second]
    assert ended == [], ended
    assert first not in {v.id for v in kit.core.live_requests()}


def test_a_board_freed_in_a_tick_goes_to_the_best_request_ready_by_the_end_of_it() -> None:
    # w0's heartbeat is lost a little before C's valid_after; one tick fires both. Freeing
    # w0's collateral w1 must not hand it to B before C, more important, is ready.
    kit = CoreKit()
    for uuid in ("w0", "w1"):
        kit.add_worker(uuid, {"board": "b"})
    kit.core.create_stack(kit.now, "s", ["w0", "w1"])
    a = ask(kit, "b", priority=8)
    kit.answer_calls()
    assert kit.core.request(a).job.worker_uuid == "w0"  # type: ignore[union-attr]
    b = ask(kit, "b", priority=4)
    timeout = kit.core.policy.heartbeat_timeout
    c = ask(kit, "b", priority=1, valid_after=kit.now + timeout + 2)
    kit.now += timeout + 5  # one tick, in which w1 was heard and w0 was not
    kit.core.heartbeat(kit.now, "w1")
    kit.core.tick(kit.now)
    kit.drain()
    assert kit.core.worker("w0").state is WorkerState.FAILED
    assert kit.core.request(c).state is RequestState.IN_PROGRESS
    assert kit.core.request(b).state is RequestState.WAITING
