"""Board health as pure functions of a worker's failure record: the record kept, the failure
rate shown, and when a board that fails too often is quarantined.

The scheduler keeps each worker's latest failures with their times, reasons and kinds
(types.Health, stored with the worker). A worker that fails quarantine_failures times within
quarantine_window seconds (heartbeat losses aside) is taken out of service (MAINTENANCE,
reason "quarantined: ...") until an admin puts it back; a worker FAILED only because its
heartbeats stopped while it was in service comes back by itself once its dryad is heard
again and a healthcheck passes.
"""

from __future__ import annotations

from dataclasses import replace

from boruta_scheduler.types import Failure, FailureKind, Health

# Failures kept per worker: enough for any quarantine window an admin would set and for the
# pages, bounded so that a flapping board's record stays small.
KEPT = 64
# The window over which the failure rate is counted.
RATE_WINDOW = 7 * 86400.0
DAY = 86400.0
QUARANTINED = "quarantined: "


def record(health: Health, failure: Failure, *, in_service: bool) -> Health:
    """The record after failure; a heartbeat loss of a worker that was in service makes it
    recoverable, any other failure makes it not. A quarantined worker stays quarantined
    (only an admin ends that), whatever else befalls it."""
    failures = (*health.failures, failure)[-KEPT:]
    recoverable = in_service and failure.kind is FailureKind.HEARTBEAT
    return replace(health, failures=failures, recoverable=recoverable)


def settled(health: Health, now: float) -> Health:
    """The record once the worker left FAILED or MAINTENANCE by any way (an admin's
    decision, or a recovery): neither quarantined nor recoverable any more. A worker taken
    out of quarantine starts afresh: the failures an admin has looked at count towards no
    other quarantine."""
    if health.quarantined:
        return replace(health, quarantined=False, recoverable=False, counted_from=now)
    if health.recoverable:
        return replace(health, recoverable=False)
    return health


def failures_since(health: Health, since: float, *, heartbeats: bool = True) -> int:
    """How many kept failures happened at or after since (heartbeat losses only if
    heartbeats)."""
    count = 0
    for failure in reversed(health.failures):
        if failure.time < since:
            break
        count += heartbeats or failure.kind is not FailureKind.HEARTBEAT
    return count


def failures_per_day(health: Health, now: float, registered_at: float) -> float:
    """Failures per day over the last week, or over the worker's life if it is younger
    (counted as at least one day, so that a new board's first failure is not a storm); over
    the time its kept failures span if it failed more often than the record keeps."""
    since = max(now - RATE_WINDOW, registered_at)
    kept = health.failures
    if len(kept) >= KEPT and kept[0].time > since and now > kept[0].time:
        # Failures before the oldest kept one fell out of the record: count over what is.
        return len(kept) / ((now - kept[0].time) / DAY)
    days = max((now - since) / DAY, 1.0)
    return failures_since(health, since) / days


def should_quarantine(health: Health, now: float, count: int, window: float) -> bool:
    """Whether the latest failures call for quarantine: count of them (0: never) within
    window seconds up to now, since the worker last left quarantine. Heartbeat losses do
    not count: a blip of the network (or of the scheduler) loses every board's at once,
    and a board FAILED by one comes back by itself (docs/admin-guide.md)."""
    if count <= 0 or window <= 0:
        return False
    since = max(now - window, health.counted_from)
    return failures_since(health, since, heartbeats=False) >= count


def quarantine_reason(failure: Failure, count: int, window: float) -> str:
    """The MAINTENANCE reason of a quarantined worker: what failed last, and why it is out."""
    return f"{QUARANTINED}{failure.reason} ({count} failures within {window:g} s)"


def quarantined(health: Health) -> Health:
    """The record of a worker just quarantined (which no heartbeat brings back)."""
    return replace(health, quarantined=True, recoverable=False)
