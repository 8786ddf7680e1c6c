"""Unit tests of the pure core: queue order, matching, request and worker life, limits."""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import tracemalloc

import pytest
from boruta_scheduler.core import Core, DryadCallKind, Policy, Snapshot
from boruta_scheduler.core.idempotency import (
    FINISHED_KEPT,
    LOOKUP_FRESH,
    Idempotency,
    arguments_hash,
    check_key,
)
from boruta_scheduler.core.timers import TimerKind, TimerQueue
from boruta_scheduler.core.tokens import SEAL_KEPT
from boruta_scheduler.errors import (
    Busy,
    FailedPrecondition,
    IdempotencyKeyReused,
    InvalidArgument,
    NoCapableWorker,
    PermissionDenied,
    ProlongLimitReached,
    RequestNotFound,
    ResourceExhausted,
    Unavailable,
    WorkerNotFound,
    WrongRequestState,
    WrongWorkerState,
)
from boruta_scheduler.types import (
    FailedChecks,
    FailureKind,
    RequestState,
    TokenRecord,
    WorkerState,
)
from core_kit import SSHD_DOWN, T0, CoreKit, caps_of, state_of

NOBODY = frozenset[str]()


@pytest.fixture
def kit() -> CoreKit:
    return CoreKit()


def worker_state(kit: CoreKit, uuid: str) -> WorkerState:
    return kit.core.worker(uuid).state


# ------------------------------------------------------------------ queue order


def test_priority_then_fifo_when_a_worker_frees(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"})
    first = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    assert first.state is RequestState.IN_PROGRESS
    low_early = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=9)
    high_a = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=3)
    high_b = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=3)
    order = []
    for _ in range(3):
        running = next(r for r in kit.core.live_requests() if r.state is RequestState.IN_PROGRESS)
        kit.core.close_request(kit.now, running.id)
        kit.answer_calls()
        nxt = next(r for r in kit.core.live_requests() if r.state is RequestState.IN_PROGRESS)
        order.append(nxt.id)
    assert order == [high_a.id, high_b.id, low_early.id]


def test_unmatchable_request_does_not_block_later_ones(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"})
    kit.add_worker("w2", {"board": "odroid"}, idle=False)
    blocked = kit.core.new_request(kit.now, "u", NOBODY, {"board": "odroid"}, priority=1)
    later = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=16)
    assert blocked.state is RequestState.WAITING
    assert later.state is RequestState.IN_PROGRESS


def test_least_capable_worker_wins_and_ties_break_by_uuid(kit: CoreKit) -> None:
    kit.add_worker("w-rich", {"board": "rpi4", "camera": "yes", "wifi": "yes"})
    kit.add_worker("w-b", {"board": "rpi4", "camera": "yes"})
    kit.add_worker("w-a", {"board": "rpi4", "camera": "yes"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"camera": "yes"})
    assert r.job is not None and r.job.worker_uuid == "w-a"
    r = kit.core.new_request(kit.now, "u", NOBODY, {"camera": "yes"})
    assert r.job is not None and r.job.worker_uuid == "w-b"
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    assert r.job is not None and r.job.worker_uuid == "w-rich"


def test_groups_count_towards_capability(kit: CoreKit) -> None:
    kit.add_worker("w-a", {"board": "x"}, groups=frozenset({"lab"}))
    kit.add_worker("w-b", {"board": "x"})
    r = kit.core.new_request(kit.now, "u", frozenset({"lab"}), {"board": "x"})
    assert r.job is not None and r.job.worker_uuid == "w-b"


def test_worker_needs_every_cap_with_equal_value(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4", "camera": "no"})
    with pytest.raises(NoCapableWorker):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4", "camera": "yes"})
    with pytest.raises(NoCapableWorker):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4", "hdmi": "yes"})


def test_groups_restrict_workers(kit: CoreKit) -> None:
    kit.add_worker("team", {"board": "x"}, groups=frozenset({"team-a"}))
    with pytest.raises(NoCapableWorker, match="team-b"):
        kit.core.new_request(kit.now, "bob", frozenset({"team-b"}), {"board": "x"})
    r = kit.core.new_request(kit.now, "ann", frozenset({"team-a", "other"}), {"board": "x"})
    assert r.state is RequestState.IN_PROGRESS


def test_worker_without_groups_is_open_to_all(kit: CoreKit) -> None:
    kit.add_worker("open", {"board": "x"})
    r = kit.core.new_request(kit.now, "bob", frozenset({"any"}), {"board": "x"})
    assert r.state is RequestState.IN_PROGRESS
    r = kit.core.new_request(kit.now, "eve", NOBODY, {"board": "x"}, accept_unsatisfiable=True)
    assert r.state is RequestState.WAITING


def test_freed_worker_skips_requests_of_other_groups(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "x"}, groups=frozenset({"a"}))
    kit.add_worker("w2", {"board": "x"}, groups=frozenset({"b"}), idle=False)
    kit.core.new_request(kit.now, "ua", frozenset({"a"}), {"board": "x"})
    other = kit.core.new_request(kit.now, "ub", frozenset({"b"}), {"board": "x"}, priority=1)
    mine = kit.core.new_request(kit.now, "ua", frozenset({"a"}), {"board": "x"}, priority=9)
    running = [r for r in kit.core.live_requests() if r.state is RequestState.IN_PROGRESS]
    kit.core.close_request(kit.now, running[0].id)
    kit.answer_calls()
    assert kit.core.request(mine.id).state is RequestState.IN_PROGRESS
    assert kit.core.request(other.id).state is RequestState.WAITING


# ------------------------------------------------------------- request fields


def test_valid_after_delays_matching(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {}, valid_after=kit.now + 60)
    assert r.state is RequestState.WAITING
    kit.advance(59)
    assert kit.core.request(r.id).state is RequestState.WAITING
    kit.advance(1)
    assert kit.core.request(r.id).state is RequestState.IN_PROGRESS


