"""Board health in the pure core: the failure record, quarantine after too many failures,
and the return of a board that failed only because its heartbeats stopped."""

from __future__ import annotations

import pytest
from boruta_scheduler.core import Core, DryadCallKind, Policy, Snapshot, health
from boruta_scheduler.core.scheduler import RECOVERING
from boruta_scheduler.types import Failure, FailureKind, Health, RequestState, WorkerState
from core_kit import T0, CoreKit, state_of
from hypothesis import given
from hypothesis import strategies as st

NOBODY = frozenset[str]()


@pytest.fixture
def kit() -> CoreKit:
    return CoreKit(Policy(quarantine_failures=3, quarantine_window=3600.0))


def fail(at: float, kind: FailureKind = FailureKind.REPORTED) -> Failure:
    return Failure(at, f"failure at {at:g}", kind)


# ----------------------------------------------------------------- pure functions


def test_record_keeps_the_latest_failures_oldest_first() -> None:
    record = Health()
    for n in range(health.KEPT + 5):
        record = health.record(record, fail(float(n)), in_service=True)
    assert len(record.failures) == health.KEPT
    assert [f.time for f in record.failures] == [float(n) for n in range(5, health.KEPT + 5)]


def test_only_a_heartbeat_loss_in_service_is_recoverable() -> None:
    lost = fail(1.0, FailureKind.HEARTBEAT)
    assert health.record(Health(), lost, in_service=True).recoverable
    assert not health.record(Health(), lost, in_service=False).recoverable
    for kind in (FailureKind.REPORTED, FailureKind.DRYAD_CALL, FailureKind.OTHER):
        assert not health.record(Health(), fail(1.0, kind), in_service=True).recoverable


def test_failure_rate_is_per_day_over_the_last_week() -> None:
    now = T0 + 30 * health.DAY
    record = Health(tuple(fail(now - days * health.DAY) for days in (10, 6, 3, 1)))
    # Three within the week, over seven days.
    assert health.failures_per_day(record, now, T0) == pytest.approx(3 / 7)
    # A board two days old: its two days.
    assert health.failures_per_day(record, now, now - 2 * health.DAY) == pytest.approx(1 / 2)
    # A board an hour old counts as a day old.
    assert health.failures_per_day(Health((fail(now),)), now, now - 3600) == 1.0
    assert health.failures_per_day(Health(), now, T0) == 0.0


def test_failure_rate_of_a_board_failing_faster_than_its_record_keeps() -> None:
    """A board that failed every 10 minutes for a week keeps only its latest 64 failures;
    its rate is worked out over the time they span, not understated over the week."""
    now = T0 + 30 * health.DAY
    record = Health(tuple(fail(now - n * 600.0) for n in reversed(range(7 * 144))))
    record = Health(record.failures[-health.KEPT :])
    assert health.failures_per_day(record, now, T0) == pytest.approx(144, rel=0.03)


times = st.lists(st.floats(0, 10_000, allow_nan=False), max_size=80).map(sorted)


@given(times, st.integers(0, 6), st.floats(0, 5_000, allow_nan=False))
def test_quarantine_counts_failures_within_the_window(
    at: list[float], count: int, window: float
) -> None:
    """Against a count of every failure kept: count failures in the window, 0 turns it off."""
    record = Health()
    for t in at:
        record = health.record(record, fail(t), in_service=True)
    now = at[-1] if at else 0.0
    kept = [f.time for f in record.failures]
    expected = count > 0 and window > 0 and sum(1 for t in kept if t >= now - window) >= count
    assert health.should_quarantine(record, now, count, window) == expected


# ---------------------------------------------------------------------- the core


def test_failures_are_kept_with_time_reason_and_kind(kit: CoreKit) -> None:
    kit.add_worker("w1")
    kit.core.set_fail(kit.now, "w1", "USB hub died")
    record = kit.core.worker("w1").health
    assert record.failures == (Failure(kit.now, "USB hub died", FailureKind.REPORTED),)
    assert not record.quarantined and not record.recoverable


