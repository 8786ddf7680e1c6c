"""Unit tests of requests of several boards (profiles) in the pure core, and of its matcher."""

from __future__ import annotations

import itertools

import pytest
from boruta_scheduler.core import CloseTunnel, Core, OpenTunnel, Snapshot
from boruta_scheduler.core.idempotency import arguments_hash
from boruta_scheduler.core.matching import match, shortlist
from boruta_scheduler.errors import Busy, InvalidArgument, NoCapableWorker, RequestNotFound
from boruta_scheduler.types import Access, RequestState, WorkerState
from core_kit import CoreKit
from hypothesis import given
from hypothesis import strategies as st

NOBODY = frozenset[str]()
PHONE_AND_RELAY = [("dut", {"board": "phone"}), ("relay", {"board": "relay"})]


@pytest.fixture
def kit() -> CoreKit:
    return CoreKit()


def farm(kit: CoreKit, *boards: tuple[str, str], idle: bool = True) -> None:
    for uuid, board in boards:
        kit.add_worker(uuid, {"board": board}, idle=idle)


def boards_of(kit: CoreKit, request_id: int) -> list[str]:
    return [job.worker_uuid for job in kit.core.request(request_id).all_jobs]


# ---------------------------------------------------------------------- matcher


def brute_force(candidates: list[list[int]]) -> bool:
    pools = [set(c) for c in candidates]
    everyone = sorted(set().union(*pools)) if pools else []
    return any(
        all(w in pool for w, pool in zip(choice, pools, strict=True))
        for choice in itertools.permutations(everyone, len(pools))
    )


@given(st.lists(st.lists(st.integers(0, 6), unique=True, max_size=6), min_size=1, max_size=5))
def test_match_finds_distinct_candidates_exactly_when_some_exist(
    candidates: list[list[int]],
) -> None:
    found = match(candidates)
    assert (found is not None) == brute_force(candidates)
    if found is not None:
        assert len(set(found)) == len(found) == len(candidates)
        assert all(w in pool for w, pool in zip(found, candidates, strict=True))
    # A shortlist of as many candidates as there are profiles loses no solution.
    short = [shortlist(iter(pool), len(candidates)) for pool in candidates]
    assert (match(short) is not None) == (found is not None)


def test_match_keeps_each_profile_on_its_first_free_choice() -> None:
    # The relay profile could take "a", but takes "c", its own first free choice, rather
    # than moving the first profile off "a".
    assert match([["a", "b"], ["a", "c"]]) == ["a", "c"]
    # Only moving the first profile makes room: it moves to its next choice.
    assert match([["a", "b"], ["a"]]) == ["b", "a"]
    assert match([["a"], ["a"]]) is None


# ---------------------------------------------------------------- request life


def test_two_boards_are_taken_together_in_profile_order(kit: CoreKit) -> None:
    farm(kit, ("r1", "relay"), ("p1", "phone"))
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    assert view.state is RequestState.IN_PROGRESS
    assert [p.name for p in view.profiles] == ["dut", "relay"]
    assert [j.worker_uuid for j in view.jobs] == ["p1", "r1"]
    assert view.job == view.jobs[0]
    assert all(j.access is not None for j in view.jobs)
    assert len({j.access for j in view.jobs}) == 2
    tunnels = kit.drain().tunnels
    assert tunnels == [
        OpenTunnel(view.id, "p1.lab:22", 0, 0),
        OpenTunnel(view.id, "r1.lab:22", 0, 1),
    ]
    for uuid in ("p1", "r1"):
        assert kit.core.worker(uuid).state is WorkerState.RUNNING
        assert kit.core.worker(uuid).request_id == view.id


def test_no_board_is_held_while_another_is_missing(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"))
    farm(kit, ("r1", "relay"), idle=False)
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    assert view.state is RequestState.WAITING and view.job is None
    assert kit.core.worker("p1").state is WorkerState.IDLE
    # The phone is reserved for the pair, but the relay is out of service, so the pair has
    # no expected start and a one-board request may use the phone meanwhile (backfill).
    single = kit.core.new_request(kit.now, "u", NOBODY, {"board": "phone"})
    assert single.state is RequestState.IN_PROGRESS
    kit.core.close_request(kit.now, single.id)
    kit.core.set_state(kit.now, "r1", WorkerState.IDLE)
    kit.answer_calls()  # the relay and the phone both come back IDLE
    assert kit.core.request(view.id).state is RequestState.IN_PROGRESS
    assert boards_of(kit, view.id) == ["p1", "r1"]


def test_the_same_board_never_serves_two_profiles(kit: CoreKit) -> None:
    kit.add_worker("both", {"board": "phone", "relay": "yes"})
    profiles = [("a", {"board": "phone"}), ("b", {"relay": "yes"})]
    with pytest.raises(NoCapableWorker, match="a different one for each of the 2 profiles"):
        kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=profiles)
    kit.add_worker("relay", {"relay": "yes"})
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=profiles)
    assert [j.worker_uuid for j in view.jobs] == ["both", "relay"]


