"""Unit tests of co-location in the pure core: groups of a request's profiles whose boards
must share one host (one dryad) or one stack."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from boruta_scheduler.core import Core, Snapshot
from boruta_scheduler.core.caps import need_of
from boruta_scheduler.core.model import Worker, cap_pairs
from boruta_scheduler.core.together import MAX_PLACES_SEARCHED, find_set, from_index
from boruta_scheduler.core.workers import WorkerIndex
from boruta_scheduler.errors import Busy, InvalidArgument, NoCapableWorker
from boruta_scheduler.types import (
    Colocation,
    PendingCode,
    Placement,
    RequestState,
    WorkerState,
)
from core_kit import CoreKit
from hypothesis import given, settings
from hypothesis import strategies as st

NOBODY = frozenset[str]()
PAIR = [("dut", {"board": "phone"}), ("relay", {"board": "relay"})]
ON_HOST = (Colocation((), Placement.HOST),)
IN_STACK = (Colocation((), Placement.STACK),)


@pytest.fixture
def kit() -> CoreKit:
    return CoreKit()


def state_of(kit: CoreKit, request_id: int) -> RequestState:
    """The request's state, live or as it last changed (the core forgets terminal ones)."""
    live = kit.core.live_request(request_id)
    if live is not None:
        return live.state
    kit.drain()
    return [r for c in kit.changes for r in c.requests if r.id == request_id][-1].state


def boards_of(kit: CoreKit, request_id: int) -> list[str]:
    return [job.worker_uuid for job in kit.core.request(request_id).all_jobs]


def ask(
    kit: CoreKit,
    together: Sequence[Colocation] = ON_HOST,
    profiles: Sequence[tuple[str, dict[str, str]]] = PAIR,
    *,
    priority: int = 0,
    accept_unsatisfiable: bool = False,
    no_wait: bool = False,
) -> int:
    return kit.core.new_request(
        kit.now,
        "u",
        NOBODY,
        {},
        profiles=profiles,
        together=together,
        priority=priority,
        accept_unsatisfiable=accept_unsatisfiable,
        no_wait=no_wait,
    ).id


def test_a_pair_together_on_a_host_skips_boards_on_other_hosts(kit: CoreKit) -> None:
    # The least capable phone and relay are on two hosts; only lab2 has both.
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab3")
    kit.add_worker("p2", {"board": "phone", "camera": "yes"}, host="lab2")
    kit.add_worker("r2", {"board": "relay", "usb": "3"}, host="lab2")
    request = ask(kit)
    assert boards_of(kit, request) == ["p2", "r2"]
    view = kit.core.request(request)
    assert view.together == ON_HOST
    # Without the group the least capable boards are taken, on two hosts.
    loose = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PAIR).id
    assert boards_of(kit, loose) == ["p1", "r1"]


def test_a_group_in_a_stack_and_the_stacks_other_boards_become_collateral(kit: CoreKit) -> None:
    for uuid, board in [("p1", "phone"), ("r1", "relay"), ("p2", "phone"), ("r2", "relay")]:
        kit.add_worker(uuid, {"board": board})
    kit.add_worker("psu", {"board": "psu"})
    kit.core.create_stack(kit.now, "bench", ["p2", "r2", "psu"])
    request = ask(kit, IN_STACK)
    assert boards_of(kit, request) == ["p2", "r2"]
    assert kit.core.worker("psu").collateral_of == request
    (held,) = kit.core.allocations()
    assert (held.request_id, held.collateral) == (request, ("psu",))
    assert [(b.profile, b.worker_uuid, b.stack) for b in held.boards] == [
        ("dut", "p2", "bench"),
        ("relay", "r2", "bench"),
    ]
    # The stack's collateral is refused to another request: it waits.
    other = kit.core.new_request(kit.now, "v", NOBODY, {"board": "psu"}).id
    assert kit.core.request(other).state is RequestState.WAITING
    kit.core.close_request(kit.now, request)
    kit.answer_calls()
    assert kit.core.request(other).state is RequestState.IN_PROGRESS


def test_a_partial_group_leaves_the_other_profiles_free(kit: CoreKit) -> None:
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab1")
    kit.add_worker("s1", {"board": "server"}, host="lab9")
    profiles = [*PAIR, ("server", {"board": "server"})]
    request = ask(kit, (Colocation(("relay", "dut"), Placement.HOST),), profiles)
    assert boards_of(kit, request) == ["p1", "r1", "s1"]
    assert kit.core.request(request).together == (Colocation(("relay", "dut"), Placement.HOST),)