def test_the_third_failure_within_the_window_quarantines(kit: CoreKit) -> None:
    kit.add_worker("w1")
    for n in range(2):
        kit.core.set_fail(kit.now, "w1", f"check {n} failed")
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
        kit.answer_calls()
        kit.advance(600)
    assert kit.core.worker("w1").state is WorkerState.IDLE
    kit.answer_calls()
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.core.set_fail(kit.now, "w1", "camera gone")
    w = kit.core.worker("w1")
    assert w.state is WorkerState.MAINTENANCE
    assert w.reason.startswith("quarantined: camera gone")
    assert w.health.quarantined and len(w.health.failures) == 3
    assert state_of(kit, r.id) is RequestState.FAILED
    history = [(h.from_state, h.to_state) for c in [*kit.changes, kit.drain()] for h in c.history]
    assert history[-2:] == [
        (WorkerState.RUNNING, WorkerState.FAILED),
        (WorkerState.FAILED, WorkerState.MAINTENANCE),
    ]
    # No dryad call: a quarantined board is left as it is for an admin to look at.
    assert not [c for c in kit.pending if c.worker_uuid == "w1"]
    # Its dryad's heartbeats do not bring it back; an admin does.
    kit.advance(120)
    assert kit.core.worker("w1").state is WorkerState.MAINTENANCE
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    w = kit.core.worker("w1")
    assert w.state is WorkerState.IDLE and not w.health.quarantined


def test_failures_spread_beyond_the_window_do_not_quarantine(kit: CoreKit) -> None:
    kit.add_worker("w1")
    for n in range(4):
        kit.core.set_fail(kit.now, "w1", f"check {n} failed")
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
        kit.answer_calls()
        kit.advance(1900)  # two failures in any hour at most
    assert kit.core.worker("w1").state is WorkerState.IDLE


def test_quarantine_can_be_turned_off() -> None:
    kit = CoreKit(Policy(quarantine_failures=0))
    kit.add_worker("w1")
    for _ in range(5):
        kit.core.set_fail(kit.now, "w1", "flaky")
        kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
        kit.answer_calls()
    assert kit.core.worker("w1").state is WorkerState.IDLE


def test_a_board_out_of_service_is_not_quarantined(kit: CoreKit) -> None:
    """Failures of a board an admin took out count in its record but quarantine nothing."""
    kit.add_worker("w1", idle=False)
    for _ in range(4):
        kit.core.set_fail(kit.now, "w1", "bench power off")
        kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
        kit.answer_calls()
    w = kit.core.worker("w1")
    assert w.state is WorkerState.MAINTENANCE and len(w.health.failures) == 4
    assert not w.health.quarantined


def test_heartbeat_loss_recovers_when_the_dryad_is_heard_again(kit: CoreKit) -> None:
    kit.add_worker("w1")
    r = kit.core.new_request(kit.now, "u", NOBODY, {})
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    w = kit.core.worker("w1")
    assert w.state is WorkerState.FAILED and w.health.recoverable
    assert state_of(kit, r.id) is RequestState.FAILED
    kit.silent.discard("w1")
    kit.core.heartbeat(kit.now, "w1")
    w = kit.core.worker("w1")
    assert (w.state, w.reason) == (WorkerState.PREPARE, RECOVERING)
    assert [(c.kind, c.healthcheck_first) for c in kit.drain().calls] == [
        (DryadCallKind.PREPARE, True)
    ]
    kit.answer_calls()
    w = kit.core.worker("w1")
    assert w.state is WorkerState.IDLE and not w.health.recoverable
    assert len(w.health.failures) == 1


def test_recovery_needs_a_passing_healthcheck(kit: CoreKit) -> None:
    kit.add_worker("w1")
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    kit.core.heartbeat(kit.now, "w1")
    kit.answer_calls(fail=DryadCallKind.HEALTHCHECK)
    w = kit.core.worker("w1")
    assert w.state is WorkerState.FAILED and w.reason.startswith("Healthcheck failed")
    # A failed healthcheck is no heartbeat loss: the next heartbeat leaves it FAILED.
    kit.core.heartbeat(kit.now, "w1")
    assert kit.core.worker("w1").state is WorkerState.FAILED