def test_matching_moves_a_profile_to_make_room(kit: CoreKit) -> None:
    # Least capable first gives "any" the plain board, which only it suits "usb"; the
    # matching moves "any" to the other board instead of giving up.
    kit.add_worker("plain", {"board": "phone", "usb": "a"})
    kit.add_worker("rich", {"board": "phone", "cam": "y", "extra": "1"})
    profiles = [("any", {"board": "phone"}), ("usb", {"usb": "a"})]
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=profiles)
    assert [j.worker_uuid for j in view.jobs] == ["rich", "plain"]
    kit.core.close_request(kit.now, view.id)
    kit.answer_calls()
    # With no conflict each profile keeps its least capable board.
    profiles = [("any", {"board": "phone"}), ("cam", {"cam": "y"})]
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=profiles)
    assert [j.worker_uuid for j in view.jobs] == ["plain", "rich"]


def test_no_wait_is_busy_when_the_set_exists_but_is_not_free(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"))
    farm(kit, ("r1", "relay"), idle=False)
    with pytest.raises(Busy, match="2 profiles"):
        kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY, no_wait=True)
    assert kit.core.live_count == 0
    assert not kit.drain().requests


def test_groups_of_the_owner_apply_to_every_board(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"))
    kit.core.set_groups(kit.now, "r1", frozenset({"lab"}))
    with pytest.raises(NoCapableWorker, match=r"open to your groups \(none\)"):
        kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    view = kit.core.new_request(kit.now, "u", frozenset({"lab"}), {}, profiles=PHONE_AND_RELAY)
    assert view.state is RequestState.IN_PROGRESS


def test_close_releases_every_board(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"))
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    kit.drain()
    kit.core.close_request(kit.now, view.id)
    changes = kit.drain()
    assert changes.tunnels == [CloseTunnel(view.id, 0), CloseTunnel(view.id, 1)]
    done = [r for r in changes.requests if r.id == view.id][-1]
    assert done.state is RequestState.DONE
    assert all(job.access is None for job in done.jobs)
    assert {kit.core.worker(u).state for u in ("p1", "r1")} == {WorkerState.PREPARE}
    kit.answer_calls()
    assert {kit.core.worker(u).state for u in ("p1", "r1")} == {WorkerState.IDLE}


@pytest.mark.parametrize("how", ["set_fail", "maintenance", "heartbeat", "tunnel"])
def test_one_failed_board_fails_the_request_and_frees_the_others(kit: CoreKit, how: str) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"))
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    kit.drain()
    if how == "set_fail":
        kit.core.set_fail(kit.now, "r1", "relay stuck")
    elif how == "maintenance":
        kit.core.set_state(kit.now, "r1", WorkerState.MAINTENANCE, "rewire")
    elif how == "heartbeat":
        kit.silent.add("r1")
        kit.advance(kit.core.policy.heartbeat_timeout + 1)
    else:
        kit.core.tunnel_failed(kit.now, view.id, "address in use", 1)
    with pytest.raises(RequestNotFound):
        kit.core.request(view.id)
    finished = [r for c in [*kit.changes, kit.drain()] for r in c.requests if r.id == view.id]
    assert finished[-1].state is RequestState.FAILED
    assert kit.core.worker("p1").state is WorkerState.PREPARE
    assert kit.core.worker("p1").request_id == 0
    assert kit.core.worker("r1").state is not WorkerState.RUNNING


def test_prolong_moves_every_job(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"))
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    kit.now += 100
    job = kit.core.prolong_access(kit.now, view.id)
    jobs = kit.core.request(view.id).jobs
    assert [j.timeout_at for j in jobs] == [job.timeout_at] * 2
    assert [j.prolong_count for j in jobs] == [1, 1]
    kit.advance(kit.core.policy.prolong_step + 1)
    with pytest.raises(RequestNotFound):
        kit.core.request(view.id)
    assert {kit.core.worker(u).state for u in ("p1", "r1")} == {WorkerState.PREPARE}


def test_deregistering_the_last_possible_set_invalidates_the_request(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"), ("r2", "relay"), idle=False)
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    kit.core.deregister(kit.now, "r2")
    assert kit.core.request(view.id).state is RequestState.WAITING
    kit.core.deregister(kit.now, "r1")
    with pytest.raises(RequestNotFound):
        kit.core.request(view.id)
    gone = [r for r in kit.drain().requests if r.id == view.id][-1]
    assert gone.state is RequestState.INVALID
    assert "r1 was deregistered" in gone.reason


def test_a_freed_worker_completes_a_waiting_set(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"))
    first = kit.core.new_request(kit.now, "u", NOBODY, {"board": "relay"})
    second = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    assert kit.core.request(second.id).state is RequestState.WAITING
    kit.core.close_request(kit.now, first.id)
    kit.answer_calls()
    assert boards_of(kit, second.id) == ["p1", "r1"]


def test_a_more_important_one_board_request_goes_first(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"))
    farm(kit, ("r1", "relay"))
    hold = kit.core.new_request(kit.now, "u", NOBODY, {"board": "relay"})
    multi = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY, priority=9)
    single = kit.core.new_request(kit.now, "u", NOBODY, {"board": "relay"}, priority=2)
    kit.core.close_request(kit.now, hold.id)
    kit.answer_calls()
    assert boards_of(kit, single.id) == ["r1"]
    assert kit.core.request(multi.id).state is RequestState.WAITING


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([], "1 to 16 boards"),
        ([("", {})] * 17, "1 to 16 boards"),
        ([("a", {}), ("a", {})], "given twice"),
        ([("a b", {})], "letters, digits"),
        ([("x" * 65, {})], "at most 64"),
        ([("a", {"board": "x||y"})], "profile a caps value"),
    ],
)
def test_bad_profiles_are_refused(
    kit: CoreKit, profiles: list[tuple[str, dict[str, str]]], message: str
) -> None:
    kit.add_worker("w1")
    with pytest.raises(InvalidArgument, match=message):
        if profiles:
            kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=profiles)
        else:
            kit.core.policy.check_profile_names([])


def test_caps_and_profiles_together_are_refused(kit: CoreKit) -> None:
    with pytest.raises(InvalidArgument, match="not both"):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "x"}, profiles=PHONE_AND_RELAY)


