"""The core state machine: every command of the Requests, Workers and Superviser services.

Each public method is one command. It either raises a :class:`BorutaError` and changes
nothing, or applies its change completely. Invariant after every command: no ready
WAITING request could be served by an IDLE worker (so matching is event driven).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice

from boruta_scheduler.core import health
from boruta_scheduler.core.caps import Need, board_items, check_request_caps, need_of
from boruta_scheduler.core.idempotency import Idempotency, KeyMemory, same_arguments
from boruta_scheduler.core.matching import match, shortlist
from boruta_scheduler.core.model import (
    Job,
    Profile,
    Request,
    Worker,
    cap_pairs,
    groups_compatible,
)
from boruta_scheduler.core.outbox import (
    Changes,
    CloseTunnel,
    DryadCall,
    DryadCallKind,
    OpenTunnel,
    Outbox,
)
from boruta_scheduler.core.pending import Explainer
from boruta_scheduler.core.policy import (
    LATEST_TIME,
    Policy,
    caps_size,
    check_dial_address,
    check_worker_uuid,
    format_caps,
)
from boruta_scheduler.core.queue import Bucket, BucketBase, MultiBucket, RequestQueue
from boruta_scheduler.core.timers import Target, TimerKind, TimerQueue
from boruta_scheduler.core.together import (
    Candidate,
    Capable,
    Group,
    check_together,
    describe,
    find_set,
    fits_reserved,
    from_index,
    place_of,
)
from boruta_scheduler.core.tokens import TokenTable
from boruta_scheduler.core.workers import IdleWorkers, WorkerIndex
from boruta_scheduler.errors import (
    AlreadyExists,
    Busy,
    FailedPrecondition,
    InvalidArgument,
    NoCapableWorker,
    NotFound,
    ProlongLimitReached,
    RequestNotFound,
    ResourceExhausted,
    WorkerNotFound,
    WrongRequestState,
    WrongWorkerState,
)
from boruta_scheduler.types import (
    NO_GROUP,
    Access,
    AllocatedBoard,
    Allocation,
    CapPair,
    Colocation,
    FailedChecks,
    Failure,
    FailureKind,
    HistoryEntry,
    HostStatus,
    JobUsage,
    JobView,
    PendingReason,
    Placement,
    RequestState,
    RequestView,
    StackView,
    TokenRecord,
    WorkerState,
    WorkerView,
    granting_group,
)

HEARTBEAT_LOST = "heartbeat lost"
# The reason of a worker going back into service by itself after a heartbeat loss.
RECOVERING = "dryad heard again after a heartbeat loss"
# States of a worker in service: a failure in them counts towards quarantine, and a
# heartbeat loss in them is recovered from.
IN_SERVICE = frozenset((WorkerState.IDLE, WorkerState.PREPARE, WorkerState.RUNNING))


# How many expected starts of other requests' sets one walk for a request works out to
# backfill their reserved boards: the cost of an event must not grow with the number of
# boards reserved for others (tests/test_core_index.py).
BACKFILL_LOOKS = 8


def order_of(request: Request) -> tuple[int, int]:
    """Serving order: the smaller, the more important (priority, then age)."""
    return (request.priority, request.id)


class Usable:
    """Whether a request of order (priority, id) whose jobs end by ends may take an idle
    worker: it is not reserved, or reserved for this request or a less important one, or
    the job ends before the reserved request could start and no more important one-board
    request (first_for: the most important that could use a worker) waits for it. starts
    memoizes expected starts (start_of) by request id while nothing changes. Backfill is a
    chance, not a search: past BACKFILL_LOOKS expected starts worked out, other boards
    kept for a more important request are not used."""

    __slots__ = ("_ends", "_first_for", "_known", "_start_of", "looks", "order")

    def __init__(
        self,
        order: tuple[int, int],
        ends: float,
        start_of: Callable[[Request], float],
        first_for: Callable[[Worker], Request | None],
        starts: dict[int, float],
    ) -> None:
        self.order = order
        self._ends = ends
        self._start_of = start_of
        self._first_for = first_for
        self._known = starts
        self.looks = BACKFILL_LOOKS

    def spent(self, holder: Request) -> bool:
        """Whether the boards kept for holder are out of reach: its expected start is not
        known and no look is left to work it out."""
        return not self.looks and holder.id not in self._known

    def __call__(self, worker: Worker) -> bool:
        holder = worker.reserved_for
        if holder is None or self.order <= order_of(holder):
            return True
        start = self._known.get(holder.id)
        if start is None:
            if not self.looks:
                return False
            self.looks -= 1
            start = self._known[holder.id] = self._start_of(holder)
        if self._ends > start:
            return False
        # A backfill keeps the order among the others: the board goes to no request while a
        # more important one-board request that could use it waits.
        first = self._first_for(worker)
        return first is None or order_of(first) >= self.order


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the store holds for the core: live requests, all workers, the id counters and
    every token not yet purged. The requests may be read as they are restored: iterate
    them once, in id order."""

    requests: Iterable[RequestView]
    workers: Sequence[WorkerView]
    last_request_id: int
    tokens: Sequence[TokenRecord] = field(default_factory=list)
    stacks: Sequence[StackView] = field(default_factory=list)
    # The highest token id ever handed out: kept apart from the tokens, which are purged.
    last_token_id: int = 0


class _SigMemo:
    """Caps converted once per mapping while restoring: a store hands requests of equal
    caps the same mapping. Holds the mappings it knows, so that no id is reused meanwhile."""

    ROOM = 4096

    def __init__(self) -> None:
        self._known: dict[int, tuple[Mapping[str, str], frozenset[CapPair]]] = {}

    def of(self, caps: Mapping[str, str]) -> frozenset[CapPair]:
        known = self._known.get(id(caps))
        if known is not None and known[0] is caps:
            return known[1]
        sig = cap_pairs(caps)
        if len(self._known) < self.ROOM:
            self._known[id(caps)] = (caps, sig)
        return sig


