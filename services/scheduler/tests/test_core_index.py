"""The cost of an event depends on its few candidates, not on how many requests wait or
workers there are, even for workloads shaped to defeat the indexes.

Cost is counted where the indexes hand out buckets of waiting requests and workers
(Core.index_visits), never timed: each workload runs at two sizes ten times apart, and the
event must look at the same few things at both (bench/hostile_bench.py times them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from boruta_scheduler.core import Policy
from boruta_scheduler.core.caps import Need
from boruta_scheduler.core.model import Request, Worker
from boruta_scheduler.types import RequestState, WorkerState
from core_kit import CoreKit

POLICY = Policy(max_waiting_per_user=10**6, max_waiting_cap_sets_per_user=10**6)
ARM = {"arch": "arm"}
Queue = Callable[[CoreKit, int], None]


def queue_each(
    caps: Callable[[int], dict[str, str]], *, own_team: bool = True, later: bool = False
) -> Queue:
    """Queue n requests of these caps, each of a team of its own (a bucket each), or all
    of no team, valid now or only tomorrow."""

    def queue(kit: CoreKit, n: int) -> None:
        for i in range(n):
            kit.core.new_request(
                kit.now,
                f"user{i}",
                frozenset({f"team{i}"}) if own_team else frozenset(),
                caps(i),
                valid_after=kit.now + 86400 if later else None,
                accept_unsatisfiable=True,
            )
        kit.drain()

    return queue


def board_frees(queue: Queue, n: int, groups: frozenset[str] = frozenset()) -> int:
    """What the indexes look at when a busy arm board frees with n hostile requests queued."""
    kit = CoreKit(POLICY)
    kit.add_worker("board", ARM, groups)
    job = kit.core.new_request(kit.now, "owner", groups, {"UUID": "board"})
    queue(kit, n)
    before = kit.core.index_visits
    kit.core.close_request(kit.now, job.id)
    kit.answer_calls()
    return kit.core.index_visits - before


HOSTILE_QUEUES: dict[str, tuple[Queue, frozenset[str]]] = {
    # Requests a board could serve, but not yet: only ready ones are to be looked at.
    "not valid yet": (queue_each(lambda i: ARM, later=True), frozenset()),
    # A cap every board has and one no board has: to be indexed under the rare one.
    "common cap plus a rare one": (queue_each(lambda i: {**ARM, "gpu": "yes"}), frozenset()),
    # A cap every board has and alternatives no board has: under the alternatives.
    "common cap plus rare alternatives": (
        queue_each(lambda i: {**ARM, "serial": f"s{i}|t{i}"}, own_team=False),
        frozenset(),
    ),
    # The board's caps, but of other teams than the board's.
    "its caps, other teams": (queue_each(lambda i: ARM), frozenset({"lab"})),
    # Any board, but of other teams than the board's.
    "any board, other teams": (queue_each(lambda i: {}), frozenset({"lab"})),
    # Any board, but not yet.
    "any board, not valid yet": (queue_each(lambda i: {}, later=True), frozenset()),
}


@pytest.mark.parametrize("name", list(HOSTILE_QUEUES))
def test_a_freed_board_looks_at_few_buckets_however_many_wait(name: str) -> None:
    queue, groups = HOSTILE_QUEUES[name]
    small, large = board_frees(queue, 30, groups), board_frees(queue, 300, groups)
    assert small == large, (small, large)
    assert large <= 4, large


def identical_sets(kit: CoreKit, n: int) -> None:
    for i in range(n):
        kit.core.new_request(
            kit.now,
            f"user{i}",
            frozenset(),
            {},
            profiles=[("a", ARM), ("b", ARM)],
            accept_unsatisfiable=True,
        )
    kit.drain()


def test_identical_sets_share_one_walk() -> None:
    """Requests for the same boards wait in one bucket: a freed board looks at it once."""
    small, large = board_frees(identical_sets, 30), board_frees(identical_sets, 300)
    assert small == large, (small, large)


def set_arrivals(boards: int) -> int:
    """What the indexes look at when a request for an arm and an x86 board arrives, with
    `boards` idle arm boards, the x86 board busy and as many such requests waiting."""
    kit = CoreKit(POLICY)
    for i in range(boards):
        kit.add_worker(f"arm{i}", ARM)
    kit.add_worker("x86", {"arch": "x86"})
    kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": "x86"})
    profiles = [("a", ARM), ("b", {"arch": "x86"})]
    for i in range(boards):
        kit.core.new_request(kit.now, f"user{i}", frozenset(), {}, profiles=profiles)
    before = kit.core.index_visits
    late = kit.core.new_request(kit.now, "late", frozenset(), {}, profiles=profiles)
    assert late.state is RequestState.WAITING
    return kit.core.index_visits - before


def test_requests_with_equal_profiles_share_one_walk() -> None:
    """A request that asks what a more important ready one asks, which got no set, is not
    walked again: it neither passes the arm boards reserved for the others one by one
    nor reserves one itself."""
    small, large = set_arrivals(20), set_arrivals(200)
    assert small == large, (small, large)
    assert large <= 4, large


def arrival_beside_reserved(boards: int) -> int:
    """What the indexes look at when a one-board request arrives that could backfill none
    of `boards` idle arm boards, each reserved for the set of another team (an arm board
    and the x86 one, busy for 10 s more)."""
    kit = CoreKit(POLICY)
    for i in range(boards):
        kit.add_worker(f"arm{i}", ARM)
    kit.add_worker("x86", {"arch": "x86"})
    kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": "x86"}, job_timeout=10)
    profiles = [("a", ARM), ("b", {"arch": "x86"})]
    for i in range(boards):
        kit.core.new_request(kit.now, f"user{i}", frozenset({f"team{i}"}), {}, profiles=profiles)
    before = kit.core.index_visits
    late = kit.core.new_request(kit.now, "late", frozenset(), ARM)
    assert late.state is RequestState.WAITING
    return kit.core.index_visits - before


def test_boards_reserved_for_others_cost_a_few_looks() -> None:
    """A request works out the expected start of a few reserved boards' sets, not of every
    one it passes (which made its cost grow with the square of the reserved boards), and
    no longer walks past the reserved boards themselves: they are indexed apart from the
    unreserved ones, by their holder, and the walk of the boards it could backfill ends
    once its looks are spent (docs/architecture.md, reservations)."""
    small, large = arrival_beside_reserved(20), arrival_beside_reserved(200)
    assert small == large, (small, large)
    assert large <= 100, large


def arrival_among(boards: int) -> int:
    """What the indexes look at when an outsider asks for an arm board among `boards` idle
    and registered arm boards of the lab, and one open to all."""
    kit = CoreKit(POLICY)
    for i in range(boards):
        kit.add_worker(f"lab{i}", ARM, frozenset({"lab"}))
    kit.add_worker("open", ARM)
    busy = kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": "open"})
    before = kit.core.index_visits
    waiting = kit.core.new_request(kit.now, "outsider", frozenset({"guests"}), ARM)
    assert waiting.state is RequestState.WAITING
    cost = kit.core.index_visits - before
    kit.core.close_request(kit.now, busy.id)
    kit.answer_calls()
    assert kit.core.request(waiting.id).state is RequestState.IN_PROGRESS
    return cost


def test_a_request_looks_at_few_boards_however_large_the_farm() -> None:
    """Boards closed to the owner's groups are not walked: growing the farm tenfold with
    them leaves the cost of an arrival as it was."""
    small, large = arrival_among(20), arrival_among(200)
    assert small == large, (small, large)
    assert large <= 4, large


def test_a_request_valid_later_is_served_when_it_is_due() -> None:
    """A request kept out of the ready index is found by the board waiting for it once its
    time comes, and a board freeing meanwhile does not take it early."""
    kit = CoreKit(POLICY)
    kit.add_worker("board", ARM, frozenset({"lab"}))
    job = kit.core.new_request(kit.now, "owner", frozenset({"lab"}), {"UUID": "board"})
    later = kit.core.new_request(kit.now, "u", frozenset({"lab"}), {}, valid_after=kit.now + 60)
    kit.core.close_request(kit.now, job.id)
    kit.answer_calls()
    assert kit.core.worker("board").state is WorkerState.IDLE
    assert kit.core.request(later.id).state is RequestState.WAITING
    kit.advance(61)
    assert kit.core.request(later.id).state is RequestState.IN_PROGRESS


def test_a_shorter_job_is_still_walked_behind_its_bucket() -> None:
    """The shared walk is skipped only for a request whose job is no shorter than that of
    the more important one: a shorter one may backfill what the first may not, and with
    no_wait it must then start at once, not wait."""
    kit = CoreKit(POLICY)
    for uuid in ("phone1", "phone2"):
        kit.add_worker(uuid, {"board": "phone"})
    kit.add_worker("relay", {"board": "relay"})
    kit.core.new_request(kit.now, "o", frozenset(), {"UUID": "relay"}, job_timeout=100)
    phone = {"board": "phone"}
    held = kit.core.new_request(
        kit.now,
        "u",
        frozenset(),
        {},
        profiles=[("p", phone), ("r", {"board": "relay"})],
        priority=1,
    )
    assert held.state is RequestState.WAITING
    pair = [("a", phone), ("b", phone)]
    first = kit.core.new_request(kit.now, "u", frozenset(), {}, profiles=pair, priority=2)
    assert first.state is RequestState.WAITING
    short = kit.core.new_request(
        kit.now, "u", frozenset(), {}, profiles=pair, priority=2, job_timeout=10, no_wait=True
    )
    assert short.state is RequestState.IN_PROGRESS


CAMERA_ARM = {"arch": "arm", "camera": "yes"}


def add_others(kit: CoreKit, n: int, shape: str) -> None:
    """n boards that hold the set's rarest pair (arm) but cannot serve its owner, ranked
    before those that can, and 2n that hold its other pair (camera) only, so arm stays
    the rarest pair."""
    for i in range(n):
        if shape == "other caps":
            kit.add_worker(f"a{i:05d}", ARM)
        else:
            kit.add_worker(f"a{i:05d}", {**ARM, "camera": "yes"}, frozenset({f"team{i}"}))
    for i in range(2 * n):
        kit.add_worker(f"m{i:05d}", {"arch": "mips", "camera": "yes"})


def set_waits_for_x86(n: int, shape: str) -> tuple[CoreKit, int, int]:
    """A farm whose busy x86 board, once free, a set (an arm board with a camera, and an
    x86 one) keeps, and a less important x86 request may backfill: the kit, the x86
    board's job and the one-board request."""
    kit = CoreKit(POLICY)
    kit.add_worker("x86", {"arch": "x86"})
    for i in range(4):
        kit.add_worker(f"cam{i}", CAMERA_ARM)
        kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": f"cam{i}"}, job_timeout=60)
    add_others(kit, n, shape)
    job = kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": "x86"})
    profiles = [("a", CAMERA_ARM), ("b", {"arch": "x86"})]
    kit.core.new_request(kit.now, "setter", frozenset(), {}, profiles=profiles, priority=2)
    single = kit.core.new_request(
        kit.now, "single", frozenset(), {"arch": "x86"}, priority=5, job_timeout=10
    )
    kit.drain()
    return kit, job.id, single.id