def test_recovery_even_without_healthchecks_before_prepare() -> None:
    kit = CoreKit(Policy(healthcheck_before_prepare=False))
    kit.add_worker("w1")
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    kit.drain()
    kit.core.register(kit.now, {"UUID": "w1"}, "w1.lab:7175", "w1.lab:22", instance_id="i2")
    assert [(c.kind, c.healthcheck_first) for c in kit.drain().calls] == [
        (DryadCallKind.PREPARE, True)
    ]
    kit.answer_calls()
    assert kit.core.worker("w1").state is WorkerState.IDLE


def test_a_board_in_maintenance_does_not_come_back_after_a_heartbeat_loss(kit: CoreKit) -> None:
    kit.add_worker("w1", idle=False)
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    assert kit.core.worker("w1").state is WorkerState.FAILED
    kit.core.heartbeat(kit.now, "w1")
    assert kit.core.worker("w1").state is WorkerState.FAILED


def test_an_admin_decision_ends_the_recovery(kit: CoreKit) -> None:
    kit.add_worker("w1")
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.heartbeat(kit.now, "w1")
    assert kit.core.worker("w1").state is WorkerState.MAINTENANCE


def test_health_survives_a_restart_and_recovery_follows_it(kit: CoreKit) -> None:
    kit.add_worker("w1")
    kit.add_worker("w2")
    kit.core.set_fail(kit.now, "w2", "sd card")
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    views = kit.core.workers()
    core = Core.restore(Snapshot([], views, 0), kit.now + 5, kit.core.policy)
    assert [w.health for w in core.workers()] == [w.health for w in views]
    core.heartbeat(kit.now + 6, "w1")
    core.heartbeat(kit.now + 6, "w2")
    assert core.worker("w1").state is WorkerState.PREPARE
    assert core.worker("w2").state is WorkerState.FAILED


def quarantine_by_hand(kit: CoreKit, uuid: str) -> None:
    """Fail the worker until it is quarantined, an admin putting it back after each."""
    while not kit.core.worker(uuid).health.quarantined:
        kit.core.set_fail(kit.now, uuid, "camera gone")
        if not kit.core.worker(uuid).health.quarantined:
            kit.core.set_state(kit.now, uuid, WorkerState.IDLE)
            kit.answer_calls()
        kit.advance(60)


def test_a_quarantined_board_whose_dryad_goes_silent_stays_quarantined(kit: CoreKit) -> None:
    """Its heartbeat loss is no admin's decision: the flag (and the alert) stays until one."""
    kit.add_worker("w1")
    quarantine_by_hand(kit, "w1")
    kit.silent.add("w1")
    kit.advance(kit.core.policy.heartbeat_timeout + 1)
    w = kit.core.worker("w1")
    assert w.state is WorkerState.FAILED
    assert w.health.quarantined and not w.health.recoverable
    # Heard again, it stays out, still quarantined.
    kit.silent.discard("w1")
    kit.advance(60)
    w = kit.core.worker("w1")
    assert w.state is WorkerState.FAILED and w.health.quarantined
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    w = kit.core.worker("w1")
    assert w.state is WorkerState.IDLE and not w.health.quarantined


def test_a_board_an_admin_takes_out_of_quarantine_starts_afresh(kit: CoreKit) -> None:
    """The failures that quarantined it were looked at: the next one alone, within the
    same window, must not quarantine it again at once."""
    kit.add_worker("w1")
    quarantine_by_hand(kit, "w1")
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE, "cable replaced")
    kit.answer_calls()
    kit.advance(60)
    kit.core.set_fail(kit.now, "w1", "camera gone")
    w = kit.core.worker("w1")
    assert w.state is WorkerState.FAILED and not w.health.quarantined
    # Enough failures after the admin's return quarantine it again.
    quarantine_by_hand(kit, "w1")
    assert kit.core.worker("w1").state is WorkerState.MAINTENANCE


def test_a_fresh_start_survives_a_restart(kit: CoreKit) -> None:
    kit.add_worker("w1")
    quarantine_by_hand(kit, "w1")
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE)
    kit.answer_calls()
    views = kit.core.workers()
    core = Core.restore(Snapshot([], views, 0), kit.now + 5, kit.core.policy)
    assert core.worker("w1").health == views[0].health
    core.set_fail(kit.now + 6, "w1", "camera gone")
    assert not core.worker("w1").health.quarantined


