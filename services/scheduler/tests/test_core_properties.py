"""Property test of the pure core: a random farm driven through every command.

A hypothesis state machine registers, serves, fails and removes workers from a small pool,
opens (some with a short job timeout, which may backfill boards kept for a set), updates,
prolongs and closes requests, answers dryad calls in any order (stale ones too), moves the
clock and now and then restarts the scheduler from what it drained (``Core.restore``).
After every single command it checks the scheduling invariants against the core's reads
and against a model built only from what ``Core.drain`` handed out:

1. a worker runs at most one job;
2. RUNNING workers and IN_PROGRESS requests point at each other, one to one;
3. a request is only ever matched, once ready, to a worker with its caps (alternatives and
   list-valued caps as docs/api.md says, checked on the strings) and open to its owner;
4. a match never passes over a more important ready request the worker could serve;
5. terminal requests never change again and are gone from the core;
6. no ready WAITING request could be served by IDLE workers (a request of several profiles:
   by a set of distinct IDLE workers, one per profile) not reserved for a more important
   request;
7. a request of several profiles holds all its boards or none: one job per profile, each on
   a worker that satisfies that profile, no worker in two jobs;
8. collateral is never given to another request: while a request runs on a worker of a
   stack, every other worker of the stack runs for that request or is held as its
   collateral, and a held IDLE worker is not counted idle;
9. workers are reserved only for ready waiting requests of several profiles, each for one,
   and run only less important requests' jobs (backfill) while reserved;
10. pending reasons agree with a brute-force count of the queue and with the farm;
11. board health: every failure is kept in the worker's record (time and reason, the
    latest 64); a worker in service that fails for the K-th time within the window is
    quarantined (MAINTENANCE, "quarantined: ...") in the same command, and only then,
    counting neither heartbeat losses nor failures before an admin last ended its
    quarantine; it stays quarantined, FAILED or in MAINTENANCE, until an admin acts; a
    worker leaves FAILED or MAINTENANCE only by an admin's hand, or, FAILED by a heartbeat
    loss while in service, by its dryad's next heartbeat or registration (PREPARE, with a
    healthcheck issued), which always brings it back; a heartbeat loss needs a timeout of
    silence since the worker was last heard, a restart or the scheduler's own deafness;
12. every co-located group of a request sits on one host (dryad address) or in one stack
    when it starts, a host group stays on its host while it runs, a stack group in its
    stack while that lasts (invariant 6 and the invalidation check count only co-located
    sets for such requests);

plus some bookkeeping the store relies on: every change is drained (the drained views equal
the core's), worker histories chain, timers fire on time, a job gets a fresh access that is
dropped when it ends, a request satisfiable when queued is invalidated rather than left
waiting once no registered worker can serve it, usage records come with exactly the
starts and ends they record (the group by the rule of docs/api.md), and a command that
raises a BorutaError changes nothing at all.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

import pytest
from boruta_scheduler.core import Changes, Core, DryadCall, DryadCallKind, Policy, Snapshot
from boruta_scheduler.core.health import KEPT, QUARANTINED
from boruta_scheduler.core.scheduler import HEARTBEAT_LOST, IN_SERVICE, RECOVERING
from boruta_scheduler.errors import BorutaError, RequestNotFound
from boruta_scheduler.types import (
    NO_GROUP,
    OPEN_GROUP,
    Access,
    Colocation,
    FailedChecks,
    HistoryEntry,
    JobUsage,
    PendingCode,
    Placement,
    RequestState,
    RequestView,
    StackView,
    WorkerState,
    WorkerView,
)
from core_kit import T0, caps_match, caps_of
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    multiple,
    precondition,
    rule,
)

T = TypeVar("T")

# Short durations, so that job timeouts, prolong limits (by count and by duration),
# heartbeat loss and deadlines all happen within a few steps.
POLICY = Policy(
    job_timeout=50,
    prolong_step=30,
    max_prolongs=2,
    max_job_duration=75,
    heartbeat_timeout=40,
    default_deadline=200,
    # A window a few heartbeat losses or failed calls fill, and many steps leave.
    quarantine_failures=3,
    quarantine_window=150,
)

POOL = tuple(f"w{i}" for i in range(6))
GROUP_SETS = (
    frozenset[str](),
    frozenset({"g1"}),
    frozenset({"g2"}),
    frozenset({"g1", "g2"}),
)
boards = st.sampled_from(("a", "b"))
cams = st.sampled_from(("y", "n"))
# A list-valued cap (a relay's circuits), and requests asking for alternatives and subsets.
circuits = st.sampled_from(("v", "v,b", "b,u", "v, b, u"))
worker_caps = st.fixed_dictionaries({"board": boards}, optional={"cam": cams, "circ": circuits})
# One request in four names its worker by UUID, as Boruta users may.
uuid_pins = st.sampled_from((None, None, None) * len(POOL) + POOL)
request_caps = st.builds(
    lambda caps, uuid: caps if uuid is None else {**caps, "UUID": uuid},
    st.fixed_dictionaries(
        {},
        optional={
            "board": st.sampled_from(("a", "b", "a", "b", "a|b")),
            "cam": cams,
            "circ": st.sampled_from(("v", "b", "b,v", "u|v", "b,u|v")),
        },
    ),
    uuid_pins,
)
group_sets = st.sampled_from(GROUP_SETS)
# Requests of two or three boards, named or not (a name once only).
profile_sets = st.lists(
    st.tuples(st.sampled_from(("", "", "dut", "relay", "peer")), request_caps),
    min_size=2,
    max_size=3,
    unique_by=lambda profile: profile[0] or object(),
)
# Mostly the same dryad registering again; "" counts as a restart every time.
instance_ids = st.sampled_from(("i1", "i1", "i1", "i2", ""))
request_picks = st.integers(0, 1000)
stale_picks = st.sampled_from((False, False, False, True))
# Times relative to now; few distinct values, so that timers often fall due together.
valid_afters = st.sampled_from((None, None, None, None, -5, 0, 5, 10, 30))
deadlines = st.sampled_from((None, None, None, None, 5, 10, 30, 60, 120, 0))  # 0 is refused
# Mostly the policy's job timeout; a shorter one lets a job backfill a board kept for a set.
job_timeouts = st.sampled_from((0, 0, 0, 5, 20))


def can_serve(worker: WorkerView, request: RequestView) -> bool:
    """Whether the worker has every cap of the request and is open to its owner's groups."""
    has_caps = caps_match(worker.caps, request.caps)
    open_to = not worker.groups or not worker.groups.isdisjoint(request.owner_groups)
    return has_caps and open_to