def test_requests_ready_together_match_by_priority(kit: CoreKit) -> None:
    kit.add_worker("w1")
    low = kit.core.new_request(kit.now, "u", NOBODY, {}, valid_after=kit.now + 10, priority=9)
    high = kit.core.new_request(kit.now, "u", NOBODY, {}, valid_after=kit.now + 10, priority=2)
    kit.advance(10)
    assert kit.core.request(high.id).state is RequestState.IN_PROGRESS
    assert kit.core.request(low.id).state is RequestState.WAITING


def test_deadline_times_out_waiting_request(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    r = kit.core.new_request(kit.now, "u", NOBODY, {}, deadline=kit.now + 30)
    kit.advance(29)
    assert kit.core.request(r.id).state is RequestState.WAITING
    kit.advance(1)
    with pytest.raises(RequestNotFound):
        kit.core.request(r.id)
    assert state_of(kit, r.id) is RequestState.TIMEOUT


def test_defaults_for_priority_and_times() -> None:
    kit = CoreKit(Policy(default_priority=5, default_deadline=100))
    kit.add_worker("w1", idle=False)
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    assert (r.priority, r.valid_after, r.deadline) == (5, kit.now, kit.now + 100)
    later = kit.core.new_request(kit.now, "u", NOBODY, {}, valid_after=kit.now + 50)
    assert later.deadline == kit.now + 150


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"priority": 17}, "priority must be between 1"),
        ({"deadline": T0 - 1}, "deadline is in the past"),
        ({"deadline": T0}, "deadline is in the past"),
        ({"valid_after": T0 + 20, "deadline": T0 + 10}, "valid_after is after the deadline"),
        ({"caps": {f"k{i}": "v" for i in range(33)}}, "at most 32"),
        ({"caps": {"k" * 65: "v"}}, "key"),
        ({"caps": {"": "v"}}, "key"),
        ({"caps": {"bad key": "v"}}, "key"),
        ({"caps": {"k": "v" * 257}}, "value"),
        ({"caps": {"k": ""}}, "value"),
        ({"caps": {"k": "line\nbreak"}}, "value"),
    ],
)
def test_bad_request_fields_are_refused_and_change_nothing(
    kit: CoreKit, kwargs: dict[str, object], message: str
) -> None:
    kit.add_worker("w1")
    kit.drain()
    caps = kwargs.pop("caps", {})
    with pytest.raises(InvalidArgument, match=message):
        kit.core.new_request(kit.now, "u", NOBODY, caps, **kwargs)  # type: ignore[arg-type]
    assert not kit.drain().durable
    assert kit.core.new_request(kit.now, "u", NOBODY, {}).id == 1


def test_unsatisfiable_request_refused_unless_accepted(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"})
    kit.drain()
    with pytest.raises(NoCapableWorker, match="board=rpi5"):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi5"})
    assert not kit.drain().durable
    r = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi5"}, accept_unsatisfiable=True)
    assert r.state is RequestState.WAITING


def test_priority_limits_per_group() -> None:
    kit = CoreKit(Policy(default_priority=2, max_priority=4, group_max_priority={"release": 1}))
    kit.add_worker("w1", idle=False)
    kit.drain()
    core = kit.core
    with pytest.raises(PermissionDenied, match="priority 2 is reserved; your groups may use 4"):
        core.new_request(kit.now, "u", NOBODY, {}, priority=2)
    assert not kit.drain().durable
    assert core.new_request(kit.now, "u", NOBODY, {}).priority == 4  # the default, capped
    ci = core.new_request(kit.now, "u", frozenset({"ci"}), {}, priority=5)
    assert core.new_request(kit.now, "r", frozenset({"release", "ci"}), {}, priority=1)
    assert core.new_request(kit.now, "admin", NOBODY, {}, priority=1, privileged=True)
    with pytest.raises(PermissionDenied):
        core.update_request(kit.now, ci.id, priority=3)
    assert core.update_request(kit.now, ci.id, priority=3, privileged=True).priority == 3
    with pytest.raises(ValueError, match="between 1 and 16"):
        Policy(group_max_priority={"x": 0})


def test_waiting_requests_per_user_are_limited() -> None:
    kit = CoreKit(Policy(max_waiting_per_user=2))
    kit.add_worker("w1", idle=False)
    kit.drain()
    first = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.drain()
    with pytest.raises(ResourceExhausted, match="u already has 2 waiting requests"):
        kit.core.new_request(kit.now, "u", NOBODY, {})
    assert not kit.drain().durable
    assert kit.core.new_request(kit.now, "other", NOBODY, {})
    kit.core.close_request(kit.now, first.id)
    assert kit.core.new_request(kit.now, "u", NOBODY, {})


def test_bytes_of_caps_of_waiting_requests_per_user_are_limited() -> None:
    kit = CoreKit(Policy(max_waiting_caps_bytes_per_user=1000))
    kit.add_worker("w1", idle=False)
    kit.drain()
    long = {"serial": "é" * 150}  # 6 + 300 bytes: the limit counts UTF-8, not characters
    first = kit.core.new_request(kit.now, "u", NOBODY, long, accept_unsatisfiable=True)
    kit.core.new_request(kit.now, "u", NOBODY, long, accept_unsatisfiable=True)
    other = {"serial": "x" * 250, "lot": "y" * 47}
    kit.core.new_request(kit.now, "u", NOBODY, other, accept_unsatisfiable=True)
    kit.drain()
    with pytest.raises(
        ResourceExhausted,
        match=r"carry 918 bytes of caps and this one 306, over the limit of 1,000 .*"
        r"max_waiting_caps_bytes_per_user.* fewer or shorter caps",
    ):
        kit.core.new_request(kit.now, "u", NOBODY, long, accept_unsatisfiable=True)
    assert not kit.drain().durable and kit.core.waiting_count == 3
    assert kit.core.new_request(kit.now, "u", NOBODY, {"k": "v"}, accept_unsatisfiable=True)
    assert kit.core.new_request(kit.now, "other", NOBODY, long, accept_unsatisfiable=True)
    # A restored core counts what its owners' waiting requests carry, as before.
    snapshot = Snapshot(list(kit.core.live_requests()), kit.core.workers(), 99)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    with pytest.raises(ResourceExhausted, match="carry 920 bytes"):
        restored.new_request(kit.now, "u", NOBODY, long, accept_unsatisfiable=True)
    # Bytes of requests that leave the queue are free again.
    kit.core.close_request(kit.now, first.id)
    assert kit.core.new_request(kit.now, "u", NOBODY, long, accept_unsatisfiable=True)
    with pytest.raises(ValueError, match="positive"):
        Policy(max_waiting_caps_bytes_per_user=0)


def test_the_core_keeps_little_beyond_the_values_of_unique_caps() -> None:
    """A waiting request with 32 long values of its own costs those values and little more:
    keys are interned (shared by every request) and its bucket is indexed once, not per cap.
    (It cost 17 KiB more than its values before.)"""
    kit = CoreKit()
    keys = [f"feature-{i:02d}-".ljust(64, "k") for i in range(32)]
    count = 300
    beyond: list[int] = []
    gc.collect()
    tracemalloc.start()
    try:
        for n in range(count):
            before = tracemalloc.get_traced_memory()[0]
            # Fresh strings for every request, as parsing its message makes them.
            caps = {"".join(list(k)): f"{n:04d}{i:02d}".ljust(255, "v") for i, k in enumerate(keys)}
            values = sum(sys.getsizeof(v) for v in caps.values())
            kit.core.new_request(kit.now, "u", NOBODY, caps, accept_unsatisfiable=True)
            kit.drain()
            del caps
            beyond.append(tracemalloc.get_traced_memory()[0] - before - values)
    finally:
        tracemalloc.stop()
    assert kit.core.waiting_count == count
    # The median: a request that happens to resize a shared table (the interpreter's table
    # of interned strings holds every name of the process) pays for everyone's entries.
    typical = statistics.median(beyond)
    assert typical < 8 * 1024, f"{typical:.0f} bytes per request beyond its values"


def test_no_wait_runs_at_once_or_is_busy_and_changes_nothing(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"})
    kit.drain()
    first = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, no_wait=True)
    assert first.state is RequestState.IN_PROGRESS
    kit.drain()
    with pytest.raises(Busy, match="board=rpi4"):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, no_wait=True)
    assert not kit.drain().durable
    assert kit.core.waiting_count == 0
    with pytest.raises(NoCapableWorker):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi5"}, no_wait=True)
    with pytest.raises(InvalidArgument, match="valid_after"):
        kit.core.new_request(kit.now, "u", NOBODY, {}, no_wait=True, valid_after=kit.now + 60)
    assert kit.core.new_request(kit.now, "u", NOBODY, {}).id == first.id + 1