def test_two_groups_each_find_their_own_host(kit: CoreKit) -> None:
    profiles = [(f"{kind}{n}", {"board": kind}) for n in (1, 2) for kind in ("phone", "relay")]
    kit.add_worker("a-phone", {"board": "phone"}, host="a")
    kit.add_worker("b-relay", {"board": "relay"}, host="b")
    kit.add_worker("c-phone", {"board": "phone"}, host="c")
    kit.add_worker("c-relay", {"board": "relay"}, host="c")
    kit.add_worker("d-phone", {"board": "phone"}, host="d")
    kit.add_worker("d-relay", {"board": "relay"}, host="d")
    groups = (
        Colocation(("phone1", "relay1"), Placement.HOST),
        Colocation(("phone2", "relay2"), Placement.HOST),
    )
    request = ask(kit, groups, profiles)
    chosen = boards_of(kit, request)
    assert {chosen[0][0], chosen[1][0]} == {chosen[0][0]} and chosen[2][0] == chosen[3][0]
    assert {chosen[0][0], chosen[2][0]} == {"c", "d"}


@pytest.mark.parametrize(
    ("together", "fix"),
    [
        ((Colocation(("dut", "nope"), Placement.HOST),), "'nope', which the request has not"),
        ((Colocation(("dut",), Placement.HOST),), "only one profile"),
        (
            (Colocation(("dut", "relay"), Placement.HOST), Colocation((), Placement.STACK)),
            "in one group at most",
        ),
        ((Colocation(("dut", "dut"), Placement.HOST),), "group 0 names profile 'dut' twice"),
        ((Colocation((), Placement.HOST),), None),
    ],
)
def test_bad_groups_are_refused_saying_what_to_fix(
    kit: CoreKit, together: tuple[Colocation, ...], fix: str | None
) -> None:
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab1")
    if fix is None:
        assert kit.core.request(ask(kit, together)).state is RequestState.IN_PROGRESS
        return
    before = kit.core.last_request_id
    with pytest.raises(InvalidArgument, match=fix):
        ask(kit, together)
    assert kit.core.last_request_id == before


def test_groups_need_profiles_and_a_placement(kit: CoreKit) -> None:
    kit.add_worker("p1", {"board": "phone"})
    with pytest.raises(InvalidArgument, match="two or more profiles"):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "phone"}, together=ON_HOST)
    with pytest.raises(InvalidArgument, match="two or more profiles"):
        ask(kit, ON_HOST, [("dut", {"board": "phone"})])
    with pytest.raises(InvalidArgument, match="no placement"):
        ask(kit, (Colocation((), 0),))  # type: ignore[arg-type]
    # Names are needed to name a group's profiles, not for a group of every profile.
    unnamed = [("", {"board": "phone"}), ("", {"board": "relay"})]
    with pytest.raises(InvalidArgument, match="name the profiles"):
        ask(kit, (Colocation(("0", "1"), Placement.HOST),), unnamed)


def test_an_impossible_set_is_refused_at_once_and_busy_boards_with_no_wait(kit: CoreKit) -> None:
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab2")
    with pytest.raises(NoCapableWorker, match="on one host"):
        ask(kit)
    with pytest.raises(NoCapableWorker, match="on one stack"):
        ask(kit, IN_STACK)
    # accept_unsatisfiable queues it; it says why it waits.
    waiting = ask(kit, accept_unsatisfiable=True)
    reason = kit.core.pending_reason(kit.now, waiting)
    assert reason is not None and reason.code is PendingCode.NO_MATCHING_BOARD
    assert "co-located" in reason.message
    # A second relay on lab1, but taken: no_wait answers Busy, nothing is queued.
    kit.add_worker("r2", {"board": "relay"}, host="lab1", idle=False)
    assert kit.core.request(waiting).state is RequestState.WAITING
    with pytest.raises(Busy, match="on one host"):
        ask(kit, no_wait=True)
    kit.core.set_state(kit.now, "r2", WorkerState.IDLE)
    kit.answer_calls()
    assert boards_of(kit, waiting) == ["p1", "r2"]


def test_the_pending_reason_counts_only_co_located_sets(kit: CoreKit) -> None:
    """A free phone and relay on two hosts make no set: lab1's relay is out of service."""
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab1", idle=False)
    kit.add_worker("r2", {"board": "relay"}, host="lab2")
    waiting = ask(kit)
    assert kit.core.request(waiting).state is RequestState.WAITING
    reason = kit.core.pending_reason(kit.now, waiting)
    assert reason is not None and reason.code is PendingCode.BOARDS_UNAVAILABLE, reason
    # Without the group the same boards serve it at once.
    loose = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PAIR).id
    assert boards_of(kit, loose) == ["p1", "r2"]