def test_heartbeat_losses_do_not_quarantine(kit: CoreKit) -> None:
    """A network blip loses every board's heartbeats at once, and the board comes back by
    itself: losses are kept and shown, but only a board's own failures quarantine it."""
    kit.add_worker("w1")
    for _ in range(kit.core.policy.quarantine_failures + 1):
        kit.silent.add("w1")
        kit.advance(kit.core.policy.heartbeat_timeout + 1)
        assert kit.core.worker("w1").state is WorkerState.FAILED
        kit.silent.discard("w1")
        kit.advance(1)
        kit.answer_calls()
        assert kit.core.worker("w1").state is WorkerState.IDLE
    kit.core.set_fail(kit.now, "w1", "camera gone")
    w = kit.core.worker("w1")
    assert w.state is WorkerState.FAILED and not w.health.quarantined
    kinds = [f.kind for f in w.health.failures]
    assert kinds == [FailureKind.HEARTBEAT] * 4 + [FailureKind.REPORTED]


def test_quarantine_failures_beyond_the_record_are_refused() -> None:
    """A count the record cannot hold would quietly never quarantine."""
    Policy(quarantine_failures=health.KEPT)
    with pytest.raises(ValueError, match=f"quarantine_failures must be at most {health.KEPT}"):
        Policy(quarantine_failures=health.KEPT + 1)


# ------------------------------------------- reports of the dryad's own checks


def test_a_local_checks_report_waits_for_the_prepare_running_the_same_checks(
    kit: CoreKit,
) -> None:
    """A report of the dryad's own checks that comes while a Prepare runs the same checks
    is older than their verdict (an admin fixed the board and put it back): dropped, and
    the Prepare decides. A report of anything else still fails the board."""
    kit.add_worker("w1", idle=False)
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE, "fixed")
    kit.drain()
    assert [c.healthcheck_first for c in kit.pending] == [True]
    assert not kit.core.set_fail(kit.now, "w1", "local checks failed", local_checks=True)
    assert kit.core.worker("w1").state is WorkerState.PREPARE
    assert not kit.core.worker("w1").health.failures
    kit.answer_calls()
    assert kit.core.worker("w1").state is WorkerState.IDLE
    # Once IDLE, a report counts.
    assert kit.core.set_fail(kit.now, "w1", "local checks failed", local_checks=True)
    assert kit.core.worker("w1").state is WorkerState.FAILED
    # A report that is not of those checks (a power monitor's) counts during a Prepare too.
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE, "fixed")
    assert kit.core.set_fail(kit.now, "w1", "board power lost")
    assert kit.core.worker("w1").state is WorkerState.FAILED


def test_a_local_checks_report_counts_during_a_prepare_without_checks() -> None:
    kit = CoreKit(Policy(healthcheck_before_prepare=False))
    kit.add_worker("w1", idle=False)
    kit.core.set_state(kit.now, "w1", WorkerState.IDLE, "fixed")
    kit.drain()
    assert [c.healthcheck_first for c in kit.pending] == [False]
    assert kit.core.set_fail(kit.now, "w1", "local checks failed", local_checks=True)
    assert kit.core.worker("w1").state is WorkerState.FAILED


def test_a_local_checks_report_of_a_board_out_of_service_is_dropped(kit: CoreKit) -> None:
    """The dryad checks only boards in service: a report of its checks about a board in
    MAINTENANCE (or going there) began before an admin took it out, and leaves it there."""
    kit.add_worker("w1")
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE, "new SD card")
    assert kit.core.worker("w1").state is WorkerState.BUSY
    assert not kit.core.set_fail(kit.now, "w1", "local checks failed", local_checks=True)
    kit.answer_calls()
    assert kit.core.worker("w1").state is WorkerState.MAINTENANCE
    assert not kit.core.set_fail(kit.now, "w1", "local checks failed", local_checks=True)
    w = kit.core.worker("w1")
    assert w.state is WorkerState.MAINTENANCE and not w.health.failures
    # Any other report still counts: the board is broken, whatever state it is in.
    assert kit.core.set_fail(kit.now, "w1", "board power lost")
    assert kit.core.worker("w1").state is WorkerState.FAILED