def set_start_on_free(n: int, shape: str) -> int:
    """What the indexes look at when the x86 board of set_waits_for_x86 frees and the
    one-board request must know when the set is expected to start before it may backfill."""
    kit, job, single = set_waits_for_x86(n, shape)
    before = kit.core.index_visits
    kit.core.close_request(kit.now, job)
    kit.answer_calls()
    # The set starts in 60 s: the 10 s job backfills the board kept for it.
    assert kit.core.request(single).state is RequestState.IN_PROGRESS
    return kit.core.index_visits - before


@pytest.mark.parametrize("shape", ["other caps", "other groups"])
def test_a_sets_expected_start_skips_boards_it_cannot_use(shape: str) -> None:
    """Boards that hold a set's rarest pair but lack its other caps, or are closed to its
    owner, and rank before those it can use, are skipped, not walked one by one: the
    expected start of a set costs the same in a farm ten times larger."""
    small, large = set_start_on_free(20, shape), set_start_on_free(200, shape)
    assert small == large, (small, large)


def queue_arm_x86_sets(kit: CoreKit, n: int, owner: str) -> None:
    """Queue n sets of an arm and an x86 board at priority 2, each of a team of its own."""
    for i in range(n):
        kit.core.new_request(
            kit.now,
            f"{owner}{i}",
            frozenset({f"team{i}"}),
            {},
            profiles=[("a", ARM), ("b", {"arch": "x86"})],
            priority=2,
        )