def serves(worker: WorkerView, caps: dict[str, str] | object, request: RequestView) -> bool:
    """Whether the worker satisfies one profile's caps and is open to the owner's groups."""
    assert isinstance(caps, dict | type(request.caps))
    open_to = not worker.groups or not worker.groups.isdisjoint(request.owner_groups)
    return open_to and caps_match(worker.caps, caps)  # type: ignore[arg-type]


def colocated_groups(request: RequestView) -> list[tuple[list[int], Placement]]:
    """The request's co-located groups as profile indexes, read from its names."""
    names = [p.name for p in request.all_profiles]
    return [
        ([names.index(n) for n in c.profiles] if c.profiles else list(range(len(names))),
         c.placement)
        for c in request.together
    ]  # fmt: skip


def colocated(chosen: Sequence[WorkerView], request: RequestView) -> bool:
    """Whether workers chosen in profile order keep each group on one host or stack."""
    for indexes, placement in colocated_groups(request):
        places = {
            chosen[i].dryad_address if placement is Placement.HOST else chosen[i].stack
            for i in indexes
        }
        if len(places) != 1 or "" in places:
            return False
    return True


def has_set(workers: Sequence[WorkerView], request: RequestView) -> bool:
    """Whether distinct workers, one per profile, could serve the request, its co-located
    groups on one host or stack: every ordered choice tried, as a reference for the core's
    matching."""
    profiles = request.all_profiles
    return any(
        all(serves(w, p.caps, request) for w, p in zip(choice, profiles, strict=True))
        and colocated(choice, request)
        for choice in itertools.permutations(workers, len(profiles))
    )


def rank(request: RequestView) -> tuple[int, int]:
    return (request.priority, request.id)