def test_a_waiting_group_whose_last_host_goes_becomes_invalid(kit: CoreKit) -> None:
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab1")
    kit.add_worker("r2", {"board": "relay"}, host="lab2")
    busy = kit.core.new_request(kit.now, "v", NOBODY, {"board": "phone"}).id
    waiting = ask(kit)
    assert kit.core.request(waiting).state is RequestState.WAITING
    reason = kit.core.pending_reason(kit.now, waiting)
    assert reason is not None and reason.code is PendingCode.WAITING_FOR_SET
    # r2 goes: lab1 still makes a set.
    kit.core.set_state(kit.now, "r2", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.deregister(kit.now, "r2")
    assert kit.core.request(waiting).state is RequestState.WAITING
    # r1 goes: no host has both; the request is INVALID, the one-board request runs on.
    kit.core.set_state(kit.now, "r1", WorkerState.MAINTENANCE)
    kit.answer_calls()
    kit.core.deregister(kit.now, "r1")
    assert state_of(kit, waiting) is RequestState.INVALID
    assert kit.core.request(busy).state is RequestState.IN_PROGRESS


def test_a_new_stack_serves_a_waiting_stack_group(kit: CoreKit) -> None:
    """Found by the state machine: the request waited beside a whole idle stack."""
    kit.add_worker("p1", {"board": "phone"})
    kit.add_worker("r1", {"board": "relay"})
    waiting = ask(kit, IN_STACK, accept_unsatisfiable=True)
    kit.core.create_stack(kit.now, "bench", ["p1", "r1"])
    assert boards_of(kit, waiting) == ["p1", "r1"]


def test_a_waiting_stack_group_becomes_invalid_when_its_stack_is_deleted(kit: CoreKit) -> None:
    kit.add_worker("p1", {"board": "phone"})
    kit.add_worker("r1", {"board": "relay"})
    kit.core.create_stack(kit.now, "bench", ["p1", "r1"])
    busy = kit.core.new_request(kit.now, "v", NOBODY, {"board": "phone"}).id
    waiting = ask(kit, IN_STACK)
    assert kit.core.request(waiting).state is RequestState.WAITING
    kit.core.delete_stack(kit.now, "bench")
    assert state_of(kit, waiting) is RequestState.INVALID
    assert kit.core.request(busy).state is RequestState.IN_PROGRESS


def test_a_worker_moving_to_another_host_is_found_there(kit: CoreKit) -> None:
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab2")
    waiting = ask(kit, accept_unsatisfiable=True)
    kit.core.register(
        kit.now, {"UUID": "r1", "board": "relay"}, "lab1:7175", "r1:22", instance_id="i1"
    )
    assert boards_of(kit, waiting) == ["p1", "r1"]


def test_reservations_of_a_group_stay_on_one_host(kit: CoreKit) -> None:
    """A freed phone on lab2 is not reserved for a group whose relay is reserved on lab1."""
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab1")
    kit.add_worker("p2", {"board": "phone"}, host="lab2")
    hold = kit.core.new_request(kit.now, "v", NOBODY, {"board": "phone"}, priority=5).id
    hold2 = kit.core.new_request(kit.now, "v", NOBODY, {"board": "phone"}, priority=5).id
    assert set(boards_of(kit, hold) + boards_of(kit, hold2)) == {"p1", "p2"}
    waiting = ask(kit, priority=1)
    reserved = kit.core.reservation(kit.now, waiting)
    assert reserved is not None and reserved[0] == ("r1",)
    lab2 = hold if boards_of(kit, hold) == ["p2"] else hold2
    kit.core.close_request(kit.now, lab2)
    kit.answer_calls()
    reserved = kit.core.reservation(kit.now, waiting)
    assert reserved is not None and "p2" not in reserved[0]
    lab1 = hold2 if lab2 == hold else hold
    kit.core.close_request(kit.now, lab1)
    kit.answer_calls()
    assert boards_of(kit, waiting) == ["p1", "r1"]


def test_groups_survive_a_restore(kit: CoreKit) -> None:
    kit.add_worker("p1", {"board": "phone"}, host="lab1")
    kit.add_worker("r1", {"board": "relay"}, host="lab2")
    waiting = ask(kit, accept_unsatisfiable=True)
    kit.add_worker("r2", {"board": "relay"}, host="lab1", idle=False)
    kit.drain()
    snapshot = Snapshot(
        requests=list(kit.core.live_requests()),
        workers=kit.core.workers(),
        last_request_id=kit.core.last_request_id,
    )
    restored = Core.restore(snapshot, kit.now)
    assert restored.request(waiting).together == ON_HOST
    assert restored.request(waiting).state is RequestState.WAITING
    restored.set_state(kit.now, "r2", WorkerState.IDLE)
    kit.core = restored
    kit.answer_calls()
    assert boards_of(kit, waiting) == ["p1", "r2"]


# --------------------------------------------------------------- the set finder


def test_many_groups_on_many_small_hosts_cost_a_bounded_search() -> None:
    """Pairs that must each be on one host, from twelve hosts of two boards: with more
    pairs than hosts, every assignment of places would be tried (12! of them); the search
    stops after MAX_PLACES_SEARCHED places and says no set."""
    core = Core()
    index = WorkerIndex()
    for host in range(12):
        for n in range(2):
            core.register(0.0, {"UUID": f"w{host}-{n}", "kind": "x"}, f"h{host}:1", "s:22")
    core.register(0.0, {"UUID": "lone", "kind": "y"}, "h99:1", "s:22")
    for view in core.workers():
        index.add(core._workers[view.uuid])
    needs = [need_of(cap_pairs({"kind": "x"}))] * 16 + [need_of(cap_pairs({"kind": "z"}))]
    groups = [((2 * g, 2 * g + 1), Placement.HOST) for g in range(8)]
    looked = 0

    def members_at(placement: Placement, place: str) -> list[Worker]:
        nonlocal looked
        looked += 1
        return list(core._members_at(placement, place))

    capable, candidate = from_index(index, NOBODY, None)
    # A profile nobody serves: no set, found out before any place is looked at.
    assert find_set(needs, groups, capable, candidate, members_at) is None
    assert looked == 0
    # Eight pairs and one more board: 17 of the 24 boards, a set exists.
    needs = [need_of(cap_pairs({"kind": "x"}))] * 17
    found = find_set(needs, groups, capable, candidate, members_at)
    assert found is not None and len({w.uuid for w in found}) == 17
    # Thirteen pairs on twelve hosts: none; the search gives up within its bound.
    looked = 0
    pairs = [((2 * g, 2 * g + 1), Placement.HOST) for g in range(13)]
    needs = [need_of(cap_pairs({"kind": "x"}))] * 26
    assert find_set(needs, pairs, capable, candidate, members_at) is None
    assert looked <= MAX_PLACES_SEARCHED + 1


def brute_force(
    boards: list[tuple[str, str, str]], kinds: list[str], groups: list[tuple[int, ...]]
) -> bool:
    """Whether some distinct boards serve the kinds with each group on one host."""
    for chosen in itertools.permutations(range(len(boards)), len(kinds)):
        if any(boards[b][1] != kind for b, kind in zip(chosen, kinds, strict=True)):
            continue
        if all(len({boards[chosen[i]][2] for i in group}) == 1 for group in groups):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["h1", "h2", "h3"])),
        min_size=1,
        max_size=7,
    ),
    st.lists(st.sampled_from("abc"), min_size=2, max_size=4),
    st.data(),
)
def test_the_finder_finds_a_co_located_set_exactly_when_one_exists(
    farm: list[tuple[str, str]], kinds: list[str], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(range(len(kinds))))
    cut = data.draw(st.integers(0, len(kinds)))
    groups = [g for g in (tuple(sorted(order[:cut])), tuple(sorted(order[cut:]))) if len(g) > 1]
    core = Core()
    index = WorkerIndex()
    boards = [(f"w{n}", kind, host) for n, (kind, host) in enumerate(farm)]
    for uuid, kind, host in boards:
        core.register(0.0, {"UUID": uuid, "kind": kind}, f"{host}:1", "s:22")
    for view in core.workers():
        index.add(core._workers[view.uuid])
    needs = [need_of(cap_pairs({"kind": kind})) for kind in kinds]
    capable, candidate = from_index(index, NOBODY, None)
    found = find_set(
        needs, [(g, Placement.HOST) for g in groups], capable, candidate, core._members_at
    )
    assert (found is not None) == brute_force(boards, kinds, groups)
    if found is not None:
        assert len({w.uuid for w in found}) == len(kinds)
        for group in groups:
            assert len({found[i].dryad_address for i in group}) == 1