def test_queue_position_follows_priority_then_age(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"}, idle=False)
    a = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=8)
    b = kit.core.new_request(kit.now, "u", NOBODY, {}, priority=8)
    c = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=2)
    later = kit.core.new_request(kit.now, "u", NOBODY, {}, priority=1, valid_after=kit.now + 600)
    positions = [kit.core.queue_position(r.id) for r in (a, b, c, later)]
    assert positions == [2, 3, 1, 0]
    kit.core.update_request(kit.now, later.id, priority=16)
    assert [kit.core.queue_position(r.id) for r in (a, b, c, later)] == [1, 2, 0, 3]
    kit.core.close_request(kit.now, c.id)
    assert kit.core.queue_position(a.id) == 0
    assert kit.core.queue_position(c.id) is None
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    assert kit.core.queue_position(a.id) is None  # running now
    assert kit.core.queue_position(b.id) == 0


def test_worker_in_maintenance_still_makes_request_satisfiable(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"}, idle=False)
    r = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    assert r.state is RequestState.WAITING


# ------------------------------------------------------------------ update


def test_update_priority_takes_effect_in_next_match(kit: CoreKit) -> None:
    kit.add_worker("w1")
    running = kit.core.new_request(kit.now, "u", NOBODY, {})
    a = kit.core.new_request(kit.now, "u", NOBODY, {}, priority=5)
    b = kit.core.new_request(kit.now, "u", NOBODY, {}, priority=5)
    kit.core.update_request(kit.now, b.id, priority=4)
    kit.core.close_request(kit.now, running.id)
    kit.answer_calls()
    assert kit.core.request(b.id).state is RequestState.IN_PROGRESS
    assert kit.core.request(a.id).state is RequestState.WAITING


def test_update_valid_after_to_now_matches_at_once(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {}, valid_after=kit.now + 100)
    updated = kit.core.update_request(kit.now, r.id, valid_after=kit.now)
    assert updated.state is RequestState.IN_PROGRESS


def test_update_valid_after_later_unreadies(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.update_request(kit.now, r.id, valid_after=kit.now + 100)
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    assert kit.core.request(r.id).state is RequestState.WAITING
    kit.advance(100)
    assert kit.core.request(r.id).state is RequestState.IN_PROGRESS


def test_update_deadline_moves_timeout(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    r = kit.core.new_request(kit.now, "u", NOBODY, {}, deadline=kit.now + 10)
    kit.core.update_request(kit.now, r.id, deadline=kit.now + 100)
    kit.advance(50)
    assert kit.core.request(r.id).state is RequestState.WAITING
    kit.advance(50)
    assert state_of(kit, r.id) is RequestState.TIMEOUT


def test_update_refused_unless_waiting_or_valid(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    with pytest.raises(WrongRequestState, match="IN_PROGRESS"):
        kit.core.update_request(kit.now, r.id, priority=3)
    w = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.drain()
    for kwargs in (
        {"priority": 0},
        {"priority": 20},
        {"deadline": kit.now - 5},
        {"valid_after": kit.now + 10**9},
    ):
        with pytest.raises(InvalidArgument):
            kit.core.update_request(kit.now, w.id, **kwargs)  # type: ignore[arg-type]
    assert not kit.drain().durable
    with pytest.raises(RequestNotFound):
        kit.core.update_request(kit.now, 999, priority=3)


# ------------------------------------------------------------------- jobs


def test_close_waiting_cancels_and_close_running_is_done(kit: CoreKit) -> None:
    kit.add_worker("w1")
    run = kit.core.new_request(kit.now, "u", NOBODY, {})
    wait = kit.core.new_request(kit.now, "u", NOBODY, {})
    assert kit.core.close_request(kit.now, wait.id).state is RequestState.CANCELLED
    done = kit.core.close_request(kit.now, run.id)
    assert done.state is RequestState.DONE
    assert done.job is not None and done.job.access is None
    assert worker_state(kit, "w1") is WorkerState.PREPARE
    with pytest.raises(RequestNotFound):
        kit.core.close_request(kit.now, run.id)


def test_a_finished_request_is_not_kept_by_its_timers(kit: CoreKit) -> None:
    """Its deadline, valid_after and job timeout stay in the timer heap until due (or a
    compaction): they must not keep the request, its job and caps alive meanwhile, for
    the garbage collector to walk at every full collection."""
    kit.add_worker("w1")
    run = kit.core.new_request(kit.now, "u", NOBODY, {}, deadline=kit.now + 1000)
    wait = kit.core.new_request(
        kit.now, "u", NOBODY, {}, deadline=kit.now + 1000, valid_after=kit.now + 10
    )
    finished = [kit.core._requests[r.id] for r in (run, wait)]  # the core's own objects
    for r in (run, wait):
        kit.core.close_request(kit.now, r.id)
    kit.answer_calls()
    for request in finished:
        assert [type(o) for o in gc.get_referrers(request) if o is not finished] == []
    kit.advance(2000)  # the stale timers come due and change nothing
    assert state_of(kit, run.id) is RequestState.DONE
    assert state_of(kit, wait.id) is RequestState.CANCELLED


def test_a_request_timer_is_left_out_of_garbage_collections() -> None:
    """A request's timer is numbers only (its kind too), which a collection stops tracking:
    thousands of stale ones cost a full collection nothing."""
    timers = TimerQueue()
    timers.push(T0 + 10, TimerKind.DEADLINE, 7)
    timers.push_all([(T0 + 20, TimerKind.VALID_AFTER, 8)])
    gc.collect()
    assert len(timers) == 2
    assert not any(gc.is_tracked(entry) for entry in timers._heap)


def test_job_timeout_ends_job_and_reprepares_worker(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    first_key = r.job.access if r.job else None
    kit.advance(kit.core.policy.job_timeout)
    assert state_of(kit, r.id) is RequestState.DONE
    assert worker_state(kit, "w1") is WorkerState.PREPARE
    kit.answer_calls()
    assert worker_state(kit, "w1") is WorkerState.IDLE
    r2 = kit.core.new_request(kit.now, "u", NOBODY, {})
    assert r2.job is not None and r2.job.access is not None
    assert r2.job.access != first_key
    assert kit.core.worker("w1").jobs_done == 1


def test_prolong_extends_by_step_up_to_limits() -> None:
    kit = CoreKit(Policy(job_timeout=100, prolong_step=100, max_prolongs=10, max_job_duration=250))
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.advance(50)
    job = kit.core.prolong_access(kit.now, r.id)
    assert (job.timeout_at, job.prolong_count) == (T0 + 150, 1)
    kit.advance(90)
    job = kit.core.prolong_access(kit.now, r.id)
    assert job.timeout_at == T0 + 240
    kit.advance(20)
    job = kit.core.prolong_access(kit.now, r.id)
    assert job.timeout_at == T0 + 250  # now + step = 260, capped by max_job_duration
    kit.advance(5)
    with pytest.raises(ProlongLimitReached, match="limit of 250 s"):
        kit.core.prolong_access(kit.now, r.id)
    kit.advance(80)  # now T0 + 245
    assert kit.core.request(r.id).state is RequestState.IN_PROGRESS
    kit.advance(5)
    assert state_of(kit, r.id) is RequestState.DONE


def test_prolong_count_limit() -> None:
    kit = CoreKit(Policy(job_timeout=100, prolong_step=100, max_prolongs=2))
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    for _ in range(2):
        kit.advance(10)
        kit.core.prolong_access(kit.now, r.id)
    kit.advance(10)
    with pytest.raises(ProlongLimitReached, match="2 times"):
        kit.core.prolong_access(kit.now, r.id)


def test_prolong_with_more_time_left_than_a_step_changes_nothing() -> None:
    kit = CoreKit(Policy(job_timeout=1000, prolong_step=100))
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    job = kit.core.prolong_access(kit.now, r.id)
    assert (job.timeout_at, job.prolong_count) == (T0 + 1000, 0)


def test_a_request_may_shorten_its_job_timeout_and_prolong_step() -> None:
    kit = CoreKit(Policy(job_timeout=3600, prolong_step=1800, min_job_timeout=10))
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {}, job_timeout=60)
    assert r.job_timeout == 60
    assert r.job is not None and r.job.timeout_at == T0 + 60
    kit.advance(40)
    job = kit.core.prolong_access(kit.now, r.id)
    assert job.timeout_at == T0 + 100  # the request's step, not the policy's 1800 s
    # Nobody prolongs any more (the client died): the board comes free one step later.
    kit.advance(60)
    assert state_of(kit, r.id) is RequestState.DONE
    assert worker_state(kit, "w1") is WorkerState.PREPARE


def test_a_longer_job_timeout_than_the_policys_is_shortened_to_it() -> None:
    kit = CoreKit(Policy(job_timeout=100, prolong_step=50))
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {}, job_timeout=10_000)
    assert r.job is not None and r.job.timeout_at == T0 + 100
    kit.advance(90)
    assert kit.core.prolong_access(kit.now, r.id).timeout_at == T0 + 140


@pytest.mark.parametrize("asked", [5.0, -1.0, float("nan")])
def test_job_timeout_below_the_minimum_is_refused(kit: CoreKit, asked: float) -> None:
    kit.add_worker("w1")
    with pytest.raises(InvalidArgument, match="job_timeout must be at least 10 s"):
        kit.core.new_request(kit.now, "u", NOBODY, {}, job_timeout=asked)
    assert kit.drain().requests == []


def test_prolong_refused_for_waiting_request(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    with pytest.raises(WrongRequestState, match="WAITING"):
        kit.core.prolong_access(kit.now, r.id)


# ----------------------------------------------------------------- workers


def test_register_new_worker_in_maintenance(kit: CoreKit) -> None:
    view = kit.core.register(kit.now, caps_of("w1", board="x"), "h:1", "h:22")
    assert view.state is WorkerState.MAINTENANCE
    history = kit.drain().history
    assert [(h.from_state, h.to_state) for h in history] == [(None, WorkerState.MAINTENANCE)]


@pytest.mark.parametrize(
    ("caps", "dryad", "ssh", "message"),
    [
        ({"board": "x"}, "h:1", "h:22", "UUID"),
        ({"UUID": "has space"}, "h:1", "h:22", "UUID"),
        ({"UUID": "w"}, "0.0.0.0:1", "h:22", "wildcard"),
        ({"UUID": "w"}, "h:1", "[::]:22", "wildcard"),
        ({"UUID": "w"}, "h", "h:22", "host:port"),
        ({"UUID": "w"}, "h:1", "h:99999", "the port must be 1-65535"),
    ],
)
def test_register_refuses_bad_fields(
    kit: CoreKit, caps: dict[str, str], dryad: str, ssh: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        kit.core.register(kit.now, caps, dryad, ssh)
    assert not kit.drain().durable


def test_set_idle_prepares_then_idles(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    assert worker_state(kit, "w1") is WorkerState.PREPARE
    calls = kit.drain().calls
    # One Prepare, which has the dryad run the board's health checks first.
    assert [(c.kind, c.worker_uuid, c.address, c.healthcheck_first) for c in calls] == [
        (DryadCallKind.PREPARE, "w1", "w1.lab:7175", True)
    ]
    kit.answer_calls()
    assert worker_state(kit, "w1") is WorkerState.IDLE
    assert list(kit.drain().calls) == []


def test_a_job_end_makes_one_dryad_call(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.drain()
    kit.core.close_request(kit.now, r.id)
    calls = kit.drain().calls
    assert [(c.kind, c.healthcheck_first) for c in calls] == [(DryadCallKind.PREPARE, True)]
    kit.answer_calls()
    w = kit.core.worker("w1")
    assert (w.state, w.prepared is not None) == (WorkerState.IDLE, True)
    assert list(kit.drain().calls) == []


def test_failed_dryad_call_fails_worker_with_reason(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls(fail=DryadCallKind.PREPARE)
    w = kit.core.worker("w1")
    assert (w.state, w.reason, w.failures) == (
        WorkerState.FAILED,
        "Prepare failed: connection refused",
        1,
    )


def test_failed_checks_in_prepares_answer_keep_the_worker_out_of_service(kit: CoreKit) -> None:
    """A board whose checks fail at the Prepare after a job fails as a failed Healthcheck
    failed it, with the same reason, in its history and its health record."""
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.close_request(kit.now, r.id)
    kit.drain()
    (call,) = kit.pending
    kit.pending.clear()
    kit.core.dryad_call_succeeded(kit.now, call, FailedChecks(SSHD_DOWN))
    changes = kit.drain()
    w = kit.core.worker("w1")
    reason = f"Healthcheck failed: {SSHD_DOWN}"
    assert (w.state, w.reason, w.prepared) == (WorkerState.FAILED, reason, None)
    assert [(h.to_state, h.reason) for h in changes.history] == [(WorkerState.FAILED, reason)]
    assert [(f.reason, f.kind) for f in w.health.failures] == [(reason, FailureKind.DRYAD_CALL)]
    assert list(changes.calls) == []


def test_healthcheck_before_prepare_can_be_turned_off() -> None:
    kit = CoreKit(Policy(healthcheck_before_prepare=False))
    kit.add_worker("w1", idle=False)
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    assert [(c.kind, c.healthcheck_first) for c in kit.drain().calls] == [
        (DryadCallKind.PREPARE, False)
    ]


def test_idle_worker_is_healthchecked_periodically() -> None:
    kit = CoreKit(Policy(healthcheck_interval=100))
    kit.add_worker("w1")
    kit.add_worker("w2")
    kit.advance(99)
    assert kit.pending == []
    kit.core.tick(kit.now + 1)
    kit.drain()
    assert sorted((c.kind, c.worker_uuid) for c in kit.pending) == [
        (DryadCallKind.HEALTHCHECK, "w1"),
        (DryadCallKind.HEALTHCHECK, "w2"),
    ]
    w1_check = next(c for c in kit.pending if c.worker_uuid == "w1")
    w2_check = next(c for c in kit.pending if c.worker_uuid == "w2")
    kit.pending.clear()
    kit.core.dryad_call_succeeded(kit.now, w1_check)
    kit.core.dryad_call_failed(kit.now, w2_check, "disk: 1 MB free")
    assert worker_state(kit, "w1") is WorkerState.IDLE
    assert kit.core.worker("w2").reason == "Healthcheck failed: disk: 1 MB free"
    # A running worker is not checked; the next check comes an interval after it is idle.
    kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.advance(150)
    assert [c for c in kit.pending if c.kind is DryadCallKind.HEALTHCHECK] == []


def test_periodic_check_result_after_maintenance_is_ignored() -> None:
    kit = CoreKit(Policy(healthcheck_interval=10))
    kit.add_worker("w1")
    kit.advance(10)
    (check,) = kit.pending
    kit.pending.clear()
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.dryad_call_failed(kit.now, check, "late")
    assert worker_state(kit, "w1") is WorkerState.MAINTENANCE


def test_job_tunnel_opens_on_match_and_closes_when_the_job_ends(kit: CoreKit) -> None:
    from boruta_scheduler.core import CloseTunnel, OpenTunnel

    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    assert kit.drain().tunnels == [OpenTunnel(r.id, "w1.lab:22", 0)]
    kit.core.tunnel_opened(kit.now, r.id, 40022)
    view = kit.core.request(r.id)
    assert view.job is not None and view.job.tunnel_port == 40022
    kit.core.close_request(kit.now, r.id)
    assert kit.drain().tunnels == [CloseTunnel(r.id)]
    # A tunnel that opens after its job ended is closed again.
    kit.core.tunnel_opened(kit.now, r.id, 40023)
    assert kit.drain().tunnels == [CloseTunnel(r.id)]


def test_failed_tunnel_fails_the_job_and_reprepares_the_worker(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.tunnel_failed(kit.now, r.id, "address in use")
    assert state_of(kit, r.id) is RequestState.FAILED
    assert worker_state(kit, "w1") is WorkerState.PREPARE
    kit.answer_calls()
    assert worker_state(kit, "w1") is WorkerState.IDLE


def test_restore_reopens_tunnels_on_their_ports(kit: CoreKit) -> None:
    from boruta_scheduler.core import OpenTunnel

    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.tunnel_opened(kit.now, r.id, 40022)
    kit.drain()
    snapshot = Snapshot(list(kit.core.live_requests()), kit.core.workers(), 1)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    assert restored.drain().tunnels == [OpenTunnel(r.id, "w1.lab:22", 40022)]


def test_maintenance_of_running_worker_fails_its_request(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash")
    assert state_of(kit, r.id) is RequestState.FAILED
    assert worker_state(kit, "w1") is WorkerState.BUSY
    calls = [c for c in kit.pending]
    assert [(c.kind, c.message) for c in calls] == [(DryadCallKind.PUT_IN_MAINTENANCE, "reflash")]
    kit.answer_calls()
    assert worker_state(kit, "w1") is WorkerState.MAINTENANCE


def test_set_state_rules(kit: CoreKit) -> None:
    kit.add_worker("w1")
    kit.core.new_request(kit.now, "u", NOBODY, {})
    with pytest.raises(WrongWorkerState, match="RUNNING"):
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    with pytest.raises(InvalidArgument, match="only to IDLE or MAINTENANCE"):
        kit.core.set_state(kit.now, "w1", WorkerState.RUNNING)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    with pytest.raises(WrongWorkerState, match="entering MAINTENANCE"):
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    with pytest.raises(WorkerNotFound):
        kit.core.set_state(kit.now, "nope", WorkerState.IDLE)


def test_stale_dryad_result_is_ignored(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    prepare = kit.drain().calls[0]
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    kit.core.dryad_call_failed(kit.now, prepare, "too late")
    assert worker_state(kit, "w1") is WorkerState.BUSY


def test_heartbeat_loss_fails_worker_and_job(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.advance(60)
    assert worker_state(kit, "w1") is WorkerState.RUNNING
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    w = kit.core.worker("w1")
    assert w.state is WorkerState.FAILED
    assert w.reason.startswith("heartbeat lost")
    assert state_of(kit, r.id) is RequestState.FAILED


def test_live_job_users_follow_the_worker_through_its_life(kit: CoreKit) -> None:
    """What a heartbeat tells the dryad to keep: only a user some live job may still use."""
    kit.add_worker("w1", idle=False)
    assert kit.core.live_job_users("w1") == ()  # MAINTENANCE: nobody
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    assert kit.core.live_job_users("w1") is None  # PREPARE: a user may be in the making
    kit.answer_calls()
    assert kit.core.live_job_users("w1") == ("job1",)  # IDLE: the prepared one
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    assert kit.core.live_job_users("w1") == ("job1",)  # RUNNING: the job's
    kit.core.close_request(kit.now, r.id)
    assert kit.core.live_job_users("w1") is None  # PREPARE again
    kit.answer_calls()
    kit.core.new_request(kit.now, "u", NOBODY, {})
    assert kit.core.live_job_users("w1") == ("job2",)
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    assert worker_state(kit, "w1") is WorkerState.FAILED
    assert kit.core.live_job_users("w1") == ()  # the job FAILED: its user must go
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    assert kit.core.live_job_users("w1") is None  # BUSY: PutInMaintenance removes them
    with pytest.raises(WorkerNotFound):
        kit.core.live_job_users("ghost")


def test_set_fail_keeps_reason_and_counts(kit: CoreKit) -> None:
    kit.add_worker("w1")
    kit.core.set_fail(kit.now, "w1", "USB hub died")
    w = kit.core.worker("w1")
    assert (w.state, w.reason, w.failures) == (WorkerState.FAILED, "USB hub died", 1)
    history = [(h.to_state, h.reason) for c in [*kit.changes, kit.drain()] for h in c.history]
    assert history[-1] == (WorkerState.FAILED, "USB hub died")


def test_reregister_same_instance_keeps_state_and_groups(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "x"}, groups=frozenset({"g"}))
    r = kit.core.new_request(kit.now, "u", frozenset({"g"}), {})
    kit.core.register(
        kit.now, caps_of("w1", board="x"), "w1.lab:7175", "w1.lab:22", instance_id="i1"
    )
    w = kit.core.worker("w1")
    assert (w.state, w.groups, w.request_id) == (WorkerState.RUNNING, frozenset({"g"}), r.id)


def test_reregister_after_dryad_restart_fails_job_and_reprepares(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.register(kit.now, caps_of("w1"), "w1.lab:7175", "w1.lab:22", instance_id="i2")
    assert state_of(kit, r.id) is RequestState.FAILED
    assert worker_state(kit, "w1") is WorkerState.PREPARE
    kit.answer_calls()
    assert worker_state(kit, "w1") is WorkerState.IDLE


def test_deregister_only_out_of_service(kit: CoreKit) -> None:
    kit.add_worker("w1")
    with pytest.raises(WrongWorkerState, match="IDLE"):
        kit.core.deregister(kit.now, "w1")
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.deregister(kit.now, "w1")
    assert [w.uuid for w in kit.drain().removed_workers] == ["w1"]
    with pytest.raises(WorkerNotFound):
        kit.core.worker("w1")


def test_deregistering_last_capable_worker_invalidates_waiting_requests(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "x"}, idle=False)
    kit.add_worker("w2", {"board": "x", "cam": "y"}, idle=False)
    plain = kit.core.new_request(kit.now, "u", NOBODY, {"board": "x"})
    cam = kit.core.new_request(kit.now, "u", NOBODY, {"board": "x", "cam": "y"})
    kit.core.deregister(kit.now, "w2")
    assert state_of(kit, cam.id) is RequestState.INVALID
    assert kit.core.request(plain.id).state is RequestState.WAITING
    kit.core.deregister(kit.now, "w1")
    assert state_of(kit, plain.id) is RequestState.INVALID


def test_set_groups_can_invalidate_and_can_match(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "x"})
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    r = kit.core.new_request(kit.now, "u", frozenset({"a"}), {"board": "x"})
    kit.core.set_groups(kit.now, "w1", frozenset({"b"}))
    assert state_of(kit, r.id) is RequestState.INVALID
    kit.core.set_groups(kit.now, "w1", frozenset({"a"}))
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    r2 = kit.core.new_request(kit.now, "u", frozenset({"a"}), {"board": "x"})
    assert r2.state is RequestState.IN_PROGRESS


def test_restore_rebuilds_state_and_timers(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "x"})
    kit.add_worker("w2", {"board": "x"}, idle=False)
    run = kit.core.new_request(kit.now, "u", NOBODY, {"board": "x"})
    wait = kit.core.new_request(kit.now, "u", NOBODY, {"board": "x"}, deadline=kit.now + 500)
    kit.drain()
    snapshot = Snapshot(list(kit.core.live_requests()), kit.core.workers(), 2)
    restored = Core.restore(snapshot, kit.now + 10, kit.core.policy)
    assert restored.request(run.id) == kit.core.request(run.id)
    assert restored.request(wait.id) == kit.core.request(wait.id)
    assert restored.worker("w1") == kit.core.worker("w1")
    assert restored.new_request(kit.now + 10, "u", NOBODY, {}).id == 3
    restored.tick(kit.now + 501)
    with pytest.raises(RequestNotFound):
        restored.request(wait.id)
    # The job timer came back too (the worker heartbeat grace starts at restore).
    restored.tick(kit.now + kit.core.policy.job_timeout + 1)
    with pytest.raises(RequestNotFound):
        restored.request(run.id)


def test_the_core_knows_keys_of_live_and_recently_finished_requests(kit: CoreKit) -> None:
    asked = Idempotency("k", arguments_hash({}, 0, None, None, True, False, 0.0), kit.now)
    assert kit.core.keyed_request(kit.now, "ann", asked) is None
    made = kit.core.new_request(
        kit.now, "ann", NOBODY, {}, accept_unsatisfiable=True, idempotency=asked
    )
    assert kit.core.keyed_request(kit.now, "ann", asked) == made
    assert kit.core.keyed_request(kit.now, "bob", asked) is None  # keys are per owner
    other = Idempotency("k", arguments_hash({}, 3, None, None, True, False, 0.0), kit.now)
    with pytest.raises(IdempotencyKeyReused, match="used idempotency_key 'k' for request 1"):
        kit.core.keyed_request(kit.now, "ann", other)
    closed = kit.core.close_request(kit.now + 1, made.id)
    # Finished, it is remembered for a while: its creation may not be committed yet.
    assert kit.core.keyed_request(kit.now + 2, "ann", asked) == closed
    later = kit.now + 1 + FINISHED_KEPT + 1
    fresh = Idempotency("k", asked.arguments_hash, later)
    assert kit.core.keyed_request(later, "ann", fresh) is None  # the store holds it by then
    # A look-up too old for the core's memory to cover is answered "retry".
    with pytest.raises(Unavailable, match="retry"):
        kit.core.keyed_request(later, "ann", Idempotency("k2", "h", later - LOOKUP_FRESH - 1))
    with pytest.raises(InvalidArgument, match="printable"):
        check_key("a\nb")


def test_different_cap_sets_of_waiting_requests_per_user_are_limited() -> None:
    """What a freed worker walks grows with the number of distinct waiting cap sets; one
    user may not grow it past the limit. Requests in a set the user has already are not
    limited by it (other limits apply), and the set counts again once it empties."""
    kit = CoreKit(Policy(max_waiting_cap_sets_per_user=2))
    kit.add_worker("w1", {"os": "linux"}, idle=False)
    kit.drain()
    first = kit.core.new_request(
        kit.now, "u", NOBODY, {"os": "linux", "n": "1"}, accept_unsatisfiable=True
    )
    kit.core.new_request(
        kit.now, "u", NOBODY, {"os": "linux|android", "n": "2"}, accept_unsatisfiable=True
    )
    kit.drain()
    with pytest.raises(
        ResourceExhausted, match=r"2 different sets of caps.*max_waiting_cap_sets_per_user"
    ):
        kit.core.new_request(
            kit.now, "u", NOBODY, {"os": "linux", "n": "3"}, accept_unsatisfiable=True
        )
    with pytest.raises(ResourceExhausted, match="max_waiting_cap_sets_per_user"):
        kit.core.new_request(
            kit.now, "u", NOBODY, {}, profiles=[("a", {"os": "linux"}), ("b", {"os": "linux"})],
            accept_unsatisfiable=True,
        )  # fmt: skip
    assert not kit.drain().durable
    # The same sets again, and another user's, are welcome.
    kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux", "n": "1"}, accept_unsatisfiable=True)
    kit.core.new_request(
        kit.now, "other", NOBODY, {"os": "linux", "n": "3"}, accept_unsatisfiable=True
    )
    # One of both requests of the first set leaving keeps the set; both leaving frees it.
    kit.core.close_request(kit.now, first.id)
    with pytest.raises(ResourceExhausted):
        kit.core.new_request(
            kit.now, "u", NOBODY, {"os": "linux", "n": "3"}, accept_unsatisfiable=True
        )
    for view in list(kit.core.live_requests()):
        if view.owner == "u" and dict(view.caps).get("n") == "1":
            kit.core.close_request(kit.now, view.id)
    kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux", "n": "3"}, accept_unsatisfiable=True)


def test_a_limit_on_cap_sets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_waiting_cap_sets_per_user"):
        Policy(max_waiting_cap_sets_per_user=0)


def test_a_sealed_token_secret_is_cleared_by_its_timer() -> None:
    """A token issued with an idempotency key keeps its sealed secret SEAL_KEPT seconds:
    the core's next timer is then, and the tick clears it (a change to store), and a retry
    of the key is refused from then on; a restored core goes on with the same timer."""
    core = Core()
    token = TokenRecord(
        "ci",
        frozenset(),
        False,
        b"h",
        T0,
        T0 + 3600,
        "root",
        "",
        idempotency_key_hash=b"k",
        arguments_hash="a",
        sealed_secret=b"s",
    )
    issued = core.issue_token(token)
    core.drain()
    assert core.next_timer() == T0 + SEAL_KEPT
    restored = Core.restore(Snapshot([], [], 0, [issued]), T0)
    assert restored.next_timer() == T0 + SEAL_KEPT
    retry = dataclasses.replace(token, created_at=T0 + 1)
    assert core.issue_token(retry) == issued and not core.drain().tokens
    core.tick(T0 + SEAL_KEPT - 1)
    assert not core.drain().tokens
    core.tick(T0 + SEAL_KEPT)
    cleared = core.drain().tokens
    assert [(t.id, t.sealed_secret) for t in cleared] == [(issued.id, None)]
    assert core.next_timer() is None
    with pytest.raises(FailedPrecondition, match="revoke token 1"):
        core.issue_token(dataclasses.replace(token, created_at=T0 + SEAL_KEPT))
    with pytest.raises(IdempotencyKeyReused):
        core.issue_token(dataclasses.replace(token, arguments_hash="other"))


def short_token(user: str, issued: float, ttl: float) -> TokenRecord:
    secret_hash = b"h-" + user.encode()
    return TokenRecord(user, frozenset(), False, secret_hash, issued, issued + ttl, "root", "")


def test_only_tokens_stopped_longer_ago_than_the_retention_are_purged() -> None:
    """Expired or revoked longer ago than the retention: forgotten, in the batch's changes,
    earliest stopped first and at most limit at a time; working tokens and those stopped
    within the retention stay; ids go on after the newest was purged, also once restored."""
    day = 86400.0
    core = Core()
    expired_long_ago = core.issue_token(short_token("a", T0, 1 * day)).id  # 1, stops T0+1d
    working = core.issue_token(short_token("b", T0, 90 * day)).id  # 2
    revoked_long_ago = core.issue_token(short_token("c", T0, 90 * day)).id  # 3
    core.revoke_token(T0 + 2 * day, revoked_long_ago)
    expired_lately = core.issue_token(short_token("d", T0, 9 * day)).id  # 4, stops T0+9d
    revoked_lately = core.issue_token(short_token("e", T0, 90 * day)).id  # 5
    core.revoke_token(T0 + 8 * day, revoked_lately)
    # Revoked after it had expired: it stopped working at its expiry.
    newest = core.issue_token(short_token("f", T0 + 1, 3 * day)).id  # 6, stops T0+3d+1
    core.revoke_token(T0 + 8 * day, newest)
    core.drain()
    retention = 5 * day
    assert core.next_token_purge(retention) == T0 + 6 * day
    now = T0 + 10 * day
    assert core.purge_tokens(now, retention, limit=2) == [expired_long_ago, revoked_long_ago]
    changes = core.drain()
    assert changes.removed_tokens == (1, 3) and changes.tokens == [] and changes.durable
    assert core.next_token_purge(retention) == T0 + 8 * day + 1
    assert core.purge_tokens(now, retention, limit=2) == [newest]
    assert core.purge_tokens(now, retention, limit=2) == []
    assert [t.id for t in core.tokens()] == [working, expired_lately, revoked_lately]
    # Stopped exactly the retention ago: not yet longer ago.
    assert core.next_token_purge(retention) == T0 + 13 * day
    assert core.purge_tokens(T0 + 13 * day, retention, limit=10) == []
    assert core.purge_tokens(T0 + 13 * day + 1, retention, limit=10) == [revoked_lately]
    assert core.purge_tokens(T0 + 14 * day + 1, retention, limit=10) == [expired_lately]
    assert core.next_token_purge(retention) == T0 + 95 * day
    with pytest.raises(InvalidArgument, match=r"no token 6: .* token retention .*token_retention"):
        core.revoke_token(now, newest)
    with pytest.raises(InvalidArgument, match=r"^no token 7; see ListTokens$"):
        core.revoke_token(now, 7)
    assert core.issue_token(short_token("g", now, day)).id == 7
    core.drain()
    # Restored with the last id but without the newest token (purged), ids go on.
    core.purge_tokens(now + 7 * day, 0.0, limit=10)
    restored = Core.restore(Snapshot([], [], 0, core.tokens(), last_token_id=7), now)
    assert [t.id for t in restored.tokens()] == [working]
    assert restored.issue_token(short_token("h", now, day)).id == 8
    empty = Core.restore(Snapshot([], [], 0, [], last_token_id=8), now)
    assert empty.issue_token(short_token("i", now, day)).id == 9


def test_a_token_purged_while_its_secret_is_sealed_leaves_no_timer_behind() -> None:
    core = Core()
    token = dataclasses.replace(
        short_token("ci", T0, 1.0),
        idempotency_key_hash=b"k",
        arguments_hash="a",
        sealed_secret=b"s",
    )
    issued = core.issue_token(token)
    assert core.purge_tokens(T0 + 3, 1.0, limit=10) == [issued.id]
    assert core.next_timer() is None
    core.tick(T0 + SEAL_KEPT)
    assert core.drain().removed_tokens == (issued.id,)
    # The key is forgotten with its token: a call with it issues a new one.
    assert core.issue_token(dataclasses.replace(token, created_at=T0 + 4)).id == issued.id + 1
