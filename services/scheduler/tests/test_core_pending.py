"""Pending reasons (docs/api.md, "Pending reasons"): why a waiting request waits, each
reason and their precedence, queue positions that count only competing requests (checked
against a brute-force count), and what working them out costs. Pure core."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from boruta_scheduler.core import Policy
from boruta_scheduler.core.pending import MAX_BOARDS_LISTED
from boruta_scheduler.core.queue import RequestQueue
from boruta_scheduler.types import (
    PendingCode,
    PendingReason,
    RequestState,
    RequestView,
    WorkerState,
)
from core_kit import CoreKit, caps_match
from hypothesis import given, settings
from hypothesis import strategies as st

NOBODY = frozenset[str]()
POLICY = Policy(
    job_timeout=100.0,
    prolong_step=100.0,
    max_job_duration=1000.0,
    min_job_timeout=10.0,
    heartbeat_timeout=1e9,
    healthcheck_interval=0.0,
)
PHONE_AND_RELAY = [("dut", {"board": "phone"}), ("relay", {"board": "relay"})]


@pytest.fixture
def kit() -> CoreKit:
    return CoreKit(POLICY)


def reason(kit: CoreKit, request: RequestView) -> PendingReason:
    found = kit.core.pending_reason(kit.now, request.id)
    assert found is not None
    return found


def test_no_registered_board_has_the_caps(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi5"}, accept_unsatisfiable=True)
    why = reason(kit, r)
    assert why.code is PendingCode.NO_MATCHING_BOARD
    assert "no registered board has the caps" in why.message
    assert why.boards == () and why.boards_total == 0 and why.requests_ahead == 0
    # A set whose profiles have boards, but not different ones, has none either.
    pair = kit.core.new_request(
        kit.now,
        "u",
        NOBODY,
        {},
        profiles=[("a", {"board": "rpi4"}), ("b", {"board": "rpi4"})],
        accept_unsatisfiable=True,
    )
    assert reason(kit, pair).code is PendingCode.NO_MATCHING_BOARD
    assert "no set of 2 different registered boards" in reason(kit, pair).message


def test_boards_with_the_caps_are_open_to_other_groups_only(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"}, groups=frozenset({"lab"}))
    r = kit.core.new_request(
        kit.now, "u", frozenset({"qa", "ci"}), {"board": "rpi4"}, accept_unsatisfiable=True
    )
    why = reason(kit, r)
    assert why.code is PendingCode.NO_BOARD_IN_GROUPS
    assert "(ci, qa)" in why.message and "schedctl workers groups" in why.message
    kit.add_worker("p1", {"board": "phone"})
    kit.add_worker("r1", {"board": "relay"}, groups=frozenset({"lab"}))
    pair = kit.core.new_request(
        kit.now, "u", frozenset({"qa"}), {}, profiles=PHONE_AND_RELAY, accept_unsatisfiable=True
    )
    assert reason(kit, pair).code is PendingCode.NO_BOARD_IN_GROUPS
    assert "the caps of its profile 'relay' are registered" in reason(kit, pair).message


def test_not_valid_yet(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, valid_after=kit.now + 60)
    why = reason(kit, r)
    assert why.code is PendingCode.NOT_VALID_YET
    assert why.message.startswith("not valid yet")
    assert [b.uuid for b in why.boards] == ["w1"] and why.boards_total == 1
    assert why.expected_start == 0.0 and why.latest_start == 0.0
    kit.advance(61)
    assert kit.core.request(r.id).state is RequestState.IN_PROGRESS
    assert kit.core.pending_reason(kit.now, r.id) is None


def test_boards_out_of_service(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"}, idle=False)  # registered in MAINTENANCE
    kit.add_worker("w2", {"board": "rpi4"})
    kit.core.set_fail(kit.now, "w2", "bad sd card")
    r = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    why = reason(kit, r)
    assert why.code is PendingCode.BOARDS_UNAVAILABLE
    assert why.message.endswith("of 2 boards it could use, 1 FAILED, 1 MAINTENANCE")
    assert {(b.uuid, b.state) for b in why.boards} == {
        ("w1", WorkerState.MAINTENANCE),
        ("w2", WorkerState.FAILED),
    }
    # A set needs a whole set in service: one phone running is not enough.
    kit.add_worker("p1", {"board": "phone"})
    kit.add_worker("r1", {"board": "relay"}, idle=False)
    pair = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    assert reason(kit, pair).code is PendingCode.BOARDS_UNAVAILABLE
    assert "no set of boards it could use is in service" in reason(kit, pair).message


def test_competing_requests_ahead_count_only_those_for_the_same_boards(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"})
    kit.add_worker("x1", {"board": "x86"}, idle=False)
    running = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    # More important, but for other boards: not ahead.
    kit.core.new_request(kit.now, "u", NOBODY, {"board": "x86"}, priority=1)
    first = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=4)
    anything = kit.core.new_request(kit.now, "u", NOBODY, {}, priority=4)  # rpi4 too
    second = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=4)
    assert kit.core.request(running.id).state is RequestState.IN_PROGRESS
    why = reason(kit, second)
    assert why.code is PendingCode.HIGHER_PRIORITY
    assert why.requests_ahead == 2
    assert why.message.startswith("2 waiting requests that could use the same boards go first")
    assert why.expected_start == 0.0 and why.latest_start == 0.0
    assert kit.core.queue_position(second.id) == 2
    # The request for any board competes with the x86 one too (the board is in MAINTENANCE).
    assert kit.core.queue_position(anything.id) == 2
    assert kit.core.queue_position(first.id) == 0
    assert reason(kit, first).code is PendingCode.BOARDS_BUSY


def test_first_in_line_waits_for_the_earliest_job_to_end(kit: CoreKit) -> None:
    for uuid in ("w1", "w2"):
        kit.add_worker(uuid, {"board": "rpi4"})
    short = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, job_timeout=30)
    kit.advance(5)
    long = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    why = reason(kit, waiting)
    assert why.code is PendingCode.BOARDS_BUSY
    assert why.message == "first in line; every board it could use is taken (2 running a job)"
    short_job, long_job = kit.core.request(short.id).job, kit.core.request(long.id).job
    assert short_job is not None and long_job is not None
    # Unless prolonged: the short job's timeout; at the latest: the earliest max_timeout_at.
    assert why.expected_start == short_job.timeout_at == kit.now - 5 + 30
    assert why.latest_start == short_job.max_timeout_at == kit.now - 5 + 1000
    # The boards, soonest free first, with the request holding each.
    assert [(b.uuid, b.held_by, b.frees_at) for b in why.boards] == [
        (short_job.worker_uuid, short.id, short_job.timeout_at),
        (long_job.worker_uuid, long.id, long_job.timeout_at),
    ]
    assert why.boards[0].frees_at_latest == short_job.max_timeout_at


def test_boards_out_of_service_are_listed_after_the_busy_ones(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4"}, idle=False)  # MAINTENANCE
    kit.add_worker("w2", {"board": "rpi4"})
    running = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    why = reason(kit, waiting)
    assert why.code is PendingCode.BOARDS_BUSY
    assert why.message.endswith("taken (1 out of service, 1 running a job)")
    assert [(b.uuid, b.held_by) for b in why.boards] == [("w2", running.id), ("w1", 0)]
    job = kit.core.request(running.id).job
    assert job is not None and why.latest_start == job.max_timeout_at


def test_a_board_held_as_collateral_frees_with_its_holder(kit: CoreKit) -> None:
    kit.add_worker("dut", {"board": "phone"})
    kit.add_worker("psu", {"board": "psu"})
    kit.core.create_stack(kit.now, "bench1", ["dut", "psu"])
    holder = kit.core.new_request(kit.now, "u", NOBODY, {"board": "phone"})
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"board": "psu"})
    why = reason(kit, waiting)
    assert why.code is PendingCode.BOARDS_BUSY
    assert "1 held as collateral" in why.message
    (board,) = why.boards
    job = kit.core.request(holder.id).job
    assert job is not None
    assert (board.uuid, board.held_by, board.collateral) == ("psu", holder.id, True)
    assert why.expected_start == job.timeout_at and why.latest_start == job.max_timeout_at


def test_a_set_first_in_line_waits_with_its_reserved_boards(kit: CoreKit) -> None:
    kit.add_worker("p0", {"board": "phone"})
    kit.add_worker("r0", {"board": "relay"})
    relay = kit.core.new_request(kit.now, "u", NOBODY, {"board": "relay"}, job_timeout=50)
    pair = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=5)
    why = reason(kit, pair)
    assert why.code is PendingCode.WAITING_FOR_SET
    assert why.reserved == ("p0",)
    assert "1 of them reserved for it" in why.message
    job = kit.core.request(relay.id).job
    assert job is not None
    # The reservation's expected start, and the same set at its jobs' max_timeout_at.
    reservation = kit.core.reservation(kit.now, pair.id)
    assert reservation is not None and why.expected_start == reservation[1] == job.timeout_at
    assert why.latest_start == job.max_timeout_at
    reserved = {b.uuid: b.reserved_for for b in why.boards}
    assert reserved == {"p0": pair.id, "r0": 0}


def test_precedence(kit: CoreKit) -> None:
    """Never servable first, then not valid yet, then out of service, then requests ahead,
    then busy boards."""
    kit.add_worker("w1", {"board": "rpi4"}, groups=frozenset({"lab"}))
    later = kit.now + 600
    # No board in its groups beats not valid yet.
    r = kit.core.new_request(
        kit.now,
        "u",
        frozenset({"qa"}),
        {"board": "rpi4"},
        valid_after=later,
        accept_unsatisfiable=True,
    )
    assert reason(kit, r).code is PendingCode.NO_BOARD_IN_GROUPS
    lab = frozenset({"lab"})
    running = kit.core.new_request(kit.now, "u", lab, {"board": "rpi4"})
    assert kit.core.request(running.id).state is RequestState.IN_PROGRESS
    ahead = kit.core.new_request(kit.now, "u", lab, {"board": "rpi4"})
    # Not valid yet beats requests ahead and busy boards.
    early = kit.core.new_request(kit.now, "u", lab, {"board": "rpi4"}, valid_after=later)
    assert reason(kit, early).code is PendingCode.NOT_VALID_YET
    assert reason(kit, early).requests_ahead == 1
    # Requests ahead beat busy boards.
    behind = kit.core.new_request(kit.now, "u", lab, {"board": "rpi4"})
    assert reason(kit, behind).code is PendingCode.HIGHER_PRIORITY
    assert reason(kit, ahead).code is PendingCode.BOARDS_BUSY
    # Out of service beats requests ahead.
    kit.core.set_state(kit.now, "w1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    assert reason(kit, behind).code is PendingCode.BOARDS_UNAVAILABLE
    assert reason(kit, behind).requests_ahead == 2  # ahead, and early (older)


def test_a_reason_lists_a_few_boards_and_counts_them_all(kit: CoreKit) -> None:
    count = MAX_BOARDS_LISTED + 5
    for i in range(count):
        kit.add_worker(f"w{i:02d}", {"board": "rpi4"})
    ends = {}
    for i in range(count):
        r = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, job_timeout=500 - i)
        job = kit.core.request(r.id).job
        assert job is not None
        ends[job.worker_uuid] = job.timeout_at
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"})
    why = reason(kit, waiting)
    assert why.boards_total == count and len(why.boards) == MAX_BOARDS_LISTED
    soonest = sorted(ends.items(), key=lambda item: item[1])[:MAX_BOARDS_LISTED]
    assert [(b.uuid, b.frees_at) for b in why.boards] == soonest
    assert why.expected_start == soonest[0][1]


# ------------------------------------------------------------------ queue positions


def usable(board: Mapping[str, str], groups: frozenset[str], request: RequestView) -> bool:
    """Whether a request could use the board for one of its profiles (docs/api.md's rule)."""
    if groups and groups.isdisjoint(request.owner_groups):
        return False
    return any(caps_match(board, profile.caps) for profile in request.all_profiles)


def brute_force_ahead(kit: CoreKit, request: RequestView) -> int:
    """Waiting requests served before this one that could use a board it could use."""
    boards = [(w.caps, w.groups) for w in kit.core.workers()]
    mine = [b for b in boards if usable(*b, request)]
    order = (request.priority, request.id)
    return sum(
        1
        for other in kit.core.live_requests()
        if other.state is RequestState.WAITING
        and (other.priority, other.id) < order
        and any(usable(*b, other) for b in mine)
    )


GROUPS = st.frozensets(st.sampled_from(("lab", "qa")), max_size=2)
VALUES = st.sampled_from(("a", "b", "a,b", "c"))
ASKED = st.dictionaries(
    st.sampled_from(("os", "board")), st.sampled_from(("a", "b", "a|b", "c", "a,b")), max_size=2
)


Boards = list[tuple[dict[str, str], frozenset[str], bool]]


@st.composite
def farms(draw: st.DrawFn) -> tuple[Boards, list[object]]:
    boards = draw(
        st.lists(
            st.tuples(
                st.dictionaries(st.sampled_from(("os", "board")), VALUES, max_size=2),
                GROUPS,
                st.booleans(),
            ),
            max_size=6,
        )
    )
    requests = draw(
        st.lists(
            st.tuples(
                st.lists(ASKED, min_size=1, max_size=2),
                GROUPS,
                st.integers(1, 4),
                st.booleans(),
                st.sampled_from(("keep", "close", "reprioritize")),
            ),
            min_size=1,
            max_size=14,
        )
    )
    return boards, requests


@settings(max_examples=150, deadline=None)
@given(farms())
def test_queue_position_counts_the_competing_requests_ahead(
    farm: tuple[Boards, list[object]],
) -> None:
    kit = CoreKit(POLICY)
    boards, requests = farm
    for i, (caps, groups, idle) in enumerate(boards):
        kit.add_worker(f"w{i}", caps, groups, idle=idle)
    made: list[tuple[RequestView, str]] = []
    for profiles, groups, priority, later, then in requests:  # type: ignore[misc]
        view = kit.core.new_request(
            kit.now,
            "u",
            groups,
            profiles[0] if len(profiles) == 1 else {},
            profiles=[(f"p{i}", caps) for i, caps in enumerate(profiles)]
            if len(profiles) > 1
            else (),
            priority=priority,
            valid_after=kit.now + 60 if later else None,
            accept_unsatisfiable=True,
        )
        made.append((view, then))
    for view, then in made:
        if kit.core.live_request(view.id) is None or kit.core.queue_position(view.id) is None:
            continue
        if then == "close":
            kit.core.close_request(kit.now, view.id)
        elif then == "reprioritize":
            kit.core.update_request(kit.now, view.id, priority=5 - view.priority)
        kit.answer_calls()
    explainer = kit.core.explainer(kit.now)
    for live in kit.core.live_requests():
        if live.state is not RequestState.WAITING:
            assert kit.core.queue_position(live.id) is None
            continue
        expected = brute_force_ahead(kit, live)
        assert kit.core.queue_position(live.id) == expected, live
        why = kit.core.pending_reason(kit.now, live.id, explainer)
        assert why is not None and why.requests_ahead == expected


# ------------------------------------------------------------------------- cost


def test_a_reason_looks_only_at_its_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reason and a queue position cost what the request's candidate boards and the
    buckets they serve cost, however many other boards there are and requests wait: counted
    where the indexes hand out boards and buckets (Core.index_visits), and per bisection."""
    bisections = 0
    ahead_in = RequestQueue.ahead_in

    def counted_ahead(bucket: object, request: object) -> int:
        nonlocal bisections
        bisections += 1
        return ahead_in(bucket, request)  # type: ignore[arg-type]

    monkeypatch.setattr(RequestQueue, "ahead_in", staticmethod(counted_ahead))

    def costs(others: int) -> tuple[int, int, PendingReason]:
        nonlocal bisections
        kit = CoreKit(POLICY)
        for i in range(others):
            kit.add_worker(f"x{i}", {"board": "x86", "slot": str(i % 7)})
        for i in range(3):
            kit.add_worker(f"r{i}", {"board": "rpi4"})
        for i in range(others * 5):
            caps = {"board": "x86", "slot": str(i % 7)}
            kit.core.new_request(
                kit.now, "u", NOBODY, caps, priority=1 + i % 3, accept_unsatisfiable=True
            )
        if others:
            kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=[("", {"board": "x86"})] * 2)
        for _ in range(4):
            kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=3)
        mine = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4"}, priority=2)
        kit.drain()
        bisections = 0
        before = kit.core.index_visits
        position = kit.core.queue_position(mine.id)
        assert position == 0
        why = reason(kit, mine)
        return kit.core.index_visits - before + bisections, kit.core.waiting_count, why

    small, small_waiting, _ = costs(5)
    large, large_waiting, large_why = costs(200)
    assert large_waiting > 20 * small_waiting
    assert small == large, (small, large)
    assert large_why.code is PendingCode.BOARDS_BUSY and large_why.boards_total == 3
