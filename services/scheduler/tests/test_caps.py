"""Caps with alternatives (`os=linux|android`) and list-valued board caps
(`circuits=usb.pc.vcc,handset.battery`): their meaning, their checks, and indexes that
find exactly what a scan of everything would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from boruta_scheduler.core import Core, Snapshot
from boruta_scheduler.core.caps import Need, board_items, check_request_caps, need_of
from boruta_scheduler.core.model import Request, Worker, cap_pairs
from boruta_scheduler.core.queue import RequestQueue
from boruta_scheduler.core.workers import WorkerIndex
from boruta_scheduler.errors import Busy, InvalidArgument, NoCapableWorker
from boruta_scheduler.types import RequestState, WorkerState
from core_kit import T0, CoreKit, caps_match
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

NOBODY = frozenset[str]()


@pytest.fixture
def kit() -> CoreKit:
    return CoreKit()


def worker_of(kit: CoreKit, request_id: int) -> str:
    job = kit.core.request(request_id).job
    assert job is not None, f"request {request_id} has no job"
    return job.worker_uuid


# ------------------------------------------------------------------ meaning


def test_an_alternative_matches_a_board_with_any_of_them(kit: CoreKit) -> None:
    kit.add_worker("droid", {"os": "android"})
    kit.add_worker("tux", {"os": "linux"})
    kit.add_worker("win", {"os": "windows"})
    first = kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux|android"})
    second = kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux|android"})
    third = kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux|android"})
    assert {worker_of(kit, first.id), worker_of(kit, second.id)} == {"droid", "tux"}
    assert third.state is RequestState.WAITING
    # The board that frees takes the waiting request; windows never does.
    freed = worker_of(kit, first.id)
    kit.core.close_request(kit.now, first.id)
    kit.answer_calls()
    assert worker_of(kit, third.id) == freed
    assert kit.core.worker("win").state is WorkerState.IDLE


def test_a_list_valued_cap_serves_any_subset_of_its_items(kit: CoreKit) -> None:
    kit.add_worker("relay", {"circuits": "usb.pc.vcc,handset.battery,sim"})
    for asked in ("usb.pc.vcc,handset.battery", "handset.battery,usb.pc.vcc", "sim", "sim,sim"):
        r = kit.core.new_request(kit.now, "u", NOBODY, {"circuits": asked})
        assert worker_of(kit, r.id) == "relay", asked
        kit.core.close_request(kit.now, r.id)
        kit.answer_calls()
    with pytest.raises(NoCapableWorker, match=r"circuits=usb\.pc\.vcc,handset\.usb"):
        kit.core.new_request(kit.now, "u", NOBODY, {"circuits": "usb.pc.vcc,handset.usb"})


def test_spaces_around_a_boards_items_do_not_count(kit: CoreKit) -> None:
    kit.add_worker("relay", {"circuits": "usb.pc.vcc, handset.battery"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"circuits": "handset.battery"})
    assert worker_of(kit, r.id) == "relay"
    # What the board registered is what it shows.
    assert kit.core.worker("relay").caps["circuits"] == "usb.pc.vcc, handset.battery"


def test_values_without_separators_still_mean_equality(kit: CoreKit) -> None:
    kit.add_worker("w1", {"board": "rpi4", "name": " padded "})
    with pytest.raises(NoCapableWorker):
        kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi"})
    with pytest.raises(NoCapableWorker):
        kit.core.new_request(kit.now, "u", NOBODY, {"name": "padded"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"board": "rpi4", "name": " padded "})
    assert worker_of(kit, r.id) == "w1"


def test_alternatives_of_item_lists(kit: CoreKit) -> None:
    kit.add_worker("vcc-usb", {"circuits": "usb.pc.vcc,handset.usb"})
    kit.add_worker("vcc-only", {"circuits": "usb.pc.vcc"})
    asked = {"circuits": "usb.pc.vcc,handset.battery|usb.pc.vcc,handset.usb"}
    r = kit.core.new_request(kit.now, "u", NOBODY, asked)
    assert worker_of(kit, r.id) == "vcc-usb"
    assert kit.core.request(r.id).caps == asked  # kept as given


def test_every_key_must_be_met(kit: CoreKit) -> None:
    kit.add_worker("a", {"os": "linux", "board": "rpi4"})
    kit.add_worker("b", {"os": "android", "board": "odroid"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux|android", "board": "odroid|x"})
    assert worker_of(kit, r.id) == "b"
    with pytest.raises(NoCapableWorker):
        kit.core.new_request(kit.now, "u", NOBODY, {"os": "android|tizen", "board": "rpi4|x"})


def test_the_least_capable_board_counts_its_items(kit: CoreKit) -> None:
    kit.add_worker("w-a", {"circuits": "vcc,battery,usb"})
    kit.add_worker("w-b", {"circuits": "vcc,battery"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"circuits": "vcc"})
    assert worker_of(kit, r.id) == "w-b"


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("linux||android", "empty alternative"),
        ("|linux", "empty alternative"),
        ("linux|", "empty alternative"),
        ("|", "empty alternative"),
        ("vcc,,battery", "empty item"),
        (",vcc", "empty item"),
        ("vcc,", "empty item"),
        ("vcc,|battery", "empty item"),
        ("linux | android", "spaces"),
        ("vcc, battery", "spaces"),
        (" vcc,battery", "spaces"),
    ],
)
def test_malformed_alternatives_and_lists_are_refused(
    kit: CoreKit, value: str, message: str
) -> None:
    kit.add_worker("w1", {"os": "linux"})
    kit.drain()
    with pytest.raises(InvalidArgument, match=message) as refused:
        kit.core.new_request(kit.now, "u", NOBODY, {"os": value}, accept_unsatisfiable=True)
    assert f"caps value {value!r} of 'os'" in str(refused.value)
    assert not kit.drain().durable
    assert kit.core.waiting_count == 0


def test_a_board_value_is_never_refused_for_its_separators(kit: CoreKit) -> None:
    kit.add_worker("w1", {"circuits": "a,,b, c,", "odd": "x|y"})
    r = kit.core.new_request(kit.now, "u", NOBODY, {"circuits": "a,b,c"})
    assert worker_of(kit, r.id) == "w1"


# ------------------------------------------------------------------ INVALID and BUSY


def test_no_capable_worker_and_busy_with_alternatives(kit: CoreKit) -> None:
    kit.add_worker("tux", {"os": "linux"})
    kit.drain()
    with pytest.raises(NoCapableWorker, match=r"os=android\|tizen"):
        kit.core.new_request(kit.now, "u", NOBODY, {"os": "android|tizen"})
    first = kit.core.new_request(kit.now, "u", NOBODY, {"os": "android|linux"}, no_wait=True)
    assert first.state is RequestState.IN_PROGRESS
    kit.drain()
    with pytest.raises(Busy, match=r"os=android\|linux"):
        kit.core.new_request(kit.now, "u", NOBODY, {"os": "android|linux"}, no_wait=True)
    assert not kit.drain().durable


def test_a_request_becomes_invalid_when_its_last_alternative_leaves(kit: CoreKit) -> None:
    kit.add_worker("tux", {"os": "linux"}, idle=False)
    kit.add_worker("droid", {"os": "android"}, idle=False)
    kit.add_worker("relay", {"circuits": "vcc,battery"}, idle=False)
    either = kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux|android"})
    wired = kit.core.new_request(kit.now, "u", NOBODY, {"circuits": "battery"})
    kit.core.deregister(kit.now, "tux")
    assert kit.core.request(either.id).state is RequestState.WAITING
    kit.core.deregister(kit.now, "droid")
    kit.core.register(kit.now, {"UUID": "relay", "circuits": "vcc"}, "relay.lab:1", "relay.lab:22")
    states = {v.id: v.state for v in kit.drain().requests}
    assert states == {either.id: RequestState.INVALID, wired.id: RequestState.INVALID}


def test_a_waiting_request_with_alternatives_survives_a_restore(kit: CoreKit) -> None:
    kit.add_worker("tux", {"os": "linux"})
    kit.add_worker("relay", {"circuits": "vcc,battery"})
    running = kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux|android"})
    wired = kit.core.new_request(kit.now, "u", NOBODY, {"circuits": "battery,vcc"})
    waiting = kit.core.new_request(kit.now, "u", NOBODY, {"os": "android|linux"})
    assert waiting.state is RequestState.WAITING
    kit.drain()
    snapshot = Snapshot(list(kit.core.live_requests()), kit.core.workers(), waiting.id)
    restored = Core.restore(snapshot, kit.now, kit.core.policy)
    restored.close_request(kit.now, running.id)
    restored.drain()
    worker = restored.worker("tux")
    assert worker.state is WorkerState.PREPARE
    assert restored.request(wired.id).state is RequestState.IN_PROGRESS


# ------------------------------------------------------------------ indexes


def test_an_event_looks_only_at_candidates() -> None:
    """A new request walks a handful of workers and a freed worker a handful of buckets,
    however many other workers idle and requests wait (with alternatives and lists too):
    counted where the indexes hand out what is then checked one by one (Core.index_visits)."""

    def event_costs(others: int) -> tuple[int, int]:
        kit = CoreKit()
        for i in range(others):
            kit.add_worker(f"other{i}", {"os": f"os{i}", "circuits": f"c{i},vcc{i}"})
            kit.core.new_request(kit.now, "u", NOBODY, {"os": f"os{i}|none"})
            for asked in (f"c{i}", f"x{i}|y{i}", f"c{i},vcc{i}|z{i}"):
                kit.core.new_request(
                    kit.now, "u", NOBODY, {"circuits": asked}, accept_unsatisfiable=True
                )
        kit.add_worker("relay", {"os": "linux", "circuits": "vcc,battery"}, idle=False)
        kit.answer_calls()
        before = kit.core.index_visits
        r = kit.core.new_request(kit.now, "u", NOBODY, {"os": "linux|android"})
        kit.core.new_request(kit.now, "u", NOBODY, {"circuits": "battery,vcc|usb"})
        arrive = kit.core.index_visits - before
        before = kit.core.index_visits
        kit.core.set_state(kit.now, "relay", WorkerState.IDLE)
        kit.answer_calls()
        free = kit.core.index_visits - before
        assert kit.core.request(r.id).state is RequestState.IN_PROGRESS
        return arrive, free

    small, large = event_costs(5), event_costs(200)
    assert small == large
    assert max(large) <= 4, large


boards_keys = ("os", "circuits", "board")
items = st.sampled_from(("a", "b", "c", "d"))


@st.composite
def board_caps(draw: st.DrawFn) -> dict[str, str]:
    caps = {}
    for key in draw(st.sets(st.sampled_from(boards_keys))):
        chosen = draw(st.lists(items, min_size=1, max_size=3))
        joint = draw(st.sampled_from((",", ", ")))
        caps[key] = joint.join(chosen)
    return caps


@st.composite
def asked_caps(draw: st.DrawFn) -> dict[str, str]:
    caps = {}
    for key in draw(st.sets(st.sampled_from(boards_keys), max_size=2)):
        alternatives = draw(
            st.lists(st.lists(items, min_size=1, max_size=2), min_size=1, max_size=3)
        )
        caps[key] = "|".join(",".join(alt) for alt in alternatives)
    return caps


group_sets = st.sampled_from((NOBODY, frozenset({"g1"}), frozenset({"g2"})))
# More boards than LEAP_AFTER, so that walks leap as well as step.
CHURN_UUIDS = tuple(f"w{i:02d}" for i in range(24))


def open_to(worker: Worker, owner_groups: frozenset[str]) -> bool:
    return not worker.groups or not worker.groups.isdisjoint(owner_groups)


def indexed(
    boards: list[tuple[dict[str, str], frozenset[str]]],
) -> Iterator[tuple[Worker, dict[str, str]]]:
    for i, (caps, groups) in enumerate(boards):
        worker = Worker(f"w{i:02d}", cap_pairs(caps), groups, WorkerState.IDLE, "d:1", "s:22", T0)
        yield worker, caps


@settings(max_examples=300, deadline=None)
@given(
    boards=st.lists(st.tuples(board_caps(), group_sets), max_size=12),
    asks=st.lists(st.tuples(asked_caps(), group_sets), min_size=1, max_size=12),
)
def test_indexes_find_what_a_scan_finds(
    boards: list[tuple[dict[str, str], frozenset[str]]],
    asks: list[tuple[dict[str, str], frozenset[str]]],
) -> None:
    """WorkerIndex (a new request's view) and RequestQueue (a freed worker's) against the
    reference rule applied to every pair of board and request."""
    index = WorkerIndex()
    workers = list(indexed(boards))
    for worker, _ in workers:
        index.add(worker)
    queue = RequestQueue()
    requests = []
    for n, (asked, owner_groups) in enumerate(asks, start=1):
        check_request_caps(cap_pairs(asked))
        request = Request(n, "u", owner_groups, cap_pairs(asked), 8, T0, T0 + 1, T0)
        queue.add(request)
        queue.set_ready(request, True)
        requests.append((request, asked))

    def scan(members: list[tuple[Worker, dict[str, str]]], request: Request) -> list[str]:
        asked = dict(requests[request.id - 1][1])
        return [
            w.uuid
            for w, caps in sorted(members, key=lambda wc: wc[0].rank)
            if caps_match(caps, asked) and open_to(w, request.owner_groups)
        ]

    for request, asked in requests:
        expected = scan(workers, request)
        need = need_of(request.sig)
        assert [w.uuid for w in index.capable(need, request.owner_groups)] == expected, asked
        firsts = index.firsts(need, request.owner_groups, 2)
        assert [w.uuid for w in firsts] == expected[:2], asked
        walked = index.capable_remembered(need, request.owner_groups, 2)
        assert [w.uuid for w in walked] == expected, asked
    if workers:
        # firsts() forgets what it remembered once a member leaves, and again once it is back.
        gone = workers[0][0]
        index.remove(gone)
        for request, asked in requests:
            firsts = index.firsts(need_of(request.sig), request.owner_groups, 2)
            assert [w.uuid for w in firsts] == scan(workers[1:], request)[:2], asked
        index.add(gone)
        for request, asked in requests:
            firsts = index.firsts(need_of(request.sig), request.owner_groups, 2)
            assert [w.uuid for w in firsts] == scan(workers, request)[:2], asked
    for worker, caps in workers:
        servable = {
            r.id
            for r, asked in requests
            if caps_match(caps, asked) and open_to(worker, r.owner_groups)
        }
        buckets = queue.buckets_servable_by(worker.items, worker.groups)
        assert len(buckets) == len(set(buckets)), "a bucket was found twice"
        found = {r.id for b in buckets for r in b.waiting}
        assert found == servable, caps
        best = queue.best_for(worker.items, worker.groups)
        assert (best.id if best else None) == min(servable, default=None)


class IndexChurn(RuleBasedStateMachine):
    """A WorkerIndex whose members come, go and change caps or groups (out and back in, as
    the core reindexes them) between asks: its walks, the first candidates it remembers
    and the lists of holders it refills find what a scan of the members finds."""

    def __init__(self) -> None:
        super().__init__()
        self.index = WorkerIndex()
        self.members: dict[str, tuple[Worker, dict[str, str]]] = {}

    @rule(uuid=st.sampled_from(CHURN_UUIDS), caps=board_caps(), groups=group_sets)
    def add(self, uuid: str, caps: dict[str, str], groups: frozenset[str]) -> None:
        if uuid not in self.members:
            worker = Worker(uuid, cap_pairs(caps), groups, WorkerState.IDLE, "d:1", "s:22", T0)
            self.members[uuid] = (worker, caps)
            self.index.add(worker)

    @rule(uuid=st.sampled_from(CHURN_UUIDS))
    def remove(self, uuid: str) -> None:
        if uuid in self.members:
            self.index.remove(self.members.pop(uuid)[0])

    @rule(uuid=st.sampled_from(CHURN_UUIDS), caps=board_caps(), groups=group_sets)
    def change(self, uuid: str, caps: dict[str, str], groups: frozenset[str]) -> None:
        if uuid in self.members:
            worker = self.members[uuid][0]
            self.index.remove(worker)
            worker.caps_sig = cap_pairs(caps)
            worker.items = board_items(worker.caps_sig)
            worker.groups = groups
            worker.rank = worker.compute_rank()
            self.members[uuid] = (worker, caps)
            self.index.add(worker)

    @rule(asked=asked_caps(), owner_groups=group_sets, limit=st.integers(1, 5))
    def ask(self, asked: dict[str, str], owner_groups: frozenset[str], limit: int) -> None:
        need = need_of(cap_pairs(asked))
        expected = [
            w.uuid
            for w, caps in sorted(self.members.values(), key=lambda wc: wc[0].rank)
            if caps_match(caps, asked) and open_to(w, owner_groups)
        ]
        assert [w.uuid for w in self.index.capable(need, owner_groups)] == expected, asked
        firsts = self.index.firsts(need, owner_groups, limit)
        assert [w.uuid for w in firsts] == expected[:limit], asked
        walked = self.index.capable_remembered(need, owner_groups, limit)
        assert [w.uuid for w in walked] == expected, asked

    @invariant()
    def holders_counted(self) -> None:
        held = Counter(pair for w, _ in self.members.values() for pair in w.items)
        for pair, holding in held.items():
            assert self.index.holders(pair) == holding, pair


IndexChurn.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestIndexChurn = IndexChurn.TestCase


def test_board_items_keep_plain_caps_as_they_are() -> None:
    plain = cap_pairs({"board": "rpi4", "os": "linux"})
    assert board_items(plain) is plain
    assert need_of(plain) == Need(plain)