class Core:
    """Owns all scheduling state. Not thread safe: one owner applies commands in order."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        # While timers fire, freed workers wait here to be matched (tick()).
        self._held_matches: list[Worker] | None = None
        self._requests: dict[int, Request] = {}
        self._workers: dict[str, Worker] = {}
        self._registered = WorkerIndex()
        self._queue = RequestQueue(self._registered.holders)
        self._idle = IdleWorkers()
        self._timers = TimerQueue()
        self._out = Outbox()
        self._last_request_id = 0
        self._last_op_id = 0
        self._tokens = TokenTable()
        self._keys = KeyMemory()
        # Stacks by name, and the stack of each member's UUID (registered or not).
        self._stacks: dict[str, StackView] = {}
        self._stack_of: dict[str, str] = {}
        # Registered workers by host (dryad address), for co-located groups of profiles.
        self._by_host: dict[str, dict[str, Worker]] = {}
        # Live requests by (state, priority), kept as they change, so that metrics never
        # walk the queue.
        self._live_tally: Counter[tuple[RequestState, int]] = Counter()
        # Heartbeat silence is counted from here at the earliest: a worker cannot be
        # blamed for not reaching a scheduler that was down.
        self._heartbeat_epoch = 0.0

    # ----------------------------------------------------------------- restore

    @classmethod
    def restore(cls, snapshot: Snapshot, now: float, policy: Policy | None = None) -> Core:
        """Rebuild the core from stored state; overdue timers fire and free workers match."""
        core = cls(policy)
        core._last_request_id = snapshot.last_request_id
        core._tokens = TokenTable(snapshot.tokens, snapshot.last_token_id)
        core._heartbeat_epoch = now
        for stack in snapshot.stacks:
            core._stacks[stack.name] = stack
            for uuid in stack.workers:
                core._stack_of[uuid] = stack.name
        for wv in snapshot.workers:
            core._restore_worker(wv)
        sigs = _SigMemo()
        waiting: list[Request] = []
        for rv in snapshot.requests:
            core._restore_request(rv, now, sigs, waiting)
        core._enqueue_all(waiting, now)
        for worker in list(core._workers.values()):
            core._resume_worker(worker, now)
        core.tick(now)
        # One-board requests first (and reservations for the sets more important than
        # them), so that a set of boards for a request of several profiles takes none a
        # more important one-board request could have had.
        for worker in list(core._idle):
            if worker.collateral_of or worker.state is not WorkerState.IDLE:
                continue  # a job started above made it another request's collateral
            core._match_worker(worker, now, sets=False)
        for worker in list(core._idle):
            if worker.state is WorkerState.IDLE:
                core._match_worker(worker, now)
        return core

    def _restore_worker(self, view: WorkerView) -> None:
        worker = Worker(
            view.uuid,
            cap_pairs(view.caps),
            view.groups,
            view.state,
            view.dryad_address,
            view.ssh_address,
            view.registered_at,
        )
        worker.last_seen = view.last_seen
        worker.instance_id = view.instance_id
        worker.dryad_version = view.dryad_version
        worker.reason = view.reason
        worker.request_id = view.request_id
        worker.jobs_done = view.jobs_done
        worker.failures = view.failures
        worker.prepared = view.prepared
        worker.health = view.health
        worker.drain_reason = view.drain_reason if view.state is WorkerState.RUNNING else ""
        worker.stack = self._stack_of.get(worker.uuid, "")
        self._workers[worker.uuid] = worker
        self._registered.add(worker)
        self._add_to_host(worker)
        if worker.state is WorkerState.IDLE:
            self._idle.add(worker)

    def _restore_request(
        self, view: RequestView, now: float, sigs: _SigMemo, waiting: list[Request]
    ) -> None:
        """Restore one request; a WAITING one is added to waiting, to be queued with the
        rest at once."""
        sig, groups = self._queue.intern(sigs.of(view.caps), view.owner_groups)
        profiles: tuple[Profile, ...] = ()
        together: tuple[Colocation, ...] = ()
        colocated: tuple[Group, ...] = ()
        if view.profiles:
            profiles = tuple(
                (p.name, self._queue.intern_sig(sigs.of(p.caps))) for p in view.profiles
            )
            sig = profiles[0][1]
            together, colocated = check_together(view.together, [p.name for p in view.profiles])
        request = Request(
            view.id,
            view.owner,
            groups,
            sig,
            view.priority,
            view.valid_after,
            view.deadline,
            view.created_at,
            view.job_timeout,
            view.idempotency_key,
            view.arguments_hash,
            profiles,
            together,
            colocated,
        )
        if request.idempotency_key:
            self._keys.add(request.owner, request.idempotency_key, request.id)
        request.updated_at = view.updated_at
        request.reason = view.reason
        request.state = view.state
        self._requests[request.id] = request
        self._live_tally[request.state, request.priority] += 1
        if request.state is RequestState.WAITING:
            waiting.append(request)
            return
        assert view.job is not None, f"request {view.id} is IN_PROGRESS without a job"
        request.jobs = tuple(map(Job.from_view, view.all_jobs))
        for job in request.jobs:
            worker = self._workers.get(job.worker_uuid)
            if worker is None or worker.request_id != request.id:
                # Its other boards are released as workers whose job was lost.
                self._finish(request, RequestState.FAILED, now, "its worker was lost")
                return
        self._push_timer(request.jobs[0].timeout_at, TimerKind.JOB_TIMEOUT, request)
        for index, job in enumerate(request.jobs):
            self._out.tunnel(OpenTunnel(request.id, job.ssh_address, job.tunnel_port, index))
        # Collateral is not stored: it follows from the running jobs and the stacks.
        self._hold_collateral(request, [self._workers[job.worker_uuid] for job in request.jobs])

    def _resume_worker(self, worker: Worker, now: float) -> None:
        """Re-issue the dryad call a worker was waiting for, and check stored consistency."""
        if worker.state is WorkerState.RUNNING and worker.request_id not in self._requests:
            worker.request_id = 0
            self._after_job(worker, now, "its job was lost")
            self._arm_heartbeat(worker)
            return
        if worker.state is WorkerState.IDLE and worker.prepared is None:
            self._transition(worker, WorkerState.PREPARE, now, "no prepared access")
        if worker.state is WorkerState.PREPARE:
            self._issue_prepare(worker)
        elif worker.state is WorkerState.BUSY:
            self._issue(worker, DryadCallKind.PUT_IN_MAINTENANCE, worker.reason)
        elif worker.state is WorkerState.IDLE:
            self._arm_healthcheck(worker, now)
        self._arm_heartbeat(worker)

    # ------------------------------------------------------------------- reads

    def request(self, request_id: int) -> RequestView:
        """A live request; terminal requests live only in the store."""
        return self._live_request(request_id).view()

    def live_request(self, request_id: int) -> RequestView | None:
        """A live request, or None if it is terminal or unknown."""
        request = self._requests.get(request_id)
        return None if request is None else request.view()

    def queue_position(self, request_id: int) -> int | None:
        """How many waiting requests that could use a board this one could use would be
        served before it (docs/api.md, "Pending reasons"); None if it is not waiting."""
        request = self._requests.get(request_id)
        if request is None or request.state is not RequestState.WAITING:
            return None
        return self.explainer(0.0).ahead(request)

    def explainer(self, now: float) -> Explainer:
        """Pending reasons and queue positions of this moment: use it only until the next
        command (it memoizes what requests of one bucket share)."""
        return Explainer(
            self._queue,
            self._registered,
            self._requests,
            lambda request, latest: self._reserved_start(request, now, latest=latest),
            now,
            lambda bucket, test: (
                self._boards(
                    bucket.needs, self._registered_view(bucket.groups, test), bucket.colocated
                )
                is not None
            ),
        )

    def pending_reason(
        self, now: float, request_id: int, explainer: Explainer | None = None
    ) -> PendingReason | None:
        """Why a waiting request waits; None if it is not waiting (or unknown)."""
        request = self._requests.get(request_id)
        if request is None or request.state is not RequestState.WAITING:
            return None
        return (explainer or self.explainer(now)).reason(request)

    def reservation(self, now: float, request_id: int) -> tuple[tuple[str, ...], float] | None:
        """For a ready waiting request of several profiles: the UUIDs of the workers
        reserved for it (idle, or running a backfilled job) and the time its whole set is
        expected to be free by (what backfilled jobs must end by); None for any other."""
        request = self._requests.get(request_id)
        if (
            request is None
            or not request.ready
            or request.state is not RequestState.WAITING
            or not isinstance(request.bucket, MultiBucket)
        ):
            return None
        return tuple(w.uuid for w in request.reserved), self._reserved_start(request, now)

    def live_requests(self) -> Iterator[RequestView]:
        return (r.view() for r in self._requests.values())

    def worker(self, uuid: str) -> WorkerView:
        return self._known_worker(uuid).view()

    def workers(self) -> list[WorkerView]:
        return [w.view() for w in self._workers.values()]

    def tokens(self) -> list[TokenRecord]:
        """Every token issued and not yet purged, oldest first (revoked and expired ones
        too)."""
        return self._tokens.all()

    def next_token_purge(self, retention: float) -> float | None:
        """When purge_tokens with this retention next has a token to forget, or None."""
        return self._tokens.next_purge(retention)

    @property
    def last_request_id(self) -> int:
        """The id of the newest request; every id up to it was given out."""
        return self._last_request_id

    @property
    def live_count(self) -> int:
        """Requests WAITING or IN_PROGRESS."""
        return len(self._requests)

    def live_tally(self) -> dict[tuple[RequestState, int], int]:
        """How many live requests there are of each (state, priority), without a walk."""
        return {key: count for key, count in self._live_tally.items() if count}

    @property
    def index_visits(self) -> int:
        """Waiting-request buckets and workers the core's index lookups have looked at, ever:
        the cost of an event is the difference across it."""
        return self._queue.visits + self._idle.visits + self._registered.visits

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    @property
    def waiting_count(self) -> int:
        return len(self._queue)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def next_timer(self) -> float | None:
        """When tick() next has work to do, or None."""
        due = [t for t in (self._timers.next_due(), self._tokens.next_unseal()) if t is not None]
        return min(due, default=None)

    def drain(self) -> Changes:
        """Hand out and forget everything that changed since the last drain."""
        return self._out.drain(self._last_request_id)

    # ------------------------------------------------------------ token commands

    def issue_token(self, token: TokenRecord) -> TokenRecord:
        """Keep a new bearer token under the next id (the caller checked its fields), or
        return the one its idempotency key issued (see TokenTable.issue)."""
        record, new = self._tokens.issue(token)
        if new:
            self._out.token(record)
        return record

    def revoke_token(self, now: float, token_id: int) -> TokenRecord:
        """Revoke a token; revoking it again keeps the first time and changes nothing."""
        record, changed = self._tokens.revoke(token_id, now)
        if changed:
            self._out.token(record)
        return record

    def purge_tokens(self, now: float, retention: float, limit: int) -> list[int]:
        """Forget up to limit tokens that stopped working (expired or revoked) more than
        retention seconds before now; their ids, which the store deletes in the batch."""
        purged = self._tokens.purge(now, retention, limit)
        for token_id in purged:
            self._out.removed_token(token_id)
        return purged

    # ------------------------------------------------------------ stack commands

    def stacks(self) -> list[StackView]:
        """Every stack by name, each with the request holding it (0 for none)."""
        return [self._stack_view(name) for name in sorted(self._stacks)]

    def allocations(self) -> list[Allocation]:
        """Every running request's boards and collateral, by request id: one walk of the
        workers (an admin's read, not a matching)."""
        collateral: dict[int, list[str]] = {}
        running: set[int] = set()
        for worker in self._workers.values():
            if worker.collateral_of:
                collateral.setdefault(worker.collateral_of, []).append(worker.uuid)
            elif worker.state is WorkerState.RUNNING and worker.request_id:
                running.add(worker.request_id)
        found = []
        for request_id in sorted(running):
            request = self._requests[request_id]
            names = [name for name, _ in request.profiles] or [""]
            boards = []
            for name, job in zip(names, request.jobs, strict=True):
                runner = self._workers.get(job.worker_uuid)
                boards.append(
                    AllocatedBoard(
                        name,
                        job.worker_uuid,
                        runner.dryad_address if runner else "",
                        runner.stack if runner else "",
                    )
                )
            first = request.jobs[0]
            found.append(
                Allocation(
                    request_id,
                    request.owner,
                    tuple(boards),
                    tuple(sorted(collateral.get(request_id, ()))),
                    first.started_at,
                    first.timeout_at,
                )
            )
        return found

    def stack(self, name: str) -> StackView:
        if name not in self._stacks:
            raise NotFound(f"no stack is named {name[:80]!r}; list them with schedctl stacks list")
        return self._stack_view(name)

    def create_stack(self, now: float, name: str, workers: Sequence[str]) -> StackView:
        """Name a set of registered workers wired together. A worker is in one stack at
        most. If a request already runs on some of them, it holds the others as collateral."""
        members = self.policy.check_stack(name, workers)
        if name in self._stacks:
            raise AlreadyExists(
                f"a stack named {name!r} exists; delete it first or pick another name"
            )
        for uuid in members:
            if uuid not in self._workers:
                raise WorkerNotFound(uuid)
            if uuid in self._stack_of:
                raise FailedPrecondition(
                    f"worker {uuid} is in stack {self._stack_of[uuid]!r}; a worker is in one "
                    "stack at most: delete that stack first"
                )
        holders = {self._holder_of(self._workers[uuid]) for uuid in members} - {0}
        if len(holders) > 1:
            raise FailedPrecondition(
                f"workers of the stack are in use by requests {sorted(holders)}; create it "
                "once at most one request holds its workers"
            )
        view = StackView(name, members, now)
        self._stacks[name] = view
        for uuid in members:
            self._stack_of[uuid] = name
            worker = self._workers[uuid]
            worker.stack = name
            self._out.worker(worker)
        if holders:
            request = self._requests[holders.pop()]
            self._hold_collateral(request, self._request_workers(request))
        self._out.stack(view)
        # A waiting request whose group must be in one stack may find its set in this one.
        self._match_freed([w for uuid in members if (w := self._workers[uuid]) in self._idle], now)
        return self._stack_view(name)

    def delete_stack(self, now: float, name: str) -> StackView:
        """Forget a stack; its collateral is free at once."""
        view = self.stack(name)
        members = [w for uuid in view.workers if (w := self._workers.get(uuid)) is not None]
        # Requests whose co-located group could use this stack may have no other.
        before = list(dict.fromkeys(b for w in members for b in self._servable_by(w)))
        del self._stacks[name]
        freed: list[Worker] = []
        for uuid in view.workers:
            del self._stack_of[uuid]
            worker = self._workers.get(uuid)
            if worker is None:
                continue
            worker.stack = ""
            if worker.collateral_of:
                self._free_collateral(worker, freed)
            self._out.worker(worker)
        self._out.removed_stack(name)
        self._invalidate_orphans(
            [b for b in before if isinstance(b, MultiBucket) and b.colocated],
            now,
            f"stack {name!r} was deleted",
        )
        self._match_freed(freed, now)
        return view

    def _stack_view(self, name: str) -> StackView:
        view = self._stacks[name]
        holder = 0
        for uuid in view.workers:
            worker = self._workers.get(uuid)
            if worker is not None and (holder := self._holder_of(worker)):
                break
        return StackView(view.name, view.workers, view.created_at, holder)

    @staticmethod
    def _holder_of(worker: Worker) -> int:
        """The request that runs on the worker or holds it as collateral (0 for none)."""
        if worker.state is WorkerState.RUNNING and worker.request_id:
            return worker.request_id
        return worker.collateral_of

    def _request_workers(self, request: Request) -> list[Worker]:
        return [w for job in request.jobs if (w := self._workers.get(job.worker_uuid))]

    def _hold_collateral(self, request: Request, workers: Sequence[Worker]) -> None:
        """Hold the other workers of each stack the request runs on, so that no other
        request is matched to them: the cost is the size of those stacks."""
        for taken in workers:
            if not taken.stack:
                continue
            for uuid in self._stacks[taken.stack].workers:
                worker = self._workers.get(uuid)
                if worker is None or worker.collateral_of == request.id:
                    continue
                if worker.state is WorkerState.RUNNING and worker.request_id:
                    continue  # a board of the request itself
                worker.collateral_of = request.id
                self._idle.remove(worker)
                self._unreserve(worker)  # held until the request ends: kept for no one
                self._out.worker(worker)

    def _release_collateral(
        self, request: Request, workers: Sequence[Worker | None]
    ) -> list[Worker]:
        """Free what the ended request held as collateral; the freed IDLE workers."""
        freed: list[Worker] = []
        for taken in workers:
            if taken is None or not taken.stack:
                continue
            for uuid in self._stacks[taken.stack].workers:
                worker = self._workers.get(uuid)
                if worker is not None and worker.collateral_of == request.id:
                    self._free_collateral(worker, freed)
                    self._out.worker(worker)
        return freed

    def _free_collateral(self, worker: Worker, freed: list[Worker]) -> None:
        worker.collateral_of = 0
        if worker.state is WorkerState.IDLE:
            self._idle.add(worker)
            freed.append(worker)

    def _match_freed(self, freed: Sequence[Worker], now: float) -> None:
        for worker in freed:
            # An earlier one's match may have taken it, or held it as collateral again.
            if worker.state is WorkerState.IDLE and worker in self._idle:
                self._match_worker(worker, now)

    # ---------------------------------------------------------- request commands

    def keyed_request(self, now: float, owner: str, idem: Idempotency) -> RequestView | None:
        """The request owner's key made, live or finished in the last minutes, if the call
        asks the same (else IdempotencyKeyReused); None if the core knows no such key."""
        found = self._keys.find(owner, idem, now)
        if found is None:
            return None
        view = self._requests[found].view() if isinstance(found, int) else found
        return same_arguments(view, owner, idem)

    def new_request(
        self,
        now: float,
        owner: str,
        owner_groups: frozenset[str],
        caps: Mapping[str, str],
        *,
        priority: int = 0,
        valid_after: float | None = None,
        deadline: float | None = None,
        accept_unsatisfiable: bool = False,
        no_wait: bool = False,
        privileged: bool = False,
        job_timeout: float = 0.0,
        idempotency: Idempotency | None = None,
        profiles: Sequence[tuple[str, Mapping[str, str]]] = (),
        together: Sequence[Colocation] = (),
    ) -> RequestView:
        """Queue a request; it is matched at once if workers are free, one per profile
        (caps alone: one unnamed profile), each group of together on one host or stack.
        With no_wait it is matched at once or refused (Busy) and nothing changes. A request
        with an idempotency key is remembered under it (the caller checked keyed_request
        first)."""
        policy = self.policy
        named: tuple[Profile, ...] = ()
        asked: tuple[Colocation, ...] = ()
        colocated: tuple[Group, ...] = ()
        if together and not profiles:
            raise InvalidArgument(
                "together groups profiles; give the boards as two or more profiles, not caps"
            )
        if profiles:
            if caps:
                raise InvalidArgument(
                    "give either caps (one board) or profiles (one or more boards), not both; "
                    "put the caps into a profile"
                )
            named = self._check_profiles(profiles)
            asked, colocated = check_together(together, [name for name, _ in named])
            pairs = named[0][1]
            if len(named) == 1 and not named[0][0]:
                named = ()  # one unnamed profile is a request of caps, as before profiles
        else:
            pairs = cap_pairs(caps)  # the one conversion of the caller's caps
            policy.check_caps(pairs)
            check_request_caps(pairs)
        job_timeout = policy.check_job_timeout(job_timeout)
        priority = policy.check_priority(priority, None if privileged else owner_groups)
        valid_after = now if valid_after is None else valid_after
        if deadline is None:
            deadline = max(now, valid_after) + policy.default_deadline
            if deadline > LATEST_TIME:
                raise InvalidArgument(
                    f"valid_after leaves no room for the default deadline "
                    f"({policy.default_deadline:g} s later) before the year 10000; give a deadline"
                )
        self._check_times(now, valid_after, deadline)
        sig, groups = self._queue.intern(pairs, owner_groups)
        if named:
            named = tuple((name, self._queue.intern_sig(p)) for name, p in named)
            sig = named[0][1]
        multi = len(named) > 1
        needs = tuple(need_of(p) for _, p in named) if multi else (need_of(sig),)
        if not accept_unsatisfiable and not (
            self._boards(needs, self._registered_view(groups), colocated) is not None
            if multi
            else self._registered.any_capable(needs[0], groups)
        ):
            shown = ", ".join(sorted(groups)) or "none"
            if colocated:
                raise NoCapableWorker(
                    f"no set of registered workers, a different one for each of the "
                    f"{len(needs)} profiles ({self._format_profiles(named)}) with "
                    f"{describe(colocated, [name for name, _ in named])}, is open to your "
                    f"groups ({shown}); check the profiles, their groups (hosts and stacks: "
                    "schedctl workers list, schedctl stacks list), or set "
                    "accept_unsatisfiable to queue anyway"
                )
            if multi:
                raise NoCapableWorker(
                    f"no set of registered workers, a different one for each of the "
                    f"{len(needs)} profiles ({self._format_profiles(named)}), is open to your "
                    f"groups ({shown}); check the profiles, or set accept_unsatisfiable to "
                    "queue anyway"
                )
            raise NoCapableWorker(
                f"no registered worker has caps {format_caps(sig)} and is open to your "
                f"groups ({shown}); check the caps, or set accept_unsatisfiable to queue anyway"
            )
        if self._queue.waiting_of(owner) >= policy.max_waiting_per_user:
            raise ResourceExhausted(
                f"{owner} already has {policy.max_waiting_per_user} waiting requests, the most "
                "allowed; close some or wait for them to run"
            )
        sets = self._queue.cap_sets_of(owner)
        if sets >= policy.max_waiting_cap_sets_per_user and not self._queue.in_cap_set(
            owner, tuple(p for _, p in named) if multi else (sig,), groups, colocated
        ):
            raise ResourceExhausted(
                f"{owner}'s waiting requests already ask for {sets:,} different sets of caps, "
                "the most allowed per user (max_waiting_cap_sets_per_user); close waiting "
                "requests you no longer need, or ask for caps your other requests ask for"
            )
        size = sum(caps_size(p) for _, p in named) if multi else caps_size(sig)
        used = self._queue.caps_bytes_of(owner)
        if used + size > policy.max_waiting_caps_bytes_per_user:
            raise ResourceExhausted(
                f"{owner}'s waiting requests already carry {used:,} bytes of caps and this one "
                f"{size:,}, over the limit of {policy.max_waiting_caps_bytes_per_user:,} bytes "
                "per user (max_waiting_caps_bytes_per_user); close waiting requests you no "
                "longer need, or ask for fewer or shorter caps"
            )
        if no_wait:
            if valid_after > now:
                raise InvalidArgument("no_wait asks for a board now; leave valid_after unset")
            usable = self._usable(
                (priority, self._last_request_id + 1),
                now + policy.job_timeouts(job_timeout)[0],
                now,
            )
            capable, candidate = self._idle_view(groups, usable)
            if multi and self._boards(needs, (capable, candidate), colocated) is None:
                where = f"({describe(colocated, [n for n, _ in named])}) " if colocated else ""
                raise Busy(
                    f"some of the workers that could serve the {len(needs)} profiles together "
                    f"{where}are busy; try again later, or queue the request without no_wait"
                )
            if not multi and next(iter(capable(needs[0])), None) is None:
                raise Busy(
                    f"every worker with caps {format_caps(sig)} open to your groups is busy; "
                    "try again later, or queue the request without no_wait"
                )
        self._last_request_id += 1
        request = Request(
            self._last_request_id,
            owner,
            groups,
            sig,
            priority,
            valid_after,
            deadline,
            now,
            job_timeout,
            profiles=named,
            together=asked,
            colocated=colocated,
        )
        if idempotency is not None:
            request.idempotency_key = idempotency.key
            request.arguments_hash = idempotency.arguments_hash
            self._keys.add(owner, idempotency.key, request.id)
        self._requests[request.id] = request
        self._live_tally[RequestState.WAITING, priority] += 1
        self._out.request(request)
        self._enqueue(request, now)
        if request.ready:
            self._match_request(request, now)
        return request.view()

    def close_request(self, now: float, request_id: int) -> RequestView:
        """Cancel a waiting request or end a running job."""
        request = self._live_request(request_id)
        if request.state is RequestState.WAITING:
            self._finish(request, RequestState.CANCELLED, now, "closed by its owner")
        else:
            self._end_job(request, now, RequestState.DONE, "closed by its owner")
        return request.view()

    def update_request(
        self,
        now: float,
        request_id: int,
        *,
        priority: int | None = None,
        valid_after: float | None = None,
        deadline: float | None = None,
        privileged: bool = False,
    ) -> RequestView:
        """Change priority, valid_after or deadline of a WAITING request."""
        request = self._live_request(request_id)
        if request.state is not RequestState.WAITING:
            raise WrongRequestState(
                f"request {request_id} is {request.state.name}; "
                "only WAITING requests can be updated"
            )
        new_priority = request.priority if priority is None else priority
        if priority is not None:
            if priority == 0:
                raise InvalidArgument("priority must be between 1 and 16, got 0")
            self.policy.check_priority(priority, None if privileged else request.owner_groups)
        new_valid_after = request.valid_after if valid_after is None else valid_after
        new_deadline = request.deadline if deadline is None else deadline
        self._check_times(now, new_valid_after, new_deadline)

        if new_priority != request.priority:
            old_priority, request.priority = request.priority, new_priority
            self._queue.reprioritize(request, old_priority)
            self._live_tally[RequestState.WAITING, old_priority] -= 1
            self._live_tally[RequestState.WAITING, new_priority] += 1
        if new_deadline != request.deadline:
            request.deadline = new_deadline
            self._push_timer(new_deadline, TimerKind.DEADLINE, request)
        if new_valid_after != request.valid_after:
            request.valid_after = new_valid_after
            ready = new_valid_after <= now
            self._queue.set_ready(request, ready)
            if not ready:
                self._push_timer(new_valid_after, TimerKind.VALID_AFTER, request)
        request.updated_at = now
        self._out.request(request)
        # Its reservations are made again for its new priority and times (or not at all):
        # its boards go to whoever now comes first for them, it among the others.
        self._rematch(self._release_reserved(request), now)
        if request.state is RequestState.WAITING and request.ready:
            self._match_request(request, now)
        return request.view()

    def prolong_access(self, now: float, request_id: int, seen_count: int | None = None) -> JobView:
        """Push the job's timeout to now + its step, within the prolong limits; given the
        prolong count the caller saw, a job prolonged since (a retry's first attempt) is
        returned as it is."""
        request = self._live_request(request_id)
        job = request.job
        if request.state is not RequestState.IN_PROGRESS or job is None:
            raise WrongRequestState(
                f"request {request_id} is {request.state.name}; only a request IN_PROGRESS "
                "has a job to prolong"
            )
        if seen_count is not None:
            if seen_count > job.prolong_count:
                raise InvalidArgument(
                    f"prolong_count {seen_count} is more than the {job.prolong_count} times "
                    f"the job of request {request_id} was prolonged; send the prolong_count "
                    "the scheduler last returned, or none"
                )
            if seen_count < job.prolong_count:
                return job.view()  # prolonged since the caller looked: this call is done
        if job.prolong_count >= self.policy.max_prolongs:
            raise ProlongLimitReached(
                f"the job of request {request_id} was prolonged {job.prolong_count} times, "
                "the most allowed; open a new request to go on"
            )
        step = self.policy.job_timeouts(request.job_timeout)[1]
        new_timeout = min(now + step, job.max_timeout_at)
        if new_timeout <= job.timeout_at:
            if job.timeout_at < job.max_timeout_at:
                # The job already runs longer than a prolong would give; nothing to do.
                return job.view()
            if job.max_timeout_at < job.started_at + self.policy.max_job_duration:
                raise ProlongLimitReached(
                    f"the job of request {request_id} was started on boards reserved for a "
                    "waiting request of several boards, so it must end before that request "
                    f"can start, {job.max_timeout_at - now:.0f} s from now; open a new "
                    "request to go on"
                )
            raise ProlongLimitReached(
                f"the job of request {request_id} already runs until its limit of "
                f"{self.policy.max_job_duration:.0f} s after it started; open a new request "
                "to go on"
            )
        for each in request.jobs:  # the boards of a request run and end together
            each.timeout_at = new_timeout
            each.prolong_count += 1
        request.updated_at = now
        self._push_timer(new_timeout, TimerKind.JOB_TIMEOUT, request)
        self._out.request(request)
        return job.view()

    # ----------------------------------------------------------- worker commands

    def register(
        self,
        now: float,
        caps: Mapping[str, str],
        dryad_address: str,
        ssh_address: str,
        *,
        instance_id: str = "",
        dryad_version: str = "",
    ) -> WorkerView:
        """Add a worker in MAINTENANCE, or update a known one (see the Superviser API)."""
        self.policy.check_caps(caps.items())
        uuid = check_worker_uuid(caps)
        check_dial_address(dryad_address, what="dryad_address")
        check_dial_address(ssh_address, what="ssh_address")
        if len(instance_id) > 128 or len(dryad_version) > 128:
            raise InvalidArgument("instance_id and dryad_version must be at most 128 characters")
        sig = cap_pairs(caps)
        worker = self._workers.get(uuid)
        if worker is None:
            worker = Worker(
                uuid, sig, frozenset(), WorkerState.MAINTENANCE, dryad_address, ssh_address, now
            )
            worker.instance_id = instance_id
            worker.dryad_version = dryad_version
            worker.reason = "registered"
            stack = self._stack_of.get(uuid, "")
            if stack:
                # A stack may name a worker that was deregistered: it comes back into it,
                # as collateral if a request holds the stack.
                worker.stack = stack
                worker.collateral_of = self._stack_view(stack).holder
            self._workers[uuid] = worker
            self._registered.add(worker)
            self._add_to_host(worker)
            self._out.history(HistoryEntry(uuid, now, None, worker.state, worker.reason))
            self._out.worker(worker)
            self._arm_heartbeat(worker)
            return worker.view()

        orphan_candidates: list[BucketBase] = []
        if sig != worker.caps_sig or dryad_address != worker.dryad_address:
            # Another host may leave a co-located group without a host to run on.
            orphan_candidates = self._servable_by(worker)
        if sig != worker.caps_sig:
            self._reindex(worker, sig, worker.groups)
        if dryad_address != worker.dryad_address:
            self._remove_from_host(worker)
            worker.dryad_address = dryad_address
            self._add_to_host(worker)
        worker.ssh_address = ssh_address
        worker.dryad_version = dryad_version
        worker.last_seen = now
        restarted = not instance_id or instance_id != worker.instance_id
        worker.instance_id = instance_id
        self._out.worker(worker)
        if restarted:
            self._dryad_restarted(worker, now)
        self._recover_if_back(worker, now)
        self._invalidate_orphans(
            orphan_candidates, now, f"worker {uuid} registered again with other caps or host"
        )
        if worker.state is WorkerState.IDLE:
            self._match_worker(worker, now)
        self._arm_heartbeat(worker)
        return worker.view()

    def heartbeat(
        self, now: float, uuid: str, host_status: HostStatus | None = None
    ) -> WorkerState:
        """Note that the worker's dryad is alive; returns the worker's state after it."""
        worker = self._known_worker(uuid)
        worker.last_seen = now
        if host_status is not None:
            worker.host_status = host_status
        self._out.seen(worker)
        self._recover_if_back(worker, now)
        self._arm_heartbeat(worker)
        return worker.state

    def live_job_users(self, uuid: str) -> tuple[str, ...] | None:
        """The job users of the worker that must stay, or None while a dryad call in flight
        may be making or removing them (the dryad removes every other user it has)."""
        worker = self._known_worker(uuid)
        if worker.state is WorkerState.IDLE:
            return () if worker.prepared is None else (worker.prepared.username,)
        if worker.state is WorkerState.RUNNING:
            request = self._requests.get(worker.request_id)
            jobs = () if request is None else request.jobs
            access = next((job.access for job in jobs if job.worker_uuid == uuid), None)
            return None if access is None else (access.username,)
        if worker.state in (WorkerState.MAINTENANCE, WorkerState.FAILED):
            return ()
        return None

    def set_fail(self, now: float, uuid: str, reason: str, *, local_checks: bool = False) -> bool:
        """The dryad reports its worker failed; False when the report was dropped: one of
        its own checks, which began before the worker left service (the dryad checks only
        workers in service), or while a Prepare runs the same checks (a newer verdict)."""
        reason = self.policy.check_reason(reason) or "failure reported by the dryad"
        worker = self._known_worker(uuid)
        if local_checks and (
            worker.state not in IN_SERVICE
            or (worker.state is WorkerState.PREPARE and worker.checking)
        ):
            return False
        self._fail_worker(worker, now, reason, FailureKind.REPORTED)
        return True

    def set_state(
        self,
        now: float,
        uuid: str,
        state: WorkerState,
        reason: str = "",
        *,
        after_job: bool = False,
    ) -> WorkerView:
        """Admin puts a worker into service (IDLE) or takes it out (MAINTENANCE): with
        after_job, a RUNNING worker takes no new job and goes once its job ends (a drain,
        which IDLE cancels)."""
        self.policy.check_reason(reason)
        worker = self._known_worker(uuid)
        current = worker.state
        if state is WorkerState.IDLE:
            if current in (WorkerState.IDLE, WorkerState.PREPARE):
                return worker.view()
            if current is WorkerState.RUNNING and worker.drain_reason:
                worker.drain_reason = ""  # the drain is called off; the job goes on
                self._out.worker(worker)
                return worker.view()
            if current is WorkerState.RUNNING:
                raise WrongWorkerState(
                    f"worker {uuid} is RUNNING the job of request {worker.request_id}; "
                    "it becomes IDLE by itself when the job ends"
                )
            if current is WorkerState.BUSY:
                raise WrongWorkerState(
                    f"worker {uuid} is entering MAINTENANCE; set it IDLE once it is there"
                )
            self._transition(worker, WorkerState.PREPARE, now, reason or "put into service")
            self._issue_prepare(worker)
            self._arm_heartbeat(worker)
        elif state is WorkerState.MAINTENANCE:
            if current in (WorkerState.MAINTENANCE, WorkerState.BUSY):
                return worker.view()
            reason = reason or "put into maintenance by an admin"
            if current is WorkerState.RUNNING and after_job:
                worker.drain_reason = reason
                # Kept for no waiting request: it will not come back into service.
                holder = worker.reserved_for
                self._unreserve(worker)
                if holder is not None and holder.state is RequestState.WAITING and holder.ready:
                    self._match_request(holder, now)  # another idle board may be kept for it
                self._out.worker(worker)
                return worker.view()
            if current is WorkerState.RUNNING:
                request = self._requests[worker.request_id]
                self._end_job(
                    request,
                    now,
                    RequestState.FAILED,
                    f"worker {uuid} put into maintenance: {reason}",
                    worker,
                )
            worker.prepared = None
            self._transition(worker, WorkerState.BUSY, now, reason)
            self._issue(worker, DryadCallKind.PUT_IN_MAINTENANCE, reason)
            self._arm_heartbeat(worker)
        else:
            raise InvalidArgument(
                f"a worker can be set only to IDLE or MAINTENANCE, not {state.name}"
            )
        return worker.view()

    def set_groups(self, now: float, uuid: str, groups: frozenset[str]) -> WorkerView:
        """Replace a worker's groups; requests that lose their last worker become INVALID."""
        groups = self.policy.check_groups(groups)
        worker = self._known_worker(uuid)
        if groups != worker.groups:
            before = self._servable_by(worker)
            self._reindex(worker, worker.caps_sig, groups)
            self._out.worker(worker)
            self._invalidate_orphans(before, now, f"worker {uuid} changed groups")
            if worker.state is WorkerState.IDLE:
                self._match_worker(worker, now)
        return worker.view()

    def deregister(self, now: float, uuid: str) -> None:
        """Remove a worker in MAINTENANCE or FAILED."""
        worker = self._known_worker(uuid)
        if worker.state not in (WorkerState.MAINTENANCE, WorkerState.FAILED):
            raise WrongWorkerState(
                f"worker {uuid} is {worker.state.name}; put it in MAINTENANCE before "
                "deregistering it"
            )
        before = self._servable_by(worker)
        self._registered.remove(worker)
        self._remove_from_host(worker)
        del self._workers[uuid]
        self._out.removed(worker)
        self._invalidate_orphans(before, now, f"worker {uuid} was deregistered")

    def dryad_call_succeeded(
        self, now: float, call: DryadCall, result: Access | FailedChecks | None = None
    ) -> None:
        """A dryad call finished, with the access a Prepare made or the checks it found
        failing; results of superseded calls are ignored."""
        worker = self._workers.get(call.worker_uuid)
        if worker is None:
            return
        if call.op_id == worker.health_op:
            worker.health_op = 0
            return
        if worker.pending_op != call.op_id:
            return
        worker.pending_op = 0
        if call.kind is DryadCallKind.PREPARE and worker.state is WorkerState.PREPARE:
            if isinstance(result, FailedChecks):
                # Worded as a failed Healthcheck call was before Prepare ran the checks.
                reason = f"{DryadCallKind.HEALTHCHECK.value} failed: {result.what}"
                self._fail_worker(
                    worker, now, reason[: self.policy.max_reason_len], FailureKind.DRYAD_CALL
                )
                return
            if result is None:
                self._fail_worker(worker, now, "Prepare returned no access")
                return
            worker.prepared = result
            # A restart prepares a board it finds in PREPARE again: this needs no commit.
            self._transition(worker, WorkerState.IDLE, now, "prepared", rebuildable=True)
            self._match_worker(worker, now)
        elif call.kind is DryadCallKind.PUT_IN_MAINTENANCE and worker.state is WorkerState.BUSY:
            self._transition(worker, WorkerState.MAINTENANCE, now, worker.reason)

    def dryad_call_failed(self, now: float, call: DryadCall, error: str) -> None:
        """A dryad call failed: the worker becomes FAILED, unless the call was superseded."""
        worker = self._workers.get(call.worker_uuid)
        if worker is None:
            return
        if call.op_id == worker.health_op:
            worker.health_op = 0
        elif worker.pending_op == call.op_id:
            worker.pending_op = 0
        else:
            return
        reason = f"{call.kind.value} failed: {error}"
        self._fail_worker(worker, now, reason[: self.policy.max_reason_len], FailureKind.DRYAD_CALL)

    def tunnel_opened(self, now: float, request_id: int, port: int, index: int = 0) -> None:
        """The tunnel of the job of profile index listens on port; AcquireWorker can answer
        once every job's has."""
        request = self._requests.get(request_id)
        if (
            request is None
            or index >= len(request.jobs)
            or request.state is not RequestState.IN_PROGRESS
        ):
            # The job ended while its tunnel was being opened.
            self._out.tunnel(CloseTunnel(request_id, index))
            return
        job = request.jobs[index]
        if job.tunnel_port != port:
            job.tunnel_port = port
            request.updated_at = now
            # A restart opens the tunnel again (on this port if it is stored and free).
            self._out.rebuildable(request)

    def tunnel_failed(self, now: float, request_id: int, error: str, index: int = 0) -> None:
        """A job's tunnel could not be opened: the request fails, its boards are prepared
        again."""
        request = self._requests.get(request_id)
        if request is None or not request.jobs or request.state is not RequestState.IN_PROGRESS:
            return
        self._end_job(
            request,
            now,
            RequestState.FAILED,
            f"the SSH tunnel of the job of profile {index} could not be opened: {error}",
        )

    def deaf_until(self, now: float) -> None:
        """The scheduler heard nothing for a while up to now (its process stalled, or its
        clock stepped forward): every worker's heartbeat silence is counted from now, as
        after a restart."""
        self._heartbeat_epoch = max(self._heartbeat_epoch, now)

    def tick(self, now: float) -> None:
        """Fire every timer due at or before now."""
        for token in self._tokens.unseal(now):
            self._out.token(token)
        # Every timer due fires before any freed board is matched: boards that went silent
        # together must not be handed out by the failure of one of them (their request
        # would start and fail in the same tick), nor before a request whose valid_after
        # has come is ready, whatever the order of their due times.
        newly_ready: list[Request] = []
        held: list[Worker] = []
        self._held_matches = held
        try:
            while (item := self._timers.pop_due(now)) is not None:
                self._fire(item, now, newly_ready)
        finally:
            self._held_matches = None
        self._match_freed(held, now)
        # Requests that became ready together are matched most important first.
        newly_ready.sort(key=lambda r: (r.priority, r.id))
        for request in newly_ready:
            if request.state is RequestState.WAITING and request.ready:
                self._match_request(request, now)

    def _fire(
        self, item: tuple[float, TimerKind, Target], now: float, newly_ready: list[Request]
    ) -> None:
        """One due timer's effect; matches are tick()'s, once every timer has fired."""
        due, kind, target = item
        if kind is TimerKind.HEARTBEAT:
            assert isinstance(target, Worker)
            if self._workers.get(target.uuid) is target:
                self._check_heartbeat(target, now)
            return
        if kind is TimerKind.HEALTHCHECK:
            assert isinstance(target, Worker)
            if self._timer_applies(due, kind, target):
                self._periodic_healthcheck(target, now)
            return
        assert isinstance(target, int)
        request = self._requests.get(target)
        if request is None or not self._request_timer_applies(due, kind, request):
            return
        if kind is TimerKind.DEADLINE:
            self._finish(request, RequestState.TIMEOUT, now, "deadline passed while waiting")
        elif kind is TimerKind.VALID_AFTER:
            self._queue.set_ready(request, True)
            newly_ready.append(request)
        elif kind is TimerKind.JOB_TIMEOUT:
            self._end_job(request, now, RequestState.DONE, "job timed out")

    # ----------------------------------------------------------------- helpers

    def _live_request(self, request_id: int) -> Request:
        request = self._requests.get(request_id)
        if request is None:
            raise RequestNotFound(request_id)
        return request

    def _known_worker(self, uuid: str) -> Worker:
        worker = self._workers.get(uuid)
        if worker is None:
            raise WorkerNotFound(uuid)
        return worker

    @staticmethod
    def _check_times(now: float, valid_after: float, deadline: float) -> None:
        if deadline <= now:
            raise InvalidArgument("deadline is in the past; give a later deadline or none")
        if valid_after > deadline:
            raise InvalidArgument("valid_after is after the deadline; the request could never run")

    def _enqueue(self, request: Request, now: float) -> None:
        self._queue.add(request)
        self._push_timer(request.deadline, TimerKind.DEADLINE, request)
        if request.valid_after <= now:
            self._queue.set_ready(request, True)
        else:
            self._push_timer(request.valid_after, TimerKind.VALID_AFTER, request)

    def _enqueue_all(self, requests: list[Request], now: float) -> None:
        """_enqueue() each request, with one sort of the queue's order and one heapify of
        the timers for them all."""
        queue = self._queue
        queue.add_all(requests)

        def timers() -> Iterator[tuple[float, TimerKind, Target]]:
            # Made one at a time as they are pushed: no list of them all is held.
            for request in requests:
                yield request.deadline, TimerKind.DEADLINE, request.id
                if request.valid_after <= now:
                    queue.set_ready(request, True)
                else:
                    yield request.valid_after, TimerKind.VALID_AFTER, request.id

        self._timers.push_all(timers())

    def _check_profiles(
        self, profiles: Sequence[tuple[str, Mapping[str, str]]]
    ) -> tuple[Profile, ...]:
        """Profiles as (name, caps pairs), refusing bad names and caps."""
        self.policy.check_profile_names([name for name, _ in profiles])
        checked: list[Profile] = []
        for index, (name, caps) in enumerate(profiles):
            pairs = cap_pairs(caps)
            what = f"profile {name or index} caps"
            self.policy.check_caps(pairs, what=what)
            check_request_caps(pairs, what=what)
            checked.append((name, pairs))
        return tuple(checked)

    @staticmethod
    def _format_profiles(profiles: Sequence[Profile]) -> str:
        return "; ".join(
            f"{name or index}: {format_caps(sig)}" for index, (name, sig) in enumerate(profiles)
        )

    def _boards(
        self,
        needs: Sequence[Need],
        view: tuple[Capable, Candidate],
        colocated: Sequence[Group] = (),
    ) -> list[Worker] | None:
        """A different worker of view (its candidates for a need, in the order they are to be
        taken, and whether a worker is one) for each need, each co-located group on one
        host or stack, the first in that order where there is a choice; None if there is
        no such set."""
        capable, candidate = view
        if colocated:
            return find_set(needs, colocated, capable, candidate, self._members_at)
        count = len(needs)
        candidates = []
        for need in needs:
            found = shortlist(capable(need), count)
            if not found:
                return None
            candidates.append(found)
        return match(candidates)

    def _registered_view(
        self, groups: frozenset[str], usable: Callable[[Worker], bool] | None = None
    ) -> tuple[Capable, Candidate]:
        """The registered workers open to groups (and usable), least capable first."""
        return from_index(self._registered, groups, usable)

    def _idle_view(
        self, groups: frozenset[str], usable: Usable, own: Sequence[Worker] = ()
    ) -> tuple[Capable, Candidate]:
        """The idle workers a request (of usable's order, owner groups groups, holding own)
        may take for a need, in the order it takes them: those reserved for it; the free
        ones, least capable first; those reserved for less important requests (taken
        outright); then those reserved for more important ones it may backfill, the most
        important holder first, until its looks are spent. Boards kept for others are
        never walked one by one past their holders (docs/architecture.md)."""
        idle = self._idle

        def capable(need: Need) -> Iterator[Worker]:
            for worker in own:
                if (
                    worker in idle
                    and need.met_by(worker.items)
                    and groups_compatible(worker.groups, groups)
                ):
                    yield worker
            yield from idle.free.capable(need, groups)
            yield from idle.kept_after(need, groups, usable.order)
            for worker in idle.kept.capable(need, groups):
                holder = worker.reserved_for
                assert holder is not None
                if order_of(holder) >= usable.order or usable.spent(holder):
                    return
                if usable(worker):
                    yield worker

        def candidate(worker: Worker) -> bool:
            return worker in idle and groups_compatible(worker.groups, groups) and usable(worker)

        return capable, candidate

    # ------------------------------------------------------------ reservations
    #
    # An IDLE worker may be reserved for one waiting request of several profiles (the most
    # important one it adds a board to when it comes free, or that finds it idle when it
    # is queued). A less important request may take it only if its job's first timeout
    # ends before the reserved request's set is expected to be free (backfill), and the
    # job may then not be prolonged past that time; the worker stays reserved meanwhile.
    # A more important request takes it outright. Derived state: never stored, rebuilt
    # as a restore matches the idle workers.

    def _usable(
        self,
        rank: tuple[int, int],
        ends: float,
        now: float,
        starts: dict[int, float] | None = None,
        firsts: dict[str, Request | None] | None = None,
    ) -> Usable:
        """Whether a request of this (priority, id) whose jobs end by ends may take an idle
        worker now (see Usable). firsts memoizes the best one-board request by worker uuid
        while the queue does not change."""
        bests = {} if firsts is None else firsts

        def first_for(worker: Worker) -> Request | None:
            uuid = worker.uuid
            if uuid in bests:
                return bests[uuid]
            first = bests[uuid] = self._queue.best_for(worker.items, worker.groups)
            return first

        return Usable(
            rank,
            ends,
            lambda holder: self._reserved_start(holder, now),
            first_for,
            {} if starts is None else starts,
        )

    def _first_timeout(self, request: Request) -> float:
        """How long the request's jobs run before their first timeout."""
        return self.policy.job_timeouts(request.job_timeout)[0]

    def _usable_for(
        self,
        request: Request,
        now: float,
        starts: dict[int, float] | None = None,
        firsts: dict[str, Request | None] | None = None,
    ) -> Usable:
        ends = now + self._first_timeout(request)
        return self._usable((request.priority, request.id), ends, now, starts, firsts)

    def _reserve(self, request: Request, worker: Worker) -> bool:
        """Reserve an idle worker for a waiting request of several profiles if it adds a
        board to those already reserved for it (distinct boards for distinct profiles)."""
        if worker.reserved_for is request:
            return True
        bucket = request.bucket
        assert isinstance(bucket, MultiBucket)
        held = (*request.reserved, worker)
        if len(held) > len(bucket.needs):
            return False
        if bucket.colocated:
            # A co-located group's reserved boards share its place.
            if not fits_reserved(held, bucket.needs, bucket.colocated):
                return False
        else:
            fits = [
                [i for i, need in enumerate(bucket.needs) if need.met_by(w.items)] for w in held
            ]
            if match(fits) is None:
                return False
        self._unreserve(worker)
        self._idle.keep(worker, request)
        request.reserved = held
        return True

    def _reserve_idle(self, request: Request, bucket: MultiBucket) -> None:
        """Reserve for a request that found no whole set the idle workers it can use that are
        not kept for a more important request: free ones first, then those kept for less
        important requests."""
        count = len(bucket.needs)
        idle, groups = self._idle, request.owner_groups
        for need in bucket.needs:
            free = chain(
                idle.free.capable(need, groups), idle.kept_after(need, groups, order_of(request))
            )
            for worker in shortlist(free, count):
                self._reserve(request, worker)

    def _unreserve(self, worker: Worker) -> None:
        holder = worker.reserved_for
        if holder is not None:
            self._idle.keep(worker, None)
            holder.reserved = tuple(w for w in holder.reserved if w is not worker)

    def _release_reserved(self, request: Request) -> tuple[Worker, ...]:
        """Drop every reservation of a request; the workers are to be matched again."""
        released = request.reserved
        request.reserved = ()
        for worker in released:
            self._idle.keep(worker, None)
        return released

    def _rematch(self, workers: Iterable[Worker], now: float) -> None:
        for worker in workers:
            if worker.state is WorkerState.IDLE and worker.reserved_for is None:
                self._match_worker(worker, now)

    def _free_at(
        self, worker: Worker, request: Request, now: float, latest: bool = False
    ) -> float | None:
        """When a worker is expected to be free for a request if no job is prolonged, or
        with latest, at the latest (None: not to be counted on: out of service, or kept for a
        more important request)."""
        holder = worker.reserved_for
        if (holder is not None and order_of(holder) < order_of(request)) or worker.drain_reason:
            return None
        state = worker.state
        if state not in (WorkerState.IDLE, WorkerState.PREPARE, WorkerState.RUNNING):
            return None
        # Collateral comes free with the request that holds it, a running board with its job.
        user = worker.collateral_of or (worker.request_id if state is WorkerState.RUNNING else 0)
        if not user:
            return now
        running = self._requests.get(user)
        if running is None or not running.jobs:
            return None
        job = running.jobs[0]
        return job.max_timeout_at if latest else job.timeout_at

    def _reserved_start(self, request: Request, now: float, *, latest: bool = False) -> float:
        """The earliest time by which a set of boards for the request is expected to be
        free: the boards reserved for it now, others when their jobs time out (with latest:
        at their max_timeout_at), the least late set (a bottleneck matching over the first
        few candidates of each profile: an upper bound that costs k^2 candidate reads, not
        a look at every worker)."""
        bucket = request.bucket
        assert isinstance(bucket, MultiBucket)
        if bucket.colocated:
            return self._colocated_start(request, bucket, now, latest)
        count = len(bucket.needs)
        timed: list[list[tuple[float, Worker]]] = []
        for need in bucket.needs:
            options = [
                (at, w)
                for w in request.reserved
                if need.met_by(w.items)
                and (at := self._free_at(w, request, now, latest)) is not None
            ]
            found = 0
            # The registered index changes seldom: its first candidates are remembered.
            walk = self._registered.capable_remembered(need, request.owner_groups, 2 * count)
            for worker in walk:
                at = self._free_at(worker, request, now, latest)
                if at is not None:
                    options.append((at, worker))
                    found += 1
                    if found == count:
                        break
            timed.append(options)
        for at in sorted({at for options in timed for at, _ in options}):
            if match([[w for t, w in options if t <= at] for options in timed]) is not None:
                return at
        return math.inf

    # Places per co-located group looked at for an expected start (what bounds its cost;
    # the start is an upper bound).
    MAX_PLACES_ESTIMATED = 4

    def _colocated_start(
        self, request: Request, bucket: MultiBucket, now: float, latest: bool
    ) -> float:
        """_reserved_start for a request with co-located groups: among a few candidates
        (its reserved boards, the first few of each profile that may come free for it, and
        the boards of the first few places of each group), when the co-located set a search
        that prefers the soonest free boards finds is free."""
        needs, groups, owner = bucket.needs, bucket.colocated, request.owner_groups
        count = len(needs)
        timed: dict[Worker, float] = {}

        def consider(worker: Worker) -> bool:
            if worker in timed:
                return True
            at = self._free_at(worker, request, now, latest)
            if at is None or not groups_compatible(worker.groups, owner):
                return False
            timed[worker] = at
            return True

        for worker in request.reserved:
            consider(worker)
        for need in needs:
            taken = 0
            # The registered index changes seldom: its first candidates are remembered.
            for worker in self._registered.firsts(need, owner, 4 * count):
                if consider(worker):
                    taken += 1
                    if taken == count:
                        break
        for indexes, placement in groups:
            anchors = [w for w in list(timed) if needs[indexes[0]].met_by(w.items)]
            places = dict.fromkeys(p for w in anchors if (p := place_of(w, placement)))
            for place in islice(places, self.MAX_PLACES_ESTIMATED):
                for worker in self._members_at(placement, place):
                    consider(worker)

        # Soonest free first: the set found is the least late one the search meets first
        # (an upper bound of the least late set, at the cost of one search).
        def soonest(worker: Worker) -> tuple[float, tuple[int, str]]:
            return timed[worker], worker.rank

        ordered = sorted(timed, key=soonest)

        def capable(need: Need) -> Iterable[Worker]:
            return (w for w in ordered if need.met_by(w.items))

        found = find_set(
            needs, groups, capable, timed.__contains__, self._members_at, order=soonest
        )
        return math.inf if found is None else max(timed[w] for w in found)

    def _add_to_host(self, worker: Worker) -> None:
        self._by_host.setdefault(worker.dryad_address, {})[worker.uuid] = worker

    def _remove_from_host(self, worker: Worker) -> None:
        on_host = self._by_host.get(worker.dryad_address)
        if on_host is not None:
            on_host.pop(worker.uuid, None)
            if not on_host:
                del self._by_host[worker.dryad_address]

    def _members_at(self, placement: Placement, place: str) -> Iterable[Worker]:
        """The registered workers on a host (dryad address) or in a stack."""
        if placement is Placement.HOST:
            return self._by_host.get(place, {}).values()
        view = self._stacks.get(place)
        if view is None:
            return ()
        return [w for uuid in view.workers if (w := self._workers.get(uuid)) is not None]

    def _servable_by(self, worker: Worker) -> list[BucketBase]:
        """Buckets of waiting requests the worker could serve (a board of)."""
        found: list[BucketBase] = []
        found.extend(self._queue.buckets_servable_by(worker.items, worker.groups))
        found.extend(self._queue.multis_servable_by(worker.items, worker.groups))
        return found

    def _match_request(self, request: Request, now: float) -> None:
        bucket = request.bucket
        assert bucket is not None, f"request {request.id} is matched but not queued"
        top = bucket.peek()
        if (
            top is not request
            and top is not None
            and self._first_timeout(top) <= self._first_timeout(request)
        ):
            # A more important ready request asks the same, with a job no longer, and got
            # nothing: neither would this one (nor reserve boards). Requests with equal
            # profiles share one walk, as a freed worker tries only a bucket's first.
            return
        starts: dict[int, float] = {}
        capable, candidate = self._idle_view(
            request.owner_groups, self._usable_for(request, now, starts), request.reserved
        )
        if isinstance(bucket, MultiBucket):
            boards = None
            if self._idle.may_serve(bucket.needs):
                boards = self._boards(bucket.needs, (capable, candidate), bucket.colocated)
            if boards is not None:
                self._start_jobs(request, boards, now, starts)
            else:
                self._reserve_idle(request, bucket)
            return
        assert isinstance(bucket, Bucket)
        worker = next(iter(capable(bucket.need)), None)
        if worker is not None:
            self._start_jobs(request, (worker,), now, starts)

    def _match_worker(self, worker: Worker, now: float, *, sets: bool = True) -> None:
        """Give an idle worker the most important ready request it can serve: one that
        needs only it, or one of several profiles for which the idle workers, it among
        them, make a whole set (unless not sets: then it is only reserved for one).
        Collateral serves no one."""
        if worker.collateral_of:
            return
        if self._held_matches is not None:
            self._held_matches.append(worker)
            return
        request = self._queue.best_for(worker.items, worker.groups)
        starts: dict[int, float] = {}
        # The queue does not change before this returns: each worker's best one-board
        # request (what a backfill of it must not overtake) is looked up once, not once
        # per set that could use the worker.
        firsts: dict[str, Request | None] = {worker.uuid: request}
        if near := self._queue.multis_near(worker.items, worker.groups):
            best = None if request is None else (request.priority, request.id)
            tops = []
            for bucket in near:
                top = bucket.peek()
                if top is None:
                    continue
                # Only a set more important than the best one-board request is worth a
                # closer look.
                order = (top.priority, top.id)
                if best is None or order < best:
                    tops.append((order, top, bucket))
            tops.sort()
            items, groups = worker.items, worker.groups
            idle = len(self._idle)
            for _, top, bucket in tops:
                if not bucket.serves(items, groups):
                    continue
                usable = self._usable_for(top, now, starts, firsts)
                if not usable(worker):
                    continue  # kept for a more important set, which this one cannot backfill
                # Every request of a bucket asks the same: if its first gets no set, none
                # does. A set needs as many idle workers as it has profiles.
                if sets and len(bucket.needs) <= idle and self._idle.may_serve(bucket.needs):
                    boards = self._boards(
                        bucket.needs,
                        self._idle_view(top.owner_groups, usable, top.reserved),
                        bucket.colocated,
                    )
                    if boards is not None:
                        self._start_jobs(top, boards, now, starts)
                        if worker.state is WorkerState.IDLE:
                            # The set left this worker out (it is kept for another set, or
                            # a restore matches): offer it again.
                            self._match_worker(worker, now)
                        return
                # The most important set this worker adds a board to keeps it; the less
                # important ones after it may only backfill it.
                holder = worker.reserved_for
                if (holder is None or order_of(top) < order_of(holder)) and self._reserve(
                    top, worker
                ):
                    starts.clear()  # the expected starts of both requests may move
        if request is not None and (
            worker.reserved_for is None or self._usable_for(request, now, starts, firsts)(worker)
        ):
            self._start_jobs(request, (worker,), now, starts)

    def _start_jobs(
        self,
        request: Request,
        workers: Sequence[Worker],
        now: float,
        starts: Mapping[int, float] | None = None,
    ) -> None:
        """Start one job per profile, on the worker given for it; they share their times.
        A job on a worker reserved for a more important request (backfill) may not run, nor
        be prolonged, past the time that request is expected to start (starts: those the
        backfill check worked out, by request id)."""
        max_timeout = now + self.policy.max_job_duration
        for worker in workers:
            # Out of the idle index before their reservations end, so that ending them
            # moves no board between its parts (IdleWorkers.keep) only to take it out.
            self._idle.remove(worker)
        for worker in workers:
            holder = worker.reserved_for
            if holder is None or holder is request:
                continue
            if order_of(holder) < order_of(request):
                # Backfill: the worker stays reserved, for when this job has ended.
                start = None if starts is None else starts.get(holder.id)
                if start is None:
                    start = self._reserved_start(holder, now)
                max_timeout = min(max_timeout, start)
            else:
                self._unreserve(worker)  # a more important request takes it
        released = self._release_reserved(request)
        self._queue.remove(request)
        timeout = min(now + self.policy.job_timeouts(request.job_timeout)[0], max_timeout)
        request.jobs = tuple(
            Job(worker.uuid, now, timeout, max_timeout, worker.ssh_address, worker.prepared)
            for worker in workers
        )
        request.state = RequestState.IN_PROGRESS
        self._live_tally[RequestState.WAITING, request.priority] -= 1
        self._live_tally[RequestState.IN_PROGRESS, request.priority] += 1
        request.updated_at = now
        for index, worker in enumerate(workers):
            worker.prepared = None
            worker.request_id = request.id
            self._out.usage(self._usage_of(request, index, worker, now))
            self._transition(worker, WorkerState.RUNNING, now, f"running request {request.id}")
            self._out.tunnel(OpenTunnel(request.id, worker.ssh_address, index=index))
        self._hold_collateral(request, workers)
        self._push_timer(timeout, TimerKind.JOB_TIMEOUT, request)
        self._out.request(request)
        self._rematch(released, now)

    def _finish(self, request: Request, state: RequestState, now: float, reason: str) -> None:
        """Move a live request to a terminal state; the core forgets it after the drain."""
        released: tuple[Worker, ...] = ()
        if request.state is RequestState.WAITING:
            released = self._release_reserved(request)
            self._queue.remove(request)
        elif request.state is RequestState.IN_PROGRESS:
            for index in range(len(request.jobs)):
                self._out.tunnel(CloseTunnel(request.id, index))
        self._live_tally[request.state, request.priority] -= 1
        request.state = state
        request.reason = reason
        request.updated_at = now
        for job in request.jobs:
            job.access = None
        self._record_end(request, now)
        del self._requests[request.id]
        self._out.request(request)
        if request.idempotency_key:
            self._keys.finished(request.view(), now)
        self._rematch(released, now)

    def _usage_of(self, request: Request, index: int, worker: Worker, now: float) -> JobUsage:
        """The usage record of a job that starts now on worker."""
        return JobUsage(
            request.id,
            index,
            request.owner,
            granting_group(worker.groups, request.owner_groups),
            worker.uuid,
            request.created_at,
            now,
            None,
            RequestState.IN_PROGRESS,
        )

    def _record_end(self, request: Request, now: float) -> None:
        """Usage records of a request that ends now: one per job, or one of a request
        that never started. A store keeps the group of a job's first record; the group
        given here counts only where the start left none (a job that ran across an
        upgrade from a version without usage records)."""
        if not request.jobs:
            self._out.usage(
                JobUsage(
                    request.id,
                    0,
                    request.owner,
                    NO_GROUP,
                    "",
                    request.created_at,
                    None,
                    now,
                    request.state,
                )
            )
            return
        for index, job in enumerate(request.jobs):
            worker = self._workers.get(job.worker_uuid)
            group = granting_group(worker.groups, request.owner_groups) if worker else NO_GROUP
            self._out.usage(
                JobUsage(
                    request.id,
                    index,
                    request.owner,
                    group,
                    job.worker_uuid,
                    request.created_at,
                    job.started_at,
                    now,
                    request.state,
                )
            )

    def _end_job(
        self,
        request: Request,
        now: float,
        state: RequestState,
        reason: str,
        failed: Worker | None = None,
    ) -> None:
        """End a running request's jobs: every board but failed (which the caller moves on)
        is released and prepared again."""
        assert request.jobs
        workers = [self._workers.get(job.worker_uuid) for job in request.jobs]
        self._finish(request, state, now, reason)
        why = (
            f"job of request {request.id} ended"
            if state is RequestState.DONE
            else f"request {request.id} {state.name}: {reason}"[: self.policy.max_reason_len]
        )
        for worker in workers:
            if worker is None or worker.request_id != request.id:
                continue
            worker.request_id = 0
            worker.jobs_done += 1
            if worker is failed:
                self._out.worker(worker)
            else:
                self._after_job(worker, now, why)
        self._match_freed(self._release_collateral(request, workers), now)

    def _after_job(self, worker: Worker, now: float, why: str) -> None:
        """A worker whose job ended is prepared again, or, if draining, goes into
        MAINTENANCE (BUSY first) with the reason the admin gave."""
        drain_reason = worker.drain_reason
        if not drain_reason:
            self._transition(worker, WorkerState.PREPARE, now, why)
            self._issue_prepare(worker)
            return
        worker.prepared = None
        self._transition(worker, WorkerState.BUSY, now, drain_reason)
        self._issue(worker, DryadCallKind.PUT_IN_MAINTENANCE, drain_reason)

    def _fail_worker(
        self, worker: Worker, now: float, reason: str, kind: FailureKind = FailureKind.OTHER
    ) -> None:
        """The worker becomes FAILED (its job fails); the failure is kept in its record, and
        one too many for a worker in service puts it into quarantine."""
        if worker.state is WorkerState.FAILED:
            return
        in_service = worker.state in IN_SERVICE
        draining = bool(worker.drain_reason)
        if worker.state is WorkerState.RUNNING:
            request = self._requests[worker.request_id]
            self._end_job(
                request, now, RequestState.FAILED, f"worker {worker.uuid} failed: {reason}", worker
            )
        worker.prepared = None
        worker.pending_op = 0
        self._transition(worker, WorkerState.FAILED, now, reason)
        failure = Failure(now, reason, kind)
        worker.health = health.record(worker.health, failure, in_service=in_service)
        if draining:
            # An admin asked it out of service: a heartbeat that comes back does not bring
            # it back (an admin sets it IDLE or it stays FAILED).
            worker.health = dataclasses.replace(worker.health, recoverable=False)
        policy = self.policy
        if in_service and health.should_quarantine(
            worker.health, now, policy.quarantine_failures, policy.quarantine_window
        ):
            why = health.quarantine_reason(
                failure, policy.quarantine_failures, policy.quarantine_window
            )
            self._transition(worker, WorkerState.MAINTENANCE, now, why[: policy.max_reason_len])
            worker.health = health.quarantined(worker.health)

    def _recover_if_back(self, worker: Worker, now: float) -> None:
        """A worker FAILED only by a heartbeat loss while in service goes back into service
        now that its dryad is heard: PREPARE (a Prepare that runs the health checks first,
        whatever the policy), then IDLE."""
        if worker.state is not WorkerState.FAILED or not worker.health.recoverable:
            return
        self._transition(worker, WorkerState.PREPARE, now, RECOVERING)
        self._issue(worker, DryadCallKind.PREPARE, healthcheck_first=True)

    def _dryad_restarted(self, worker: Worker, now: float) -> None:
        """The dryad lost its job users: a running job fails and the worker is prepared again."""
        state = worker.state
        if state is WorkerState.RUNNING:
            request = self._requests[worker.request_id]
            self._end_job(
                request,
                now,
                RequestState.FAILED,
                f"the dryad of worker {worker.uuid} restarted",
                worker,
            )
            worker.prepared = None
            self._after_job(worker, now, "dryad restarted")
        elif state in (WorkerState.IDLE, WorkerState.PREPARE):
            worker.prepared = None
            if state is WorkerState.IDLE:
                self._transition(worker, WorkerState.PREPARE, now, "dryad restarted")
            self._issue_prepare(worker)
        elif state is WorkerState.BUSY:
            self._issue(worker, DryadCallKind.PUT_IN_MAINTENANCE, worker.reason)

    def _transition(
        self,
        worker: Worker,
        state: WorkerState,
        now: float,
        reason: str,
        *,
        rebuildable: bool = False,
    ) -> None:
        """Move worker to state; rebuildable: a restart would rebuild the change (see
        Changes.rebuildable_workers)."""
        old = worker.state
        if old is WorkerState.IDLE:
            self._idle.remove(worker)
        if state not in (WorkerState.IDLE, WorkerState.RUNNING, WorkerState.PREPARE):
            # Out of service: the request it was kept for counts on it no more.
            self._unreserve(worker)
        if state not in (WorkerState.FAILED, WorkerState.MAINTENANCE):
            # Back in service (or on the way out by an admin's hand): whatever the last
            # failure led to is over.
            worker.health = health.settled(worker.health, now)
        worker.state = state
        worker.reason = reason
        if state is not WorkerState.RUNNING:
            worker.drain_reason = ""  # its job is over: whatever it drained for happened
        if state not in (WorkerState.IDLE, WorkerState.RUNNING):
            # A periodic check of an idle board says nothing about it in its new state.
            worker.health_op = 0
        if state is WorkerState.IDLE:
            if not worker.collateral_of:
                self._idle.add(worker)
            self._arm_healthcheck(worker, now)
        elif state is WorkerState.FAILED:
            worker.failures += 1
        self._out.history(HistoryEntry(worker.uuid, now, old, state, reason))
        if rebuildable:
            self._out.rebuildable_worker(worker)
        else:
            self._out.worker(worker)

    def _reindex(
        self, worker: Worker, sig: frozenset[tuple[str, str]], groups: frozenset[str]
    ) -> None:
        idle = worker in self._idle
        self._unreserve(worker)  # it may no longer suit the request; it is matched again
        self._registered.remove(worker)
        if idle:
            self._idle.remove(worker)
        worker.caps_sig = sig
        worker.items = board_items(sig)
        worker.groups = groups
        worker.rank = worker.compute_rank()
        self._registered.add(worker)
        if idle:
            self._idle.add(worker)

    def _satisfiable(self, bucket: BucketBase) -> bool:
        """Whether registered workers (in any state) could serve the bucket's requests."""
        if isinstance(bucket, MultiBucket):
            return (
                self._boards(bucket.needs, self._registered_view(bucket.groups), bucket.colocated)
                is not None
            )
        assert isinstance(bucket, Bucket)
        return self._registered.any_capable(bucket.need, bucket.groups)

    def _invalidate_orphans(self, buckets: list[BucketBase], now: float, why: str) -> None:
        """Requests of these buckets that registered workers cannot serve become INVALID."""
        for bucket in buckets:
            if not bucket.waiting or self._satisfiable(bucket):
                continue
            reason = f"no registered worker can satisfy it any more: {why}"
            for request in sorted(bucket.waiting, key=lambda r: r.id):
                self._finish(request, RequestState.INVALID, now, reason)

    def _issue(
        self,
        worker: Worker,
        kind: DryadCallKind,
        message: str = "",
        *,
        healthcheck_first: bool = False,
    ) -> None:
        self._last_op_id += 1
        worker.pending_op = self._last_op_id
        worker.checking = kind is DryadCallKind.PREPARE and healthcheck_first
        self._out.call(
            DryadCall(
                self._last_op_id,
                worker.uuid,
                kind,
                worker.dryad_address,
                message,
                healthcheck_first,
            )
        )

    def _issue_prepare(self, worker: Worker) -> None:
        """Start PREPARE: one Prepare call, which runs the board's health checks first
        (if configured)."""
        self._issue(
            worker,
            DryadCallKind.PREPARE,
            healthcheck_first=self.policy.healthcheck_before_prepare,
        )

    def _arm_healthcheck(self, worker: Worker, now: float) -> None:
        interval = self.policy.healthcheck_interval
        if interval > 0:
            worker.health_due = now + interval
            self._push_timer(worker.health_due, TimerKind.HEALTHCHECK, worker)

    def _periodic_healthcheck(self, worker: Worker, now: float) -> None:
        worker.health_due = 0.0
        if worker.state is not WorkerState.IDLE:
            return
        if not worker.health_op:
            self._last_op_id += 1
            worker.health_op = self._last_op_id
            self._out.call(
                DryadCall(
                    self._last_op_id, worker.uuid, DryadCallKind.HEALTHCHECK, worker.dryad_address
                )
            )
        self._arm_healthcheck(worker, now)

    def _arm_heartbeat(self, worker: Worker) -> None:
        if worker.hb_armed or worker.state is WorkerState.FAILED:
            return
        due = max(worker.last_seen, self._heartbeat_epoch) + self.policy.heartbeat_timeout
        worker.hb_armed = True
        self._push_timer(due, TimerKind.HEARTBEAT, worker)

    def _check_heartbeat(self, worker: Worker, now: float) -> None:
        worker.hb_armed = False
        if worker.state is WorkerState.FAILED:
            return
        heard = max(worker.last_seen, self._heartbeat_epoch)
        if heard + self.policy.heartbeat_timeout > now:
            self._arm_heartbeat(worker)
        else:
            self._fail_worker(
                worker,
                now,
                f"{HEARTBEAT_LOST}: nothing heard for {now - heard:.0f} s",
                FailureKind.HEARTBEAT,
            )

    def _push_timer(self, due: float, kind: TimerKind, target: Request | Worker) -> None:
        # A request by id: see core/timers.py.
        self._timers.push(due, kind, target.id if isinstance(target, Request) else target)
        if len(self._timers) > 4 * (len(self._requests) + len(self._workers)) + 4096:
            self._timers.compact(self._timer_applies)

    def _timer_applies(self, due: float, kind: TimerKind, target: Target) -> bool:
        if isinstance(target, Worker):
            if self._workers.get(target.uuid) is not target:
                return False
            if kind is TimerKind.HEALTHCHECK:
                return target.health_due == due
            return target.hb_armed
        request = self._requests.get(target)
        return request is not None and self._request_timer_applies(due, kind, request)

    @staticmethod
    def _request_timer_applies(due: float, kind: TimerKind, target: Request) -> bool:
        if kind is TimerKind.DEADLINE:
            return target.state is RequestState.WAITING and target.deadline == due
        if kind is TimerKind.VALID_AFTER:
            return (
                target.state is RequestState.WAITING
                and not target.ready
                and target.valid_after == due
            )
        jobs = target.jobs
        return target.state is RequestState.IN_PROGRESS and bool(jobs) and jobs[0].timeout_at == due
