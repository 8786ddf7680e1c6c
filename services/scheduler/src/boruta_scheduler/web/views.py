"""What the dashboard's pages show, worked out from the service's views and the core's
pending reasons: pure functions of their arguments (callers pass now), so they are tested
without a server."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from boruta_scheduler.core import health
from boruta_scheduler.types import (
    AuditEvent,
    Failure,
    FailureKind,
    PendingCode,
    PendingReason,
    RequestState,
    RequestView,
    WorkerView,
)

# The window over which a board's failure rate is counted (the API's, core/health.py).
FAILURE_WINDOW_S = health.RATE_WINDOW
# Failures listed per board.
FAILURES_SHOWN = 5


def when(t: float) -> str:
    """A time as the pages print it: UTC, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC" if t else ""


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One live request on the queue page."""

    view: RequestView
    reason: PendingReason | None
    why: str


def pending_text(view: RequestView, reason: PendingReason | None) -> str:
    """Why a waiting request waits, as the pages print it: the scheduler's reason, with the
    times it gives."""
    if view.state is not RequestState.WAITING or reason is None:
        return ""
    text = reason.message
    if reason.code is PendingCode.NOT_VALID_YET:
        text += f" (until {when(view.valid_after)})"
    if reason.expected_start:
        text += f"; expected to start by {when(reason.expected_start)} unless jobs are prolonged"
    if reason.latest_start:
        text += f", by {when(reason.latest_start)} at the latest"
    return text


def queue_rows(live: Iterable[tuple[RequestView, PendingReason | None]]) -> list[QueueRow]:
    """The rows of the queue page, in the order given (the service's: running requests
    first, then waiting ones in serving order)."""
    return [QueueRow(view, reason, pending_text(view, reason)) for view, reason in live]


@dataclass(frozen=True, slots=True)
class BoardRow:
    """One board on the boards page."""

    view: WorkerView
    # The latest failures, newest first, with their kinds as the page words them.
    failures: list[tuple[Failure, str]]
    failures_in_window: int
    # Failures per day over the window (or over the board's life, if shorter).
    failures_per_day: float


FAILURE_KIND_WORDS = {
    FailureKind.HEARTBEAT: "heartbeat lost",
    FailureKind.DRYAD_CALL: "dryad call failed",
    FailureKind.REPORTED: "reported by its dryad",
    FailureKind.OTHER: "other",
}


def board_row(view: WorkerView, now: float) -> BoardRow:
    """A board with its latest failures and failure rate, from the record the scheduler
    keeps of it (the API's recent_failures and failures_per_day)."""
    record = view.health
    since = max(now - FAILURE_WINDOW_S, view.registered_at)
    latest = list(reversed(record.failures[-FAILURES_SHOWN:]))
    return BoardRow(
        view,
        [(failure, FAILURE_KIND_WORDS[failure.kind]) for failure in latest],
        health.failures_since(record, since),
        health.failures_per_day(record, now, view.registered_at),
    )


@dataclass(frozen=True, slots=True)
class Moment:
    """One line of a request's timeline."""

    time: float
    what: str


def timeline(view: RequestView, audit: Iterable[AuditEvent]) -> list[Moment]:
    """A request's life from its record and (for admins) the audit events that name it."""
    moments = [Moment(view.created_at, f"created with priority {view.priority}")]
    if view.valid_after > view.created_at:
        moments.append(Moment(view.valid_after, "valid from"))
    for job in view.all_jobs:  # one per board of a multi-board request
        moments.append(Moment(job.started_at, f"started on board {job.worker_uuid}"))
    events = list(audit)
    if view.job is not None and view.job.prolong_count and not events:
        # Without the audit log (admins only) the times of the prolongs are not known.
        count = view.job.prolong_count
        moments.append(Moment(view.updated_at, f"last change; prolonged {count} times in all"))
    for event in events:
        moments.append(Moment(event.time, f"{event.action} by {event.actor}: {event.detail}"))
    if view.state.is_terminal:
        reason = f" ({view.reason})" if view.reason else ""
        moments.append(Moment(view.updated_at, f"ended {view.state.name}{reason}"))
    elif view.state is RequestState.WAITING:
        moments.append(Moment(view.deadline, "deadline: it times out if still waiting"))
    elif view.job is not None:
        moments.append(Moment(view.job.timeout_at, "the job ends unless prolonged"))
    return sorted(moments, key=lambda m: m.time)