class CoreMachine(RuleBasedStateMachine):
    """Random commands against one Core, checked after each against a drained model."""

    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        self.core = Core(POLICY)
        self.now = T0
        self.pending: list[DryadCall] = []
        self.keys = 0
        self.issued: set[Access] = set()  # accesses our Prepare answers handed to the core
        self.job_access: dict[Access, int] = {}  # access -> the request whose job got it
        # The model: what drain() said, and nothing else.
        self.requests: dict[int, RequestView] = {}  # live requests
        self.terminal: dict[int, RequestState] = {}
        self.worker_views: dict[str, WorkerView] = {}
        self.history_state: dict[str, WorkerState] = {}
        self.last_request_id = 0
        self.heartbeat_epoch = T0  # silence counts from here at the earliest
        # Requests no registered worker could serve when they were queued.
        self.unsatisfiable_at_birth: set[int] = set()
        self.stack_views: dict[str, StackView] = {}
        # The stack each stack group of a running request started in, by request.
        self.started_in: dict[int, list[tuple[list[int], StackView]]] = {}
        # Health as the history tells it: each worker's failure times and reasons, and
        # whether its last failure was a heartbeat loss while in service, whether it is
        # quarantined, and since when its failures count towards quarantine.
        self.failures: dict[str, list[tuple[float, str]]] = {}
        self.recoverable: dict[str, bool] = {}
        self.quarantined: dict[str, bool] = {}
        self.counted_from: dict[str, float] = {}
        self.what = ""  # the command running

    # ------------------------------------------------------------ the driver

    def _command(self, what: str, fn: Callable[[], T], *, tick: bool = False) -> T | None:
        """Run one command, absorb what it drained and check every invariant."""
        core = self.core
        before_requests = {v.id: v for v in core.live_requests()}
        before_workers = {w.uuid: w for w in core.workers()}
        before_counts = (core.waiting_count, core.idle_count)
        try:
            result = fn()
        except BorutaError as error:
            assert core is self.core
            note(f"t+{self.now - T0:g} {what}: {type(error).__name__}: {error}")
            changes = core.drain()
            assert not changes.durable, f"{what} failed but drained changes: {changes}"
            assert not changes.calls, f"{what} failed but asked for dryad calls"
            assert changes.last_request_id == self.last_request_id, f"{what} used up an id"
            assert {v.id: v for v in core.live_requests()} == before_requests, what
            assert {w.uuid: w for w in core.workers()} == before_workers, what
            assert (core.waiting_count, core.idle_count) == before_counts, what
            self._check_core()
            return None
        note(f"t+{self.now - T0:g} {what}")
        self.what = what
        self._absorb(self.core.drain())  # a restart replaces the core
        self._check_core(ticked=tick)
        verb, _, uuid = what.partition(" ")
        if verb in ("heartbeat", "register"):
            uuid = uuid.split(" ")[0]
            # 11. A worker failed by a heartbeat loss in service is back once heard.
            assert not self.recoverable.get(uuid), f"{uuid} heard but not recovering"
        return result

    def _pick_request(self, index: int, stale: bool, state: RequestState | None = None) -> int:
        """A live request id (in the given state, if any), or when stale any id at all."""
        live = sorted(r.id for r in self.requests.values() if state in (None, r.state))
        if live and not stale:
            return live[index % len(live)]
        return index % (self.last_request_id + 2)  # finished, live, unknown or 0

    def _has(self, state: RequestState | None = None) -> bool:
        return any(state in (None, r.state) for r in self.requests.values())

    def _answer(self, call: DryadCall, outcome: str) -> None:
        core, now = self.core, self.now
        if outcome == "fail":
            fn: Callable[[], None] = functools.partial(
                core.dryad_call_failed, now, call, "connection refused"
            )
        elif call.kind is DryadCallKind.PREPARE and outcome == "unhealthy":
            fn = functools.partial(
                core.dryad_call_succeeded, now, call, FailedChecks("failing checks: disk: full")
            )
        elif call.kind is DryadCallKind.PREPARE and outcome == "ok":
            self.keys += 1
            access = Access(f"job{self.keys}", f"KEY-{self.keys}")
            self.issued.add(access)
            fn = functools.partial(core.dryad_call_succeeded, now, call, access)
        else:  # PutInMaintenance, or a Prepare that returned no access
            fn = functools.partial(core.dryad_call_succeeded, now, call)
        self._command(f"answer {call.kind.value}#{call.op_id} {call.worker_uuid}: {outcome}", fn)

    def _answer_all(self) -> None:
        while self.pending:
            self._answer(self.pending.pop(0), "ok")

    # ------------------------------------------------------------ worker rules

    @initialize(
        target=workers,
        farm=st.lists(
            st.tuples(st.sampled_from(POOL), worker_caps, group_sets),
            min_size=1,
            max_size=4,
            unique_by=lambda spec: spec[0],
        ),
        stack=st.sampled_from(((), (), ("w0", "w1"), ("w0", "w2", "w3"), ("w1", "w3"))),
    )
    def start_farm(
        self, farm: list[tuple[str, dict[str, str], frozenset[str]]], stack: tuple[str, ...]
    ) -> MultipleResults[str]:
        for uuid, caps, groups in farm:
            self.register(uuid, caps, "i1")
            if groups:
                self.set_groups(uuid, groups)
            self.set_state(uuid, WorkerState.IDLE)
        if stack:
            # A stack from the start, so that requests for one often find it.
            self.create_stack("s1", list(stack))
        self._answer_all()
        return multiple(*(uuid for uuid, _, _ in farm))

    @rule(target=workers, uuid=st.sampled_from(POOL), caps=worker_caps, instance=instance_ids)
    def register(self, uuid: str, caps: dict[str, str], instance: str) -> str:
        self._command(
            f"register {uuid} {caps} instance={instance!r}",
            lambda: self.core.register(
                self.now,
                caps_of(uuid, **caps),
                # Two workers to a host; a restarted dryad may move to another.
                f"h{int(uuid[1:]) // 2}{instance}.lab:7175",
                f"{uuid}{instance}.lab:22",
                instance_id=instance,
            ),
        )
        return uuid

    @rule(
        uuid=workers,
        action=st.sampled_from(
            ("IDLE", "IDLE", "MAINTENANCE", "deregister", "RUNNING", "after_job", "after_job")
        ),
    )
    def admin(self, uuid: str, action: str) -> None:
        """An admin puts a worker into service or out of it, at once or after its job (a
        drain; RUNNING is refused), or removes it."""
        if action == "deregister":
            self._command(f"deregister {uuid}", lambda: self.core.deregister(self.now, uuid))
        elif action == "after_job":
            self.set_state(uuid, WorkerState.MAINTENANCE, after_job=True)
        else:
            self.set_state(uuid, WorkerState[action])

    def set_state(self, uuid: str, state: WorkerState, *, after_job: bool = False) -> None:
        self._command(
            f"set_state {uuid} {state.name}",
            lambda: self.core.set_state(self.now, uuid, state, "by the test", after_job=after_job),
        )

    @rule(
        name=st.sampled_from(("s1", "s2")),
        members=st.lists(st.sampled_from(POOL), min_size=2, max_size=3, unique=True),
    )
    def create_stack(self, name: str, members: list[str]) -> None:
        self._command(
            f"create_stack {name} {members}",
            lambda: self.core.create_stack(self.now, name, members),
        )

    @rule(name=st.sampled_from(("s1", "s2", "s3")))
    def delete_stack(self, name: str) -> None:
        self._command(f"delete_stack {name}", lambda: self.core.delete_stack(self.now, name))

    @rule(uuid=workers, groups=group_sets)
    def set_groups(self, uuid: str, groups: frozenset[str]) -> None:
        self._command(
            f"set_groups {uuid} {sorted(groups)}",
            lambda: self.core.set_groups(self.now, uuid, groups),
        )

    @rule(uuid=workers, failed=st.sampled_from((False,) * 5 + (True,)))
    def dryad_reports(self, uuid: str, failed: bool) -> None:
        """A dryad heartbeats, or (less often) reports its worker failed."""
        if failed:
            self._command(f"set_fail {uuid}", lambda: self.core.set_fail(self.now, uuid, "smoke"))
        else:
            self._command(f"heartbeat {uuid}", lambda: self.core.heartbeat(self.now, uuid))

    @precondition(lambda self: bool(self.pending))
    @rule(
        index=st.integers(0, 1000),
        outcome=st.sampled_from(("ok",) * 6 + ("fail", "empty", "unhealthy")),
        forget=st.sampled_from((True, True, True, False)),
    )
    def answer_call(self, index: int, outcome: str, forget: bool) -> None:
        """Answer any pending call; one not forgotten may be answered again later (stale)."""
        index %= len(self.pending)
        call = self.pending.pop(index) if forget else self.pending[index]
        self._answer(call, outcome)

    @precondition(lambda self: bool(self.pending))
    @rule()
    def answer_all_calls(self) -> None:
        """Healthy dryads: every pending call succeeds, oldest first."""
        self._answer_all()

    # ----------------------------------------------------------- request rules

    @rule(
        owner_groups=group_sets,
        caps=request_caps,
        priorities=st.lists(st.integers(0, 17), min_size=1, max_size=4),
        valid_after=valid_afters,
        deadline=deadlines,
        accept_unsatisfiable=st.booleans(),
        job_timeout=job_timeouts,
    )
    def new_requests(
        self,
        owner_groups: frozenset[str],
        caps: dict[str, str],
        priorities: list[int],
        valid_after: int | None,
        deadline: int | None,
        accept_unsatisfiable: bool,
        job_timeout: int,
    ) -> None:
        """An owner queues a burst of alike requests, one per priority (0: the default)."""
        now = self.now
        for priority in priorities:
            view = self._command(
                f"new_request caps={caps} groups={sorted(owner_groups)} priority={priority} "
                f"valid_after={valid_after} deadline={deadline} accept={accept_unsatisfiable} "
                f"job_timeout={job_timeout}",
                functools.partial(
                    self.core.new_request,
                    now,
                    "owner",
                    owner_groups,
                    caps,
                    priority=priority,
                    valid_after=None if valid_after is None else now + valid_after,
                    deadline=None if deadline is None else now + deadline,
                    accept_unsatisfiable=accept_unsatisfiable,
                    job_timeout=job_timeout,
                ),
            )
            if view is not None:
                assert view.id == self.last_request_id
                assert self.requests.get(view.id) == view

    @rule(
        owner_groups=group_sets,
        profiles=profile_sets,
        priority=st.integers(0, 17),
        valid_after=valid_afters,
        accept_unsatisfiable=st.booleans(),
        no_wait=st.sampled_from((False, False, False, True)),
        together=st.sampled_from(("", "", "", "host", "stack", "pair-host", "pair-stack")),
    )
    def new_multi_request(
        self,
        owner_groups: frozenset[str],
        profiles: list[tuple[str, dict[str, str]]],
        priority: int,
        valid_after: int | None,
        accept_unsatisfiable: bool,
        no_wait: bool,
        together: str,
    ) -> None:
        """An owner asks for several boards at once, maybe some or all of them on one host
        or in one stack (a pair of unnamed profiles is refused)."""
        now = self.now
        groups: tuple[Colocation, ...] = ()
        if together:
            placement = Placement.HOST if together.endswith("host") else Placement.STACK
            pair = tuple(name for name, _ in profiles[:2]) if together.startswith("pair") else ()
            groups = (Colocation(pair, placement),)
        view = self._command(
            f"new_request profiles={profiles} groups={sorted(owner_groups)} priority={priority} "
            f"valid_after={valid_after} accept={accept_unsatisfiable} no_wait={no_wait} "
            f"together={groups}",
            functools.partial(
                self.core.new_request,
                now,
                "owner",
                owner_groups,
                {},
                priority=priority,
                valid_after=None if valid_after is None or no_wait else now + valid_after,
                accept_unsatisfiable=accept_unsatisfiable,
                no_wait=no_wait,
                profiles=profiles,
                together=groups,
            ),
        )
        if view is not None:
            assert self.requests.get(view.id) == view
            assert [p.name for p in view.all_profiles] == [name for name, _ in profiles]
            assert view.together == groups
            if no_wait:
                assert view.state is RequestState.IN_PROGRESS, view

    @rule(
        owner_groups=group_sets,
        boards=st.lists(st.sampled_from(("a", "b", "", "a|b")), min_size=2, max_size=3),
        priority=st.integers(1, 16),
        accept_unsatisfiable=st.booleans(),
        together=st.sampled_from(("host", "stack", "pair-host", "pair-stack")),
    )
    def new_together_request(
        self,
        owner_groups: frozenset[str],
        boards: list[str],
        priority: int,
        accept_unsatisfiable: bool,
        together: str,
    ) -> None:
        """An owner asks for boards on one host or in one stack (simple caps, so that such
        sets often exist)."""
        profiles = [(f"p{i}", {"board": b} if b else {}) for i, b in enumerate(boards)]
        self.new_multi_request(
            owner_groups, profiles, priority, None, accept_unsatisfiable, False, together
        )

    @precondition(lambda self: self._has())
    @rule(index=request_picks, stale=stale_picks)
    def close_request(self, index: int, stale: bool) -> None:
        rid = self._pick_request(index, stale)
        self._command(f"close_request {rid}", lambda: self.core.close_request(self.now, rid))

    @precondition(lambda self: self._has(RequestState.WAITING))
    @rule(
        index=request_picks,
        stale=stale_picks,
        priority=st.none() | st.integers(0, 17),
        valid_after=valid_afters,
        deadline=deadlines,
    )
    def update_request(
        self,
        index: int,
        stale: bool,
        priority: int | None,
        valid_after: int | None,
        deadline: int | None,
    ) -> None:
        rid = self._pick_request(index, stale, RequestState.WAITING)
        now = self.now
        self._command(
            f"update_request {rid} priority={priority} valid_after={valid_after} "
            f"deadline={deadline}",
            lambda: self.core.update_request(
                now,
                rid,
                priority=priority,
                valid_after=None if valid_after is None else now + valid_after,
                deadline=None if deadline is None else now + deadline,
            ),
        )

    @precondition(lambda self: self._has(RequestState.IN_PROGRESS))
    @rule(index=request_picks, stale=stale_picks)
    def prolong_access(self, index: int, stale: bool) -> None:
        rid = self._pick_request(index, stale, RequestState.IN_PROGRESS)
        self._command(f"prolong_access {rid}", lambda: self.core.prolong_access(self.now, rid))

    # ------------------------------------------------------------------ clock

    @rule(
        seconds=st.sampled_from((1, 5, 10, 20, 30, 45, 60)),
        heartbeats=st.sampled_from((True,) * 5 + (False,)),
        prolongs=st.sampled_from((False, False, True)),
        answers=st.booleans(),
    )
    def advance(self, seconds: int, heartbeats: bool, prolongs: bool, answers: bool) -> None:
        """Move the clock, firing timers on the way; dryads may heartbeat and answer calls.

        With heartbeats every dryad reports in at least every 20 s (half the timeout);
        without, they all stay silent. With prolongs every owner of a running job tries to
        prolong it on the way too. Every command runs at a time whose timers have fired, as
        the service ensures.
        """
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + 20) if heartbeats else end
            self._command("tick", functools.partial(self.core.tick, self.now), tick=True)
            if heartbeats:
                for uuid in sorted(self.worker_views):
                    self._command(
                        f"heartbeat {uuid}", functools.partial(self.core.heartbeat, self.now, uuid)
                    )
            if prolongs:
                for rid in sorted(self.requests):
                    if self.requests[rid].state is RequestState.IN_PROGRESS:
                        self._command(
                            f"prolong_access {rid}",
                            functools.partial(self.core.prolong_access, self.now, rid),
                        )
        if answers:
            self._answer_all()

    @rule(downtime=st.sampled_from((0, 1, 30, 60)))
    def restart(self, downtime: int) -> None:
        """The scheduler restarts from what it stored (the drained model) after downtime.

        Dryad calls in flight are lost with the old process; the new core issues its own.
        """
        snapshot = Snapshot(
            list(self.requests.values()),
            list(self.worker_views.values()),
            self.last_request_id,
            stacks=list(self.stack_views.values()),
        )
        self.now += downtime
        self.heartbeat_epoch = self.now
        self.pending.clear()

        def restore() -> None:
            self.core = Core.restore(snapshot, self.now, POLICY)

        self._command(f"restart after {downtime} s", restore, tick=True)

    @rule(deaf=st.sampled_from((10, 60)))
    def deaf_for(self, deaf: int) -> None:
        """The scheduler itself heard nothing for a while (held, or its clock stepped):
        silence counts from then, and the timers due meanwhile fire."""
        self.now += deaf
        self.heartbeat_epoch = self.now

        def deaf_then_tick() -> None:
            self.core.deaf_until(self.now)
            self.core.tick(self.now)

        self._command(f"deaf for {deaf} s", deaf_then_tick, tick=True)

    # ------------------------------------------------------- the drained model

    def _absorb(self, changes: Changes) -> None:
        """Fold one drain into the model, checking each match it reveals (invariants 3-5)."""
        now = self.now
        assert changes.last_request_id >= self.last_request_id
        self.last_request_id = changes.last_request_id
        for name in changes.removed_stacks:
            self.stack_views.pop(name, None)
        for stack in changes.stacks:
            self.stack_views[stack.name] = stack

        for gone in changes.removed_workers:
            assert gone.uuid in self.worker_views, f"removed unknown worker {gone.uuid}"
            # Only a worker out of service may be removed.
            assert gone.state in (WorkerState.MAINTENANCE, WorkerState.FAILED), gone
            del self.worker_views[gone.uuid]
            del self.history_state[gone.uuid]
            self.failures.pop(gone.uuid, None)
            self.recoverable.pop(gone.uuid, None)
            self.quarantined.pop(gone.uuid, None)
            self.counted_from.pop(gone.uuid, None)
        quarantine_due: set[str] = set()
        for entry in changes.history:
            # Histories chain: each entry starts where the last one of that worker ended.
            assert entry.from_state == self.history_state.get(entry.worker_uuid), entry
            assert entry.time == now, entry
            self.history_state[entry.worker_uuid] = entry.to_state
            if (entry.from_state, entry.to_state) == (WorkerState.RUNNING, WorkerState.BUSY):
                # Out of a job into maintenance: by an admin's hand, or as the drain asked.
                before = self.worker_views[entry.worker_uuid]
                assert self.what.startswith(f"set_state {entry.worker_uuid} ") or (
                    before.drain_reason and entry.reason == before.drain_reason
                ), (entry, before)
            self._check_health_entry(entry, quarantine_due, changes.calls)
        assert not quarantine_due, f"{quarantine_due} failed too often but are not quarantined"
        drained_workers = {w.uuid: w for w in changes.workers}
        self.worker_views.update(drained_workers)
        for uuid, seen in changes.last_seen.items():
            self.worker_views[uuid] = replace(self.worker_views[uuid], last_seen=seen)

        for uuid, view in drained_workers.items():
            # 11. The record holds the latest failures, as the history tells them.
            kept = [(f.time, f.reason) for f in view.health.failures]
            assert kept == self.failures.get(uuid, [])[-KEPT:], (uuid, view.health)
            assert view.health.recoverable == self.recoverable.get(uuid, False), view
            if view.state is WorkerState.MAINTENANCE and view.reason.startswith(QUARANTINED):
                assert view.health.quarantined, view
            # Only an admin ends a quarantine, whatever befalls the board meanwhile.
            assert view.health.quarantined == self.quarantined.get(uuid, False), view
            if view.health.quarantined:
                assert view.state in (WorkerState.MAINTENANCE, WorkerState.FAILED), view
            assert view.health.counted_from == self.counted_from.get(uuid, 0.0), view
        self._check_usage(changes, dict(self.requests), drained_workers)
        matched: list[RequestView] = []
        for view in changes.requests:
            old_terminal = self.terminal.get(view.id)
            # 5. A terminal state never changes.
            assert old_terminal is None or old_terminal is view.state, (
                f"request {view.id} was {old_terminal!r}, now drained as {view.state!r}"
            )
            before = self.requests.get(view.id)
            if before is None and old_terminal is None:
                assert view.id <= self.last_request_id
                if not has_set(list(self.worker_views.values()), view):
                    self.unsatisfiable_at_birth.add(view.id)
            if view.job is not None and (before is None or before.state is RequestState.WAITING):
                matched.append(view)
            if before is not None and before.job is not None:
                assert view.job is not None
                # A request's boards stay the same until it ends.
                assert [j.worker_uuid for j in view.all_jobs] == [
                    j.worker_uuid for j in before.all_jobs
                ]
                assert view.job.started_at == before.job.started_at
            if view.state.is_terminal:
                self.terminal[view.id] = view.state
                self.requests.pop(view.id, None)
                # A finished job's login secret is not kept.
                assert view.job is None or view.job.access is None, view
            else:
                self.requests[view.id] = view

        for view in matched:
            jobs, profiles = view.all_jobs, view.all_profiles
            # 7. All boards at once: one job per profile, on distinct workers.
            assert len(jobs) == len(profiles), view
            assert len({job.worker_uuid for job in jobs}) == len(jobs), view
            # 12. Each co-located group on one host or in one stack.
            if all(job.worker_uuid in self.worker_views for job in jobs):
                chosen = [self.worker_views[job.worker_uuid] for job in jobs]
                assert colocated(chosen, view), (view, chosen)
                self.started_in[view.id] = [
                    (indexes, self.stack_views[chosen[indexes[0]].stack])
                    for indexes, placement in colocated_groups(view)
                    if placement is Placement.STACK
                ]
            for job, profile in zip(jobs, profiles, strict=True):
                uuid = job.worker_uuid
                # The worker became RUNNING in this step, so it was drained with it.
                assert uuid in drained_workers, f"request {view.id} matched to undrained {uuid}"
                worker = drained_workers[uuid]
                assert job.started_at == now
                assert job.timeout_at == view.job.timeout_at  # type: ignore[union-attr]
                assert job.ssh_address == worker.ssh_address
                assert view.valid_after <= now, f"request {view.id} matched before valid_after"
                # 3. Only to a worker with every cap and open to the owner's groups.
                assert serves(worker, profile.caps, view), (
                    f"request {view.id} profile {profile} (groups {set(view.owner_groups)}) "
                    f"matched to {uuid} (caps {dict(worker.caps)}, groups {set(worker.groups)})"
                )
                # A fresh access of ours, never handed to another job.
                access = job.access
                if view.state is RequestState.IN_PROGRESS:
                    assert access is not None and access in self.issued, view
                    assert self.job_access.setdefault(access, view.id) == view.id, (
                        f"request {view.id} got the access of request {self.job_access[access]}"
                    )
                # 4. No more important one-board request, still waiting and ready, that the
                # worker could serve. (One matched in this same step is no longer WAITING,
                # so it is skipped.) Requests of several boards may be passed over while
                # they cannot complete a set, within the reservation rules (invariant 8,
                # test_core_reservations.py).
                for other in self.requests.values():
                    if (
                        other.state is RequestState.WAITING
                        and len(other.all_profiles) == 1
                        and other.valid_after <= now
                        and can_serve(worker, other)
                    ):
                        assert rank(view) < rank(other), (
                            f"request {view.id} {rank(view)} matched to {uuid} while request "
                            f"{other.id} {rank(other)} was ready and waiting for it"
                        )

        for call in changes.calls:
            callee = self.worker_views.get(call.worker_uuid)
            assert callee is not None, f"call to unknown worker: {call}"
            assert call.address == callee.dryad_address, call
        self.pending.extend(changes.calls)

    def _check_usage(
        self,
        changes: Changes,
        live_before: dict[int, RequestView],
        drained_workers: dict[str, WorkerView],
    ) -> None:
        """A start record for each job of each request that started in this drain, an end
        record for each job (or one with no board) of each that ended, and nothing else."""
        now = self.now
        expected: list[JobUsage] = []
        for view in changes.requests:
            before = live_before.get(view.id)
            if view.state is RequestState.IN_PROGRESS and (
                before is None or before.state is RequestState.WAITING
            ):
                for index, job in enumerate(view.all_jobs):
                    groups = drained_workers[job.worker_uuid].groups
                    shared = groups & view.owner_groups
                    group = OPEN_GROUP if not groups else min(shared, default=NO_GROUP)
                    assert group != NO_GROUP, f"request {view.id} ran on a board of no group of its"
                    expected.append(
                        JobUsage(view.id, index, view.owner, group, job.worker_uuid,
                                 view.created_at, now, None, RequestState.IN_PROGRESS)
                    )  # fmt: skip
            if view.state.is_terminal and view.id not in self.terminal:
                jobs = view.all_jobs
                for index, job in enumerate(jobs):
                    expected.append(
                        JobUsage(view.id, index, view.owner, "", job.worker_uuid,
                                 view.created_at, job.started_at, now, view.state)
                    )  # fmt: skip
                if not jobs:
                    expected.append(
                        JobUsage(view.id, 0, view.owner, NO_GROUP, "", view.created_at, None,
                                 now, view.state)
                    )  # fmt: skip

        def key(u: JobUsage) -> tuple[int, int, bool]:
            return u.request_id, u.index, u.ended_at is not None

        # An end record's group only fills in for a missing start: the store keeps the start's.
        got = [
            replace(u, group="") if u.ended_at is not None and u.started_at else u
            for u in changes.usage
        ]
        assert sorted(expected, key=key) == sorted(got, key=key), changes.usage

    def _check_health_entry(
        self, entry: HistoryEntry, quarantine_due: set[str], calls: Sequence[DryadCall]
    ) -> None:
        """11. Fold one history entry into the health model and check what it may do."""
        uuid, old, new = entry.worker_uuid, entry.from_state, entry.to_state
        admin = self.what.startswith(f"set_state {uuid} ")
        if uuid in quarantine_due:
            # The failure that made it due is followed at once by the quarantine.
            assert (old, new) == (WorkerState.FAILED, WorkerState.MAINTENANCE), entry
            assert entry.reason.startswith(QUARANTINED), entry
            quarantine_due.discard(uuid)
            self.recoverable[uuid] = False
            self.quarantined[uuid] = True
            return
        if new is WorkerState.FAILED:
            if entry.reason.startswith(HEARTBEAT_LOST) and uuid in self.worker_views:
                # Only silence the scheduler could have heard fails a worker.
                seen = self.worker_views[uuid].last_seen
                heard = max(seen, self.heartbeat_epoch)
                assert heard + POLICY.heartbeat_timeout <= entry.time, (entry, heard)
            failures = self.failures.setdefault(uuid, [])
            failures.append((entry.time, entry.reason))
            in_service = old in IN_SERVICE
            self.recoverable[uuid] = in_service and entry.reason.startswith(HEARTBEAT_LOST)
            # Heartbeat losses do not count, nor failures before an admin's end of the
            # last quarantine.
            since = max(self.now - POLICY.quarantine_window, self.counted_from.get(uuid, 0.0))
            window = [t for t, why in failures if t >= since and not why.startswith(HEARTBEAT_LOST)]
            if in_service and len(window) >= POLICY.quarantine_failures:
                quarantine_due.add(uuid)
            return
        assert not entry.reason.startswith(QUARANTINED) or admin, entry
        if old in (WorkerState.FAILED, WorkerState.MAINTENANCE):
            if entry.reason == RECOVERING:
                assert old is WorkerState.FAILED and new is WorkerState.PREPARE, entry
                assert self.recoverable.get(uuid), f"{uuid} recovered from another failure"
                assert self.what.startswith((f"heartbeat {uuid}", f"register {uuid} ")), entry
                assert any(
                    c.worker_uuid == uuid
                    and c.kind is DryadCallKind.PREPARE
                    and c.healthcheck_first
                    for c in calls
                ), f"{uuid} recovers without a healthcheck"
            else:
                assert admin, f"{uuid} left {old} by itself: {entry}"
        if new not in (WorkerState.FAILED, WorkerState.MAINTENANCE) and self.quarantined.get(uuid):
            self.quarantined[uuid] = False
            self.counted_from[uuid] = entry.time
        self.recoverable[uuid] = False

    # ------------------------------------------------------------ invariants

    def _check_core(self, *, ticked: bool = False) -> None:
        core, now = self.core, self.now
        live = {v.id: v for v in core.live_requests()}
        workers = {w.uuid: w for w in core.workers()}

        # Everything that changed was drained: the model equals the core.
        assert live.keys() == self.requests.keys(), (sorted(live), sorted(self.requests))
        for rid, view in live.items():
            assert view == self.requests[rid], f"request {rid} changed without being drained"
            assert core.request(rid) == view
        assert workers.keys() == self.worker_views.keys()
        for uuid, worker in workers.items():
            assert worker == self.worker_views[uuid], f"{uuid} changed without being drained"
            assert core.worker(uuid) == worker
            assert self.history_state[uuid] is worker.state, uuid

        # The live tally (what metrics read) counts what a walk of the requests finds.
        walked = Counter((view.state, view.priority) for view in live.values())
        assert core.live_tally() == dict(walked)

        # 5. Terminal requests are gone from the core.
        for rid in self.terminal:
            assert rid not in live
            with pytest.raises(RequestNotFound):
                core.request(rid)

        # 1 and 2. One job per worker; RUNNING workers and IN_PROGRESS requests pair up.
        job_of: dict[str, int] = {}
        for view in live.values():
            if view.state is RequestState.WAITING:
                assert view.job is None, view
                # Timers fire on time: a waiting request is before its deadline.
                assert view.deadline > now, view
                continue
            assert view.state is RequestState.IN_PROGRESS, view
            assert view.job is not None, view
            # 7. All boards or none.
            assert len(view.all_jobs) == len(view.all_profiles), view
            # 12. A host group stays on its host while it runs, a stack group in its stack
            # while that stack lasts (deleting it frees the collateral, not the boards).
            for indexes, placement in colocated_groups(view):
                if placement is Placement.HOST:
                    hosts = {workers[view.all_jobs[i].worker_uuid].dryad_address for i in indexes}
                    assert len(hosts) == 1, (view, hosts)
            for indexes, stack in self.started_in.get(view.id, ()):
                now_named = self.stack_views.get(stack.name)
                if now_named is not None and (now_named.created_at, now_named.workers) == (
                    stack.created_at,
                    stack.workers,
                ):
                    stacks = {workers[view.all_jobs[i].worker_uuid].stack for i in indexes}
                    assert stacks == {stack.name}, (view, stacks)
            for job in view.all_jobs:
                assert job.timeout_at == view.job.timeout_at > now, view
                assert job.timeout_at <= job.max_timeout_at, view
                uuid = job.worker_uuid
                assert uuid not in job_of, f"{uuid} runs requests {job_of[uuid]} and {view.id}"
                job_of[uuid] = view.id
                runner = workers.get(uuid)
                assert runner is not None, f"request {view.id} runs on unknown worker {uuid}"
                assert runner.state is WorkerState.RUNNING, (view.id, runner.state)
                assert runner.request_id == view.id, (view.id, runner.request_id)
        for worker in workers.values():
            if worker.state is WorkerState.RUNNING:
                assert job_of.get(worker.uuid) == worker.request_id != 0, worker
            else:
                assert worker.request_id == 0, worker
            # Only a running worker waits for its job to end to go into maintenance.
            assert not worker.drain_reason or worker.state is WorkerState.RUNNING, worker
            # Only an IDLE worker holds a prepared access.
            assert (worker.state is WorkerState.IDLE) == (worker.prepared is not None), worker
            # Heartbeat timers fire on time. (A command may arm one that is already due,
            # e.g. putting a long silent worker back into service; the next tick fires it.)
            if ticked and worker.state is not WorkerState.FAILED:
                heard = max(worker.last_seen, self.heartbeat_epoch)
                assert heard + POLICY.heartbeat_timeout > now, worker

        # 8. Collateral: a stack is held by one request at most, all of it.
        assert {s.name: s.workers for s in core.stacks()} == {
            s.name: s.workers for s in self.stack_views.values()
        }
        for stack in core.stacks():
            members = [workers[u] for u in stack.workers if u in workers]
            runners = {w.request_id for w in members if w.state is WorkerState.RUNNING}
            assert len(runners) <= 1, f"stack {stack.name} runs requests {runners}"
            for worker in members:
                assert worker.stack == stack.name, worker
                if runners and worker.state is not WorkerState.RUNNING:
                    assert worker.collateral_of in runners, (stack, worker)
            held = {w.collateral_of for w in members} - {0}
            assert len(held) <= 1, f"stack {stack.name} is collateral of requests {held}"
            assert stack.holder == min(runners | held, default=0), stack
        for worker in workers.values():
            if worker.collateral_of:
                assert worker.stack, worker
                assert live[worker.collateral_of].state is RequestState.IN_PROGRESS, worker

        # 9. Workers are reserved only for ready waiting requests of several profiles, one
        # request each, at most one per profile, while idle or running a backfilled job
        # (of a less important request) or preparing after it. (That backfilled jobs end
        # in time is test_core_reservations.py's.)
        holder_of: dict[str, RequestView] = {}
        for view in live.values():
            reservation = core.reservation(now, view.id)
            if reservation is None:
                continue
            assert view.state is RequestState.WAITING and len(view.all_profiles) > 1, view
            uuids, _ = reservation
            assert len(uuids) <= len(view.all_profiles), (view.id, uuids)
            for uuid in uuids:
                assert uuid not in holder_of, f"{uuid} reserved for two requests"
                holder_of[uuid] = view
                reserved = workers[uuid]
                assert reserved.state in (
                    WorkerState.IDLE,
                    WorkerState.RUNNING,
                    WorkerState.PREPARE,
                ), reserved
                # A draining board will not serve it: it is kept for no one.
                assert not reserved.drain_reason, reserved
                if reserved.state is WorkerState.RUNNING:
                    assert rank(view) < rank(live[reserved.request_id]), (view.id, uuid)

        # 6. No ready WAITING request could be served by IDLE workers not reserved for a
        # more important request.
        idle = [w for w in workers.values() if w.state is WorkerState.IDLE and not w.collateral_of]
        for view in live.values():
            if view.state is not RequestState.WAITING:
                continue
            if view.valid_after <= now:
                free = [
                    w
                    for w in idle
                    if w.uuid not in holder_of or rank(holder_of[w.uuid]) >= rank(view)
                ]
                assert not has_set(free, view), (
                    f"ready request {view.id} waits while IDLE workers could serve it"
                )
            # A request some workers could serve when queued is invalidated once none can.
            if view.id not in self.unsatisfiable_at_birth:
                assert has_set(list(workers.values()), view), (
                    f"request {view.id} waits but no registered workers can serve it"
                )
        # 10. Pending reasons: the queue position counts the waiting requests ahead that
        # could use a board this one could use; the reason agrees with the farm.
        explainer = core.explainer(now)
        waiting = [v for v in live.values() if v.state is RequestState.WAITING]
        for view in waiting:
            mine = [
                w
                for w in workers.values()
                if any(serves(w, p.caps, view) for p in view.all_profiles)
            ]
            ahead = sum(
                1
                for other in waiting
                if rank(other) < rank(view)
                and any(serves(w, p.caps, other) for w in mine for p in other.all_profiles)
            )
            why = core.pending_reason(now, view.id, explainer)
            assert why is not None and why.requests_ahead == ahead, (view.id, why, ahead)
            assert core.queue_position(view.id) == ahead
            assert why.boards_total == len(mine), (view.id, why)
            if why.code is PendingCode.NOT_VALID_YET:
                assert view.valid_after > now, view
            elif why.code in (PendingCode.BOARDS_BUSY, PendingCode.WAITING_FOR_SET):
                assert ahead == 0 and view.valid_after <= now, (view, why)
            elif why.code is PendingCode.HIGHER_PRIORITY:
                assert ahead > 0, why
            if why.code is PendingCode.BOARDS_BUSY:
                # First in line, no board it could use is free for it.
                for board in why.boards:
                    shown = workers[board.uuid]
                    assert shown.collateral_of or shown.state is not WorkerState.IDLE, (
                        view.id,
                        shown,
                    )
        assert core.waiting_count == len(waiting)
        assert core.idle_count == len(idle)
        if ticked:
            next_timer = core.next_timer()
            assert next_timer is None or next_timer > now, "tick left a timer due"


CoreMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestCoreProperties = CoreMachine.TestCase
