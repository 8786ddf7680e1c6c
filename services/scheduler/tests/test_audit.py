"""The audit log's bounds: refusals beyond a caller's rate are counted, not written one by
one, and no event carries unbounded text."""

from __future__ import annotations

import pytest
from boruta_scheduler.app.audit import MAX_DETAIL, clip
from boruta_scheduler.app.refusals import OTHER_CALLERS, SUMMARY_INTERVAL, RefusalLimiter

T0 = 1_700_000_000.0
ALICE = ("alice", "user")
BOB = ("bob", "user")


def test_refusals_beyond_the_rate_are_counted_per_caller_and_summed_up_once() -> None:
    limiter = RefusalLimiter(per_minute=10)
    admitted = [limiter.admit(ALICE, "SetState", T0) for _ in range(1000)]
    assert admitted.count(True) == 10 and admitted[:10] == [True] * 10
    # Another caller has a bucket of its own.
    assert limiter.admit(BOB, "SetState", T0)
    limiter.admit(ALICE, "Deregister", T0 + 1)
    # Nothing is due before the interval has passed since the first suppressed refusal.
    assert limiter.due(T0 + SUMMARY_INTERVAL - 1) == []
    (summary,) = limiter.due(T0 + SUMMARY_INTERVAL)
    assert summary.caller == ALICE and summary.count == 991
    assert summary.calls == {"SetState": 990, "Deregister": 1}
    assert limiter.due(T0 + 10 * SUMMARY_INTERVAL) == []


def test_the_bucket_refills_at_the_rate() -> None:
    limiter = RefusalLimiter(per_minute=60)
    assert sum(limiter.admit(ALICE, "X", T0) for _ in range(100)) == 60
    # One a second comes back, never more than the burst.
    assert sum(limiter.admit(ALICE, "X", T0 + 30) for _ in range(100)) == 30
    assert sum(limiter.admit(ALICE, "X", T0 + 3600) for _ in range(100)) == 60
    (summary,) = limiter.due(T0 + 3600)
    assert summary.count == 40 + 70 + 40


def test_rate_zero_writes_only_summaries_and_stop_flushes_everything() -> None:
    limiter = RefusalLimiter(per_minute=0)
    assert not any(limiter.admit(ALICE, "X", T0) for _ in range(5))
    assert limiter.pending
    (summary,) = limiter.due(T0 + 1, everything=True)
    assert summary.count == 5 and not limiter.pending
    with pytest.raises(ValueError):
        RefusalLimiter(per_minute=-1)


def test_many_callers_do_not_grow_the_limiter_for_ever() -> None:
    limiter = RefusalLimiter(per_minute=5)
    for n in range(100_000):
        limiter.admit((f"user{n}", "user"), "X", T0 + n)
    # Callers whose bucket filled up again were forgotten along the way.
    assert len(limiter) < 3000


def test_callers_past_the_bound_at_once_share_one_allowance() -> None:
    limiter = RefusalLimiter(per_minute=5, max_callers=100)
    admitted = [limiter.admit((f"user{n}", "user"), "X", T0) for n in range(100_000)]
    assert len(limiter) <= 101
    # The first 100 callers had a bucket each, then all others shared one of 5.
    assert admitted.count(True) == 100 + 5
    summaries = limiter.due(T0 + SUMMARY_INTERVAL)
    assert [s.caller for s in summaries] == [OTHER_CALLERS]
    assert summaries[0].count == 100_000 - 100 - 5


def test_clip_bounds_text_and_says_how_long_it_was() -> None:
    assert clip("short", 10) == "short"
    clipped = clip("x" * 50_000, MAX_DETAIL)
    assert len(clipped) == MAX_DETAIL and clipped.endswith("... (50,000 characters)")


def test_the_set_state_event_says_what_the_call_did() -> None:
    from boruta_scheduler.app.audit import worker_state_set
    from boruta_scheduler.types import WorkerState
    from core_kit import CoreKit

    kit = CoreKit()
    kit.add_worker("w1")
    # No job: after_job changes nothing, the board goes into maintenance at once.
    view = kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "reflash", after_job=True)
    assert view.state is WorkerState.BUSY and view.drain_reason == ""
    _, detail = worker_state_set("w1", WorkerState.MAINTENANCE, "reflash", True)(view)
    assert detail == "MAINTENANCE: reflash"
