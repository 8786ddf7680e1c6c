"""What the dashboard's pages work out from views: pending reasons, queue order, failure
rates, timelines and the utilisation chart (pure functions, no server)."""

from __future__ import annotations

from dataclasses import replace

from boruta_scheduler.types import (
    AuditEvent,
    HistoryEntry,
    JobView,
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
    why = views.pending_reason(request(1, valid_after=NOW + 3600), 0, NOW)
    assert why.startswith("not valid yet (until ")
    assert views.when(NOW + 3600) in why


def test_a_ready_request_waits_for_a_board_behind_those_ahead() -> None:
    assert views.pending_reason(request(1), 0, NOW) == "waiting for a board"
    assert "3 waiting requests go first" in views.pending_reason(request(1), 3, NOW)
    assert views.pending_reason(request(1, RequestState.IN_PROGRESS), None, NOW) == ""


def test_the_queue_shows_running_first_then_waiting_in_serving_order() -> None:
    live = [
        (request(4), 1),
        (request(2, RequestState.IN_PROGRESS), None),
        (request(3), 0),
        (request(1, RequestState.IN_PROGRESS), None),
    ]
    assert [row.view.id for row in views.queue_rows(live, NOW)] == [1, 2, 3, 4]


def test_failure_rate_counts_failures_in_the_window_only() -> None:
    history = [
        HistoryEntry("w", NOW - 1 * DAY, WorkerState.RUNNING, WorkerState.FAILED, "lost"),
        HistoryEntry("w", NOW - 2 * DAY, WorkerState.IDLE, WorkerState.RUNNING, ""),
        HistoryEntry("w", NOW - 3 * DAY, WorkerState.PREPARE, WorkerState.FAILED, "prepare"),
        HistoryEntry("w", NOW - 20 * DAY, WorkerState.IDLE, WorkerState.FAILED, "old"),
    ]
    row = views.board_row(worker("w", WorkerState.IDLE), history, NOW)
    assert row.failures_in_window == 2
    assert row.failures_per_day == 2 / 7
    assert [f.reason for f in row.failures] == ["lost", "prepare", "old"]


def test_a_new_board_rate_is_over_at_least_a_day() -> None:
    young = replace(worker("w", WorkerState.IDLE), registered_at=NOW - 60)
    history = [HistoryEntry("w", NOW - 30, WorkerState.IDLE, WorkerState.FAILED, "x")]
    assert views.board_row(young, history, NOW).failures_per_day == 1.0


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