def test_one_unnamed_profile_is_a_request_of_caps(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "x"})
    view = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=[("", {"board": "x"})])
    assert view.profiles == () and view.jobs == ()
    assert dict(view.caps) == {"board": "x"} and view.job is not None
    named = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=[("dut", {"board": "x"})])
    assert [p.name for p in named.profiles] == ["dut"]


def test_restore_keeps_jobs_and_waiting_sets(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"))
    farm(kit, ("p2", "phone"), idle=False)
    running = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    kit.core.tunnel_opened(kit.now, running.id, 40001, 0)
    kit.core.tunnel_opened(kit.now, running.id, 40002, 1)
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    kit.drain()
    snapshot = Snapshot(list(kit.core.live_requests()), kit.core.workers(), 2)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    assert restored.request(running.id) == kit.core.request(running.id)
    assert restored.request(waiting.id) == kit.core.request(waiting.id)
    assert restored.drain().tunnels == [
        OpenTunnel(running.id, "p1.lab:22", 40001, 0),
        OpenTunnel(running.id, "r1.lab:22", 40002, 1),
    ]
    # The waiting set is still indexed: freeing the boards serves it.
    restored.close_request(kit.now, running.id)
    for call in restored.drain().calls:
        restored.dryad_call_succeeded(kit.now, call, Access("job", "KEY"))
    assert [j.worker_uuid for j in restored.request(waiting.id).jobs] == ["p1", "r1"]


def test_restore_fails_a_set_whose_board_is_gone_and_frees_the_rest(kit: CoreKit) -> None:
    farm(kit, ("p1", "phone"), ("r1", "relay"))
    running = kit.core.new_request(kit.now, "u", NOBODY, {}, profiles=PHONE_AND_RELAY)
    kit.drain()
    workers = [w for w in kit.core.workers() if w.uuid != "r1"]
    restored = Core.restore(
        Snapshot(list(kit.core.live_requests()), workers, 1), kit.now, kit.core.policy
    )
    with pytest.raises(RequestNotFound):
        restored.request(running.id)
    assert restored.worker("p1").state is WorkerState.PREPARE


def test_the_arguments_hash_covers_profiles_and_keeps_the_hashes_of_caps() -> None:
    def hashed(profiles: list[tuple[str, dict[str, str]]]) -> str:
        return arguments_hash({}, 0, None, None, False, False, 0.0, profiles)

    # A request of caps hashes as before profiles existed (stored hashes stay valid).
    assert hashed([]) == arguments_hash({}, 0, None, None, False, False, 0.0)
    # The hash of these arguments as stored before profiles existed.
    assert hashed([]) == "07c4bccbe83e7baa2ad59d718f7c853ebf68b83bf56c62b6207acb29a0524a9d"
    assert len({hashed([]), hashed(PHONE_AND_RELAY), hashed(PHONE_AND_RELAY[::-1])}) == 3
    renamed = [("phone", {"board": "phone"}), ("relay", {"board": "relay"})]
    assert hashed(renamed) != hashed(PHONE_AND_RELAY)
