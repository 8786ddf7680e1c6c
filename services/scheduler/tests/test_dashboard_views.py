"""What the dashboard's pages work out from views: pending reasons, queue order, failure
rates, timelines and the utilisation chart (pure functions, no server)."""

from __future__ import annotations

from dataclasses import replace

from boruta_scheduler.types import (
    AuditEvent,
    Failure,
    FailureKind,
    Health,
    JobView,
    PendingCode,
    PendingReason,
    RequestState,
    RequestView,
    WorkerState,
    WorkerView,
)
from boruta_scheduler.web import views
from boruta_scheduler.web.utilisation import HEIGHT, OPEN_TO_ALL, WIDTH, chart_lines, sample_of

NOW = 1_800_000_000.0
DAY = 86400.0


def request(
    id: int, state: RequestState = RequestState.WAITING, valid_after: float = 0.0, **more: object
) -> RequestView:
    fields: dict[str, object] = dict(
        id=id,
        priority=5,
        owner="alice",
        owner_groups=frozenset(),
        caps={"board": "rpi4"},
        valid_after=valid_after or NOW - 60,
        deadline=NOW + DAY,
        state=state,
        reason="",
        created_at=NOW - 60,
        updated_at=NOW - 30,
        job=None,
    )
    fields.update(more)
    return RequestView(**fields)  # type: ignore[arg-type]


def worker(uuid: str, state: WorkerState, groups: frozenset[str] = frozenset()) -> WorkerView:
    return WorkerView(
        uuid=uuid,
        state=state,
        groups=groups,
        caps={"UUID": uuid},
        dryad_address="127.0.0.1:1",
        ssh_address="127.0.0.1:22",
        instance_id="i",
        dryad_version="",
        reason="",
        request_id=0,
        registered_at=NOW - 30 * DAY,
        last_seen=NOW,
        jobs_done=0,
        failures=0,
    )


def test_a_request_not_valid_yet_says_until_when() -> None:
    reason = PendingReason(PendingCode.NOT_VALID_YET, "not valid yet: it is matched from ...")
    why = views.pending_text(request(1, valid_after=NOW + 3600), reason)
    assert why.startswith("not valid yet: it is matched from ... (until ")
    assert views.when(NOW + 3600) in why


def test_the_scheduler_s_reason_is_shown_with_its_start_times() -> None:
    reason = PendingReason(
        PendingCode.BOARDS_BUSY,
        "first in line; every board it could use is taken (1 running a job)",
        expected_start=NOW + 60,
        latest_start=NOW + 600,
    )
    assert views.pending_text(request(1), reason) == (
        f"first in line; every board it could use is taken (1 running a job); expected to "
        f"start by {views.when(NOW + 60)} unless jobs are prolonged, by "
        f"{views.when(NOW + 600)} at the latest"
    )
    ahead = PendingReason(PendingCode.HIGHER_PRIORITY, "3 waiting requests ... go first")
    assert views.pending_text(request(1), ahead) == "3 waiting requests ... go first"
    assert views.pending_text(request(1, RequestState.IN_PROGRESS), None) == ""
    assert views.pending_text(request(1), None) == ""  # no longer waiting when asked


def test_the_queue_keeps_the_service_s_order() -> None:
    busy = PendingReason(PendingCode.BOARDS_BUSY, "first in line")
    live = [
        (request(2, RequestState.IN_PROGRESS), None),
        (request(4, priority=1), busy),
        (request(3), None),
    ]
    rows = views.queue_rows(live)
    assert [(row.view.id, row.why) for row in rows] == [(2, ""), (4, "first in line"), (3, "")]


def test_failure_rate_counts_failures_in_the_window_only() -> None:
    kept = Health(
        (
            Failure(NOW - 20 * DAY, "old", FailureKind.OTHER),
            Failure(NOW - 3 * DAY, "prepare", FailureKind.DRYAD_CALL),
            Failure(NOW - 1 * DAY, "lost", FailureKind.HEARTBEAT),
        )
    )
    row = views.board_row(replace(worker("w", WorkerState.IDLE), health=kept), NOW)
    assert row.failures_in_window == 2
    assert row.failures_per_day == 2 / 7
    assert [(f.reason, kind) for f, kind in row.failures] == [
        ("lost", "heartbeat lost"),
        ("prepare", "dryad call failed"),
        ("old", "other"),
    ]


def test_a_new_board_rate_is_over_at_least_a_day() -> None:
    kept = Health((Failure(NOW - 30, "x", FailureKind.REPORTED),))
    young = replace(worker("w", WorkerState.IDLE), registered_at=NOW - 60, health=kept)
    assert views.board_row(young, NOW).failures_per_day == 1.0


def test_the_timeline_runs_from_creation_to_the_end() -> None:
    job = JobView("w", NOW - 50, NOW + 100, NOW + 200, 2, "127.0.0.1:22")
    done = request(7, RequestState.DONE, job=job, reason="closed by its owner")
    prolonged = AuditEvent(NOW - 40, "alice", "user", "ProlongAccess", "request 7", "prolonged")
    moments = [m.what for m in views.timeline(done, [prolonged])]
    assert moments == [
        "created with priority 5",
        "started on board w",
        "ProlongAccess by alice: prolonged",
        "ended DONE (closed by its owner)",
    ]
    # Without the audit log only the count of prolongs is known.
    assert "last change; prolonged 2 times in all" in [m.what for m in views.timeline(done, [])]


def test_utilisation_counts_running_boards_per_group() -> None:
    sample = sample_of(
        [
            worker("a", WorkerState.RUNNING, frozenset({"lab"})),
            worker("b", WorkerState.IDLE, frozenset({"lab", "ci"})),
            worker("c", WorkerState.RUNNING),
        ],
        NOW,
    )
    assert sample.groups == {"ci": (0, 1), "lab": (1, 2), OPEN_TO_ALL: (1, 1)}


def test_the_chart_spans_the_samples() -> None:
    first = sample_of([worker("a", WorkerState.IDLE, frozenset({"lab"}))], NOW)
    second = sample_of([worker("a", WorkerState.RUNNING, frozenset({"lab"}))], NOW + 60)
    (line,) = chart_lines([first, second])
    assert line.points == f"0.0,{HEIGHT:.1f} {WIDTH:.1f},0.0"
    assert (line.busy, line.total) == (1, 1)
    (level,) = chart_lines([first])
    assert level.points == f"0.0,{HEIGHT:.1f} {WIDTH:.1f},{HEIGHT:.1f}"
    assert chart_lines([]) == []