def test_a_freed_board_looks_up_each_reserved_boards_best_request_once() -> None:
    """A freed arm board could join many less important sets, each of which could backfill
    the same idle arm boards kept for more important sets: whether a backfill would pass a
    more important one-board request is looked up once per kept board, not once per set
    and board (which made a free event at the smallest benchmark farm cost 2,000 visits)."""
    kit = CoreKit(POLICY)
    kept, sets = 10, 12
    for i in range(kept + 1):
        kit.add_worker(f"arm{i}", ARM)
    kit.add_worker("x86", {"arch": "x86"})
    # The x86 board is busy for long, so the important sets wait for it with an arm board
    # kept each, and the short jobs of the others could backfill those.
    kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": "x86"}, job_timeout=3600)
    busy = kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": f"arm{kept}"})
    queue_arm_x86_sets(kit, kept, "important")
    for i in range(sets):
        # Three arm boards with a feature of its own each: no set can be completed, each
        # looks at the kept boards.
        kit.core.new_request(
            kit.now,
            f"other{i}",
            frozenset(),
            {},
            profiles=[("a", ARM), ("b", ARM), ("c", {**ARM, "slot": f"s{i}"})],
            priority=5,
            job_timeout=60,
            accept_unsatisfiable=True,
        )
    kit.drain()
    assert sum(1 for w in kit.core.workers() if w.state is WorkerState.IDLE) == kept
    queue = kit.core._queue
    looked: list[str] = []
    best_for = queue.best_for

    def counting(items: frozenset[tuple[str, str]], groups: frozenset[str]) -> object:
        looked.append(next(v for k, v in items if k == "UUID"))
        return best_for(items, groups)

    queue.best_for = counting  # type: ignore[method-assign,assignment]
    kit.core.close_request(kit.now, busy.id)
    kit.answer_calls()
    assert looked, "the free event looked up no board's best request: the test proves nothing"
    assert len(looked) == len(set(looked)), sorted(looked)


