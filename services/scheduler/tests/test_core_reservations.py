"""No starvation (docs/api.md, "Reservations and backfill"): a waiting request of several
boards reserves the boards that free up, and less important requests use them only if
their jobs end before it could start. Pure core, simulated time."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from boruta_scheduler.core import Core, Policy, Snapshot
from boruta_scheduler.errors import Busy, ProlongLimitReached
from boruta_scheduler.types import RequestState, RequestView, WorkerState
from core_kit import CoreKit
from hypothesis import example, given, settings
from hypothesis import strategies as st

NOBODY = frozenset[str]()
LONGEST = 100.0  # the policy's job timeout: no job runs longer without a prolong
POLICY = Policy(
    job_timeout=LONGEST,
    prolong_step=LONGEST,
    min_job_timeout=10.0,
    heartbeat_timeout=1e9,
    healthcheck_interval=0.0,
)
PHONE_AND_RELAY = [("dut", {"board": "phone"}), ("relay", {"board": "relay"})]


def run_until(kit: CoreKit, end: float, check: object = None) -> None:
    """Move the clock to end, stopping at every timer on the way; prepares succeed at once."""
    while True:
        due = kit.core.next_timer()
        kit.now = end if due is None or due > end else max(kit.now, due)
        kit.core.tick(kit.now)
        kit.answer_calls()
        if callable(check):
            check()
        if kit.now >= end:
            return


def farm(kit: CoreKit, phones: int, relays: int) -> None:
    for i in range(phones):
        kit.add_worker(f"p{i}", {"board": "phone"})
    for i in range(relays):
        kit.add_worker(f"r{i}", {"board": "relay"})


def test_a_set_is_not_starved_by_a_stream_of_one_board_requests() -> None:
    # One phone and one relay; short one-board jobs of a lower priority keep coming, each
    # arriving while the other board is busy. Without reservations the pair never runs.
    kit = CoreKit(POLICY)
    farm(kit, 1, 1)
    core = kit.core
    first = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, priority=9)
    pair = core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=5)
    assert core.request(first.id).state is RequestState.IN_PROGRESS
    assert pair.state is RequestState.WAITING
    began = kit.now
    for round_ in range(20):
        board = "relay" if round_ % 2 == 0 else "phone"
        core.new_request(kit.now, "u", NOBODY, {"board": board}, priority=9)
        kit.drain()
        run_until(kit, kit.now + LONGEST / 2)
        if core.request(pair.id).state is not RequestState.WAITING:
            break
    assert core.request(pair.id).state is RequestState.IN_PROGRESS
    # It waited for the jobs running when it came, no longer.
    assert core.request(pair.id).job.started_at <= began + LONGEST  # type: ignore[union-attr]


def pair_behind_relay(relay_timeout: float = 50) -> tuple[CoreKit, RequestView]:
    """One phone and one relay; the relay runs a job, a pair of both waits (priority 5)."""
    kit = CoreKit(POLICY)
    farm(kit, 1, 1)
    kit.core.new_request(kit.now, "u", NOBODY, {"board": "relay"}, job_timeout=relay_timeout)
    pair = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=5)
    return kit, pair


def test_a_reserved_board_is_backfilled_only_by_a_job_that_ends_in_time() -> None:
    kit, pair = pair_behind_relay()
    core = kit.core
    start = kit.now + 50  # when the relay comes free at the latest
    assert core.reservation(kit.now, pair.id) == (("p0",), start)
    # Too long to end before the pair could start: it waits.
    long = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, job_timeout=60, priority=9)
    assert long.state is RequestState.WAITING
    # Short enough, and no more important one-board request waits for the phone: it runs
    # on the reserved phone, and may not be prolonged past the start.
    short = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, job_timeout=30)
    assert short.state is RequestState.IN_PROGRESS
    assert short.job is not None and short.job.max_timeout_at == start
    kit.now += 25
    core.prolong_access(kit.now, short.id)
    assert core.request(short.id).job.timeout_at == start  # type: ignore[union-attr]
    with pytest.raises(ProlongLimitReached, match="reserved for a waiting request"):
        core.prolong_access(kit.now, short.id)
    # When the relay's job times out, the pair runs; the long job still waits.
    kit.drain()
    run_until(kit, start)
    assert core.request(pair.id).state is RequestState.IN_PROGRESS
    assert core.request(long.id).state is RequestState.WAITING
    assert core.reservation(kit.now, pair.id) is None


def test_a_more_important_request_takes_a_reserved_board() -> None:
    kit, pair = pair_behind_relay(LONGEST)
    core = kit.core
    assert core.reservation(kit.now, pair.id) is not None
    urgent = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, priority=1)
    assert urgent.state is RequestState.IN_PROGRESS
    assert core.reservation(kit.now, pair.id) == ((), kit.now + LONGEST)


def test_no_wait_respects_reservations() -> None:
    kit, pair = pair_behind_relay()
    core = kit.core
    with pytest.raises(Busy):
        core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, no_wait=True)
    short = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, no_wait=True, job_timeout=20)
    assert short.state is RequestState.IN_PROGRESS
    assert core.reservation(kit.now, pair.id) == (("p0",), kit.now + 50)


def test_an_update_makes_the_reservations_again() -> None:
    kit, pair = pair_behind_relay()
    core = kit.core
    single = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, priority=7)
    assert single.state is RequestState.WAITING
    # The pair falls behind the one-board request, which now gets the phone.
    core.update_request(kit.now, pair.id, priority=9)
    assert core.request(single.id).state is RequestState.IN_PROGRESS
    assert core.reservation(kit.now, pair.id) == ((), kit.now + LONGEST)
    # A board that leaves service is no longer counted on or kept.
    core.set_state(kit.now, "p0", WorkerState.MAINTENANCE)
    assert core.reservation(kit.now, pair.id) == ((), float("inf"))


def test_reservations_are_released_when_the_request_ends_and_rebuilt_on_restore() -> None:
    kit, pair = pair_behind_relay()
    core = kit.core
    waiting = core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, priority=9)
    assert waiting.state is RequestState.WAITING
    # Reservations are not stored: a restore rebuilds them from the waiting requests.
    restored = Core.restore(
        Snapshot(list(core.live_requests()), core.workers(), core.last_request_id),
        kit.now,
        POLICY,
    )
    assert restored.reservation(kit.now, pair.id) == core.reservation(kit.now, pair.id)
    core.close_request(kit.now, pair.id)
    assert core.request(waiting.id).state is RequestState.IN_PROGRESS


# A phone with one more cap than the others: it ranks after them (less capable first).
RICH_PHONE = {"board": "phone", "camera": "yes"}


# Jobs of one-board requests run twice as long as the relay's below, so they can backfill
# no board kept for a pair unless they ask for a shorter job.
LONGER = replace(POLICY, job_timeout=2 * LONGEST, prolong_step=2 * LONGEST)


def sets_behind_relay(
    kit: CoreKit, count: int, priority: int, relay_timeout: float = LONGEST
) -> list[int]:
    """The relay runs a job; count pairs (phone and relay), each of a team of its own so
    that each is walked and keeps a phone of its own, wait for it. Their ids."""
    kit.core.new_request(kit.now, "u", NOBODY, {"board": "relay"}, job_timeout=relay_timeout)
    pairs = []
    for i in range(count):
        pair = kit.core.new_request(
            kit.now,
            f"u{i}",
            frozenset({f"team{i}"}),
            {},
            profiles=PHONE_AND_RELAY,
            priority=priority,
        )
        assert kit.core.reservation(kit.now, pair.id) == ((f"p{i:03d}",), kit.now + relay_timeout)
        pairs.append(pair.id)
    return pairs


def test_a_board_kept_for_a_less_important_set_is_taken_past_many_kept_for_more() -> None:
    """The boards kept for sets more important than a one-board request are the ones it
    may only backfill; a board kept for a less important set it takes outright, however
    many of the others rank before it."""
    kit = CoreKit(LONGER)
    for i in range(40):
        kit.add_worker(f"p{i:03d}", {"board": "phone"})
    kit.add_worker("r0", {"board": "relay"})
    sets_behind_relay(kit, 40, priority=2)
    kit.add_worker("z", {"board": "phone"})
    minor = kit.core.new_request(kit.now, "m", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=9)
    assert kit.core.reservation(kit.now, minor.id) == (("z",), kit.now + LONGEST)
    single = kit.core.new_request(kit.now, "s", NOBODY, {"board": "phone"}, priority=5)
    assert single.state is RequestState.IN_PROGRESS
    assert single.job is not None and single.job.worker_uuid == "z"
    assert kit.core.reservation(kit.now, minor.id) == ((), kit.now + 2 * LONGEST)


def test_an_unreserved_board_is_taken_before_one_kept_for_a_less_important_set() -> None:
    """Taking a board kept for a set delays that set: a request takes a free board first,
    even one more capable than the kept one."""
    kit = CoreKit(LONGER)
    kit.add_worker("p000", {"board": "phone"})
    kit.add_worker("rich", RICH_PHONE)
    kit.add_worker("r0", {"board": "relay"})
    sets_behind_relay(kit, 1, priority=9)
    single = kit.core.new_request(kit.now, "s", NOBODY, {"board": "phone"}, priority=5)
    assert single.state is RequestState.IN_PROGRESS
    assert single.job is not None and single.job.worker_uuid == "rich"
    assert kit.core.worker("p000").state is WorkerState.IDLE


def test_a_set_reserves_a_free_board_before_one_kept_for_a_less_important_set() -> None:
    """A set that finds no whole set reserves as a one-board request takes: a free board
    before one kept for a less important set, which keeps its own."""
    kit = CoreKit(LONGER)
    kit.add_worker("p000", {"board": "phone"})
    kit.add_worker("rich", RICH_PHONE)
    kit.add_worker("r0", {"board": "relay"})
    [minor] = sets_behind_relay(kit, 1, priority=9)
    major = kit.core.new_request(kit.now, "M", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=5)
    assert kit.core.reservation(kit.now, major.id) == (("rich",), kit.now + LONGEST)
    assert kit.core.reservation(kit.now, minor) == (("p000",), kit.now + LONGEST)


def test_a_board_kept_for_a_more_important_set_is_backfilled_past_many() -> None:
    """With many boards kept for more important sets, a job that ends before they could
    start still backfills one of them (the first set it looks at), and no more."""
    kit = CoreKit(LONGER)
    for i in range(40):
        kit.add_worker(f"p{i:03d}", {"board": "phone"})
    kit.add_worker("r0", {"board": "relay"})
    pairs = sets_behind_relay(kit, 40, priority=2, relay_timeout=50)
    # Less important than the next one (a backfill keeps the order among the others).
    long = kit.core.new_request(
        kit.now, "l", NOBODY, {"board": "phone"}, job_timeout=60, priority=9
    )
    assert long.state is RequestState.WAITING
    short = kit.core.new_request(kit.now, "s", NOBODY, {"board": "phone"}, job_timeout=20)
    assert short.state is RequestState.IN_PROGRESS
    assert short.job is not None and short.job.max_timeout_at == kit.now + 50
    # The board stays kept for its set, for when the short job has ended.
    kept = {kit.core.reservation(kit.now, pair)[0] for pair in pairs}  # type: ignore[index]
    assert (short.job.worker_uuid,) in kept
    assert kit.core.worker(short.job.worker_uuid).state is WorkerState.RUNNING


# -------------------------------------------------------------- property test


@dataclass(frozen=True)
class Arrive:
    boards: tuple[str, ...]  # ("phone",), ("relay",) or ("phone", "relay")
    priority: int
    job_timeout: float


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class End:
    pick: int


events = st.lists(
    st.one_of(
        st.builds(
            Arrive,
            st.sampled_from([("phone",), ("relay",), ("phone", "relay"), ("phone", "phone")]),
            st.integers(1, 3),
            st.sampled_from([10.0, 20.0, 50.0, LONGEST]),
        ),
        st.builds(Wait, st.sampled_from([1.0, 5.0, 20.0, 60.0])),
        st.builds(End, st.integers(0, 100)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), events)
# The pair waits behind a relay job; a phone job takes the free phone, and when both end
# together a waiting relay job takes the relay again (before reservations: for ever).
@example(
    1,
    1,
    [
        Arrive(("relay",), 3, LONGEST),
        Arrive(("phone", "relay"), 1, LONGEST),
        Arrive(("phone",), 3, LONGEST),
        Arrive(("relay",), 3, LONGEST),
        Arrive(("phone",), 3, LONGEST),
        Wait(60.0),
        Wait(60.0),
        Wait(60.0),
    ],
)
def test_the_head_of_the_queue_is_never_bypassed_unboundedly(
    phones: int, relays: int, script: list[Arrive | Wait | End]
) -> None:
    """The most important ready request (by priority, then age) starts at most one job
    timeout after it became so: every job running then has ended by that time, and no
    job started meanwhile on a board it needs outlasts it. While it holds reservations,
    its estimated start never moves later and it starts by then."""
    kit = CoreKit(POLICY)
    farm(kit, phones, relays)
    core = kit.core
    head: list[object] = [None, 0.0, float("inf")]  # request id, head since, its estimate

    def check() -> None:
        waiting = [v for v in core.live_requests() if v.state is RequestState.WAITING]
        if not waiting:
            head[:] = [None, 0.0, float("inf")]
            return
        first = min(waiting, key=lambda v: (v.priority, v.id))
        if head[0] != first.id:
            head[:] = [first.id, kit.now, float("inf")]
        since = head[1]
        assert isinstance(since, float)
        assert kit.now < since + LONGEST, (
            f"request {first.id} has been first in the queue for {kit.now - since:g} s "
            "and still waits"
        )
        reserved = core.reservation(kit.now, first.id)
        if reserved is not None:
            estimate = reserved[1]
            previous = head[2]
            assert isinstance(previous, float)
            assert estimate <= previous, "a backfilled job delayed a reservation"
            assert kit.now < estimate, "a reservation's start passed and the request waits"
            head[2] = estimate

    for event in script:
        if isinstance(event, Arrive):
            first = core.live_request(head[0]) if isinstance(head[0], int) else None
            if first is not None and event.priority < first.priority:
                # A more important request may take what the first one counted on.
                head[:] = [first.id, kit.now, float("inf")]
            if len(event.boards) == 1:
                core.new_request(
                    kit.now,
                    "u",
                    NOBODY,
                    {"board": event.boards[0]},
                    priority=event.priority,
                    job_timeout=event.job_timeout,
                )
            elif event.boards.count("phone") <= phones:
                core.new_request(
                    kit.now,
                    "u",
                    NOBODY,
                    {},
                    priority=event.priority,
                    job_timeout=event.job_timeout,
                    profiles=[(f"b{i}", {"board": b}) for i, b in enumerate(event.boards)],
                )
            kit.answer_calls()
        elif isinstance(event, Wait):
            run_until(kit, kit.now + event.seconds, check)
        else:
            running = sorted(
                v.id for v in core.live_requests() if v.state is RequestState.IN_PROGRESS
            )
            if running:
                core.close_request(kit.now, running[event.pick % len(running)])
                kit.answer_calls()
        check()
    # Whatever is left runs in the end: nothing waits forever.
    run_until(kit, kit.now + 10 * LONGEST, check)
    assert not [v for v in core.live_requests() if v.state is RequestState.WAITING]
    assert all(w.state is WorkerState.IDLE for w in core.workers())