def test_a_backfill_works_out_the_sets_expected_start_once() -> None:
    """The backfill check and the cap on the backfilled job's time share one working out
    of the set's expected start (it cost two, the dearest part of a free event)."""
    kit, job, single = set_waits_for_x86(5, "other caps")
    worked_out: list[int] = []
    reserved_start = kit.core._reserved_start

    def counting(request: Request, now: float, *, latest: bool = False) -> float:
        worked_out.append(request.id)
        return reserved_start(request, now, latest=latest)

    kit.core._reserved_start = counting  # type: ignore[method-assign]
    kit.core.close_request(kit.now, job)
    kit.answer_calls()
    backfill = kit.core.request(single)
    assert backfill.state is RequestState.IN_PROGRESS
    assert backfill.job is not None and backfill.job.max_timeout_at == reserved_start(
        kit.core._requests[worked_out[0]], kit.now
    ), "the backfilled job may run past the set's expected start"
    assert len(worked_out) == 1, worked_out


def test_a_freed_board_tries_no_set_the_idle_boards_cannot_complete() -> None:
    """An arm board frees beside idle boards of another kind; many sets want it and an x86
    board, and no x86 board is idle: the free event tries none of them (each cost a walk of
    the idle indexes per profile), though there are as many idle boards as each needs."""
    kit = CoreKit(POLICY)
    kit.add_worker("arm", ARM)
    kit.add_worker("x86", {"arch": "x86"})
    for i in range(4):
        kit.add_worker(f"spare{i}", {"arch": "spare"})
    kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": "x86"}, job_timeout=3600)
    job = kit.core.new_request(kit.now, "owner", frozenset(), {"UUID": "arm"})
    queue_arm_x86_sets(kit, 20, "setter")
    kit.drain()
    tried: list[int] = []
    boards = kit.core._boards

    def counting(needs: Sequence[Need], *args: Any) -> list[Worker] | None:
        tried.append(len(needs))
        return boards(needs, *args)

    kit.core._boards = counting  # type: ignore[method-assign]
    kit.core.close_request(kit.now, job.id)
    kit.answer_calls()
    assert kit.core.worker("arm").state is WorkerState.IDLE
    assert tried == []
