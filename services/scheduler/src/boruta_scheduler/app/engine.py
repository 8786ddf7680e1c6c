"""The one owner of scheduling state: applies commands to the core in order, commits, replies.

Commands are applied in batches without waiting for earlier batches to reach the disk;
the store writer merges batches that queue up into one transaction (group commit).
Replies, watch events and dryad calls of a batch go out only after its commit, in batch
order, so nobody hears of a change before it is durable.

When a commit fails (disk full, read-only, I/O error), that batch and every batch applied
after it are lost: their callers get UNAVAILABLE with the cause, and nothing of them goes
out. The engine then does in-process what a restart would do: it rebuilds the core from
the store, which holds exactly what was acknowledged, and commits what restoring produced.
Until that commit succeeds (it is retried with backoff), writes are refused at once and
reads are answered from the rebuilt core. A command that fails with an exception that is
no BorutaError (a bug) costs its batch the same way, but the store is not blamed.

Facts a restart rebuilds cost no commit of their own. A heartbeat changes nothing but a
worker's last-seen time: those are kept in memory and stored at most once per
LAST_SEEN_FLUSH, so an idle farm's heartbeats cost no commit each; a stale stored time is
harmless, since after a restart or a recovery silence is counted from the rebuild. The
port a job's tunnel opened on rides with the next batch that commits anyway: a restart
opens every tunnel again (on the stored port when it is free). Audit events recorded
outside a command (the access AcquireWorker hands out, refusals) ride with the next batch
that commits anyway too, AUDIT_RIDE later at the latest.

Between commits, at a low rate, the same writer keeps the store small and clean: it purges
what is older than the retention in small batches and scrubs the store's files of keys
that are gone from its tables (see housekeep()).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from boruta_scheduler.app.restore import freeze_heap, restore_core
from boruta_scheduler.app.writer import StoreWriter
from boruta_scheduler.core import Changes, CloseTunnel, Core, DryadCall, TunnelCall
from boruta_scheduler.core.outbox import merge
from boruta_scheduler.errors import (
    BorutaError,
    InternalError,
    StoreUnavailable,
    Unavailable,
)
from boruta_scheduler.store import Purged, Store
from boruta_scheduler.types import Access, AuditEvent, RequestState, RequestView, WorkerState

log = logging.getLogger(__name__)

T = TypeVar("T")
Command = Callable[[Core, float], T]

MAX_BATCH = 2000
# Applied batches allowed to wait for the disk before the engine waits too.
MAX_UNPUBLISHED = 1000
# Store upkeep: rows of each kind one purge deletes (one short transaction), how often a
# purge runs while a backlog lasts and when there is none, and how often the files are
# scrubbed of dropped keys (if any may have been dropped).
PURGE_BATCH = 500
PURGE_PAUSE = 1.0
PURGE_INTERVAL = 600.0
UPKEEP_INTERVAL = 10.0
# Audit events recorded outside a command ride the next batch that commits anyway; one
# waits at most this many seconds for it before it is committed on its own.
AUDIT_RIDE = 1.0
# How often heartbeats' last-seen times are stored at most, in seconds.
LAST_SEEN_FLUSH = 60.0  # and tunnel ports, if no batch commits meanwhile
# Backoff between attempts to write to a store that refused a commit, in seconds.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# Who the audit log names for what the scheduler did by itself.
SCHEDULER_ACTOR = "boruta-scheduler"


class DryadCaller(Protocol):
    """Makes the dryad calls the core asks for; raises DryadCallError on failure."""

    async def call(self, call: DryadCall) -> Access | None: ...


class TunnelKeeper(Protocol):
    """Opens and closes the per-job SSH tunnels; open() raises on failure."""

    async def open(self, request_id: int, ssh_address: str, port: int = 0) -> int: ...

    async def close(self, request_id: int) -> None: ...

    async def close_all(self) -> None: ...


class Publisher(Protocol):
    """Receives every committed change, e.g. to feed watch streams."""

    def publish(self, changes: Changes) -> None: ...


@dataclass(slots=True)
class _Pending(Generic[T]):
    command: Command[T]
    future: asyncio.Future[T] | None
    # Releases what a result holds outside the core (e.g. a watch's subscription) when
    # the result is thrown away because its batch was lost.
    discard: Callable[[T], None] | None = None


_Reply = tuple[_Pending[Any], Any, BaseException | None]


@dataclass(slots=True)
class _Batch:
    commit: asyncio.Future[None] | None  # the commit to wait for, if any
    changes: Changes
    replies: list[_Reply]
    # Audit events recorded outside any command (e.g. access handed out, refusals): facts
    # that stand even if the batch is lost, so they go with the next one then.
    carried: list[AuditEvent]


@dataclass(slots=True)
class _Outage:
    """The store refuses writes: why, since when, and whether reads may use the core yet."""

    cause: str  # for callers, e.g. "disk full"
    detail: str  # for admins: with the file and the store's own words
    since: float
    refused: int = 0
    rebuilt: asyncio.Event = field(default_factory=asyncio.Event)

    def error(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the scheduler cannot store changes now ({self.cause}); nothing of this call "
            "was kept. It keeps answering reads and retries by itself: retry later"
        )


class EngineStopped(Unavailable):
    """The engine is not running; the scheduler is shutting down or failed."""


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one round of store upkeep did."""

    purged: Purged
    scrubbed: bool
    purge_error: str = ""  # why the purge failed, if it did


class Engine:
    """Runs the command loop; everything that touches the core goes through execute()."""

    def __init__(
        self,
        core: Core,
        store: Store,
        dryads: DryadCaller,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.time,
        tunnels: TunnelKeeper | None = None,
        *,
        retention: float = 0.0,
        upkeep_interval: float = UPKEEP_INTERVAL,
        last_seen_flush: float = LAST_SEEN_FLUSH,
    ) -> None:
        self.core = core
        self._store = store
        self._dryads = dryads
        self._publisher = publisher
        self._tunnels = tunnels
        self._tunnel_ops: dict[int, asyncio.Task[None]] = {}
        self._clock = clock
        self._pending: deque[_Pending[Any]] = deque()
        self._wakeup = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer: StoreWriter | None = None
        # Batches applied but not yet published, oldest first.
        self._unpublished: deque[_Batch] = deque()
        self._outage: _Outage | None = None
        # A command failed with a bug: the core must be rebuilt before the next batch.
        self._rebuild = False
        self._stop_requested = asyncio.Event()
        self._last_commit: asyncio.Future[None] | None = None
        # Dryad calls in flight: void, and cancelled, when the core is rebuilt.
        self._background: set[asyncio.Task[None]] = set()
        self._upkeep: asyncio.Task[None] | None = None
        self._acquire_waiters: dict[int, set[asyncio.Future[RequestView]]] = {}
        # Audit events for the next batch: they commit in its transaction, so an event
        # recorded by a command is durable exactly when the change it records is.
        self._audit: list[AuditEvent] = []
        # Whether a batch's commands are being applied (so an event is a command's).
        self._applying = False
        # Events recorded outside any command (access handed out, refusals), and when they
        # are committed at the latest: they cost no commit of their own while others run.
        self._carried: list[AuditEvent] = []
        self._carried_due = math.inf
        # Finished requests, history and audit events older than this are purged (0: never).
        self._retention = retention
        self._upkeep_interval = upkeep_interval
        self._next_purge = 0.0
        self._purge_failures = 0  # in a row
        self._upkeep_lock = asyncio.Lock()  # one round at a time, whoever starts it
        # Whether a commit since the last scrub may have dropped a key (so may a restart).
        self._scrub_wanted = True
        self._stopping = False
        # Last-seen times heard since they were last stored, and when they are stored next.
        self._seen: dict[str, float] = {}
        self._held: dict[int, RequestView] = {}
        self._seen_flush = last_seen_flush
        self._next_seen_flush = clock() + last_seen_flush
        self.failure: BaseException | None = None
        self.batches = 0
        self.commands = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, initial: Changes | None = None) -> None:
        """Start the loop; initial holds what restoring the core produced, committed first."""
        loop = asyncio.get_running_loop()
        self._writer = StoreWriter(self._store, loop)
        if initial is not None:
            self._finish_batch(initial, [], [], initial if initial.durable else None)
        self._task = loop.create_task(self._run(), name="engine")
        if self._upkeep_interval > 0:
            self._upkeep = loop.create_task(self._upkeep_loop(), name="store-upkeep")

    async def stop(self) -> None:
        """Finish queued commands, then stop; in-flight dryad calls are abandoned."""
        self._stopping = True
        self._stop_requested.set()
        if self._outage is not None:
            self._outage.rebuilt.set()  # readers waiting for a core hear that we stop
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        background = [*self._background, *([self._upkeep] if self._upkeep else [])]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await asyncio.gather(*self._tunnel_ops.values(), return_exceptions=True)
        if self._tunnels is not None:
            await self._tunnels.close_all()
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_closed(self) -> None:
        """Return when the loop ends (after stop() or a fatal failure)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # -------------------------------------------------------------------- commands

    async def execute(self, command: Command[T], discard: Callable[[T], None] | None = None) -> T:
        """Apply a command; returns once its effects are durable. BorutaErrors propagate;
        while the store refuses writes, StoreUnavailable at once. discard releases what a
        result holds outside the core if its batch is lost."""
        if self._stopping or not self.running:
            raise EngineStopped("the scheduler is shutting down; retry against the new instance")
        if self._outage is not None:
            self._outage.refused += 1
            raise self._outage.error()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(command, future, discard))
        self._wakeup.set()
        return await future

    async def read(self, query: Command[T], discard: Callable[[T], None] | None = None) -> T:
        """Answer a query that changes nothing in the core: in order with the commands, or,
        while the store refuses writes, from the core rebuilt from the store."""
        while True:
            outage = self._outage
            if self._stopping or not self.running:
                raise EngineStopped("the scheduler is shutting down; retry against the new one")
            if outage is None:
                try:
                    return await self.execute(query, discard)
                except StoreUnavailable:
                    continue  # its batch was lost: answer from the rebuilt core
            elif outage.rebuilt.is_set():
                return query(self.core, self._clock())
            else:
                await outage.rebuilt.wait()

    @property
    def outage(self) -> str | None:
        """Why the store refuses writes, or None while it accepts them."""
        return None if self._outage is None else self._outage.cause

    def now(self) -> float:
        return self._clock()

    def audit(self, event: AuditEvent) -> None:
        """Record an event: from a command, with its batch (in the transaction of the change
        it records); from elsewhere, with the next batch that commits anyway, AUDIT_RIDE
        seconds later at the latest."""
        if self._applying:
            self._audit.append(event)
            return
        if not self._carried:
            self._carried_due = self._clock() + AUDIT_RIDE
            self._wakeup.set()  # to arm the timer for it
        self._carried.append(event)

    async def commit_audit(self) -> None:
        """Return once every event recorded so far is committed (while the store refuses
        writes, at once: they wait for it)."""
        if self._carried:
            self._carried_due = -math.inf
        await self.read(lambda core, now: None)

    def submit(self, command: Command[Any]) -> None:
        """Queue a command whose result nobody waits for (e.g. a dryad call's outcome).
        While the store refuses writes it is dropped: the rebuilt core asks again."""
        if not self._stopping and self._outage is None:
            self._pending.append(_Pending(command, None))
            self._wakeup.set()

    async def wait_for_job(
        self,
        request_id: int,
        timeout: float | None,
        authorize: Callable[[RequestView], None] | None = None,
    ) -> RequestView:
        """The request once it is IN_PROGRESS or terminal; raises TimeoutError after timeout.
        authorize sees the request inside the engine, in order with every other command, so
        no request created after a check can slip past it."""
        future: asyncio.Future[RequestView] = asyncio.get_running_loop().create_future()

        def check(core: Core, now: float) -> RequestView | None:
            view = core.request(request_id)
            if authorize is not None:
                authorize(view)
            if self._job_ready(view):
                return view
            self._acquire_waiters.setdefault(request_id, set()).add(future)
            return None

        try:
            view = await self.execute(check)
        except BaseException:
            self._forget_waiter(request_id, future)
            raise
        if view is not None:
            return view
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._forget_waiter(request_id, future)

    def _forget_waiter(self, request_id: int, future: asyncio.Future[RequestView]) -> None:
        waiters = self._acquire_waiters.get(request_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._acquire_waiters[request_id]

    # ---------------------------------------------------------------------- upkeep

    async def housekeep(self) -> Upkeep:
        """One round of store upkeep, run by the writer between commits: purge one batch of
        what is older than the retention (when due), and scrub the store's files if a
        commit since the last scrub may have dropped a key."""
        async with self._upkeep_lock:
            return await self._housekeep()

    async def _housekeep(self) -> Upkeep:
        assert self._writer is not None
        if self._outage is not None:
            return Upkeep(Purged(), scrubbed=False)  # purges and scrubs are writes too
        now = self._clock()
        purged = Purged()
        purge_error = ""
        if self._retention > 0 and now >= self._next_purge:
            before, retention = now - self._retention, self._retention
            try:
                purged = await self._writer.run(lambda store: store.purge(before, PURGE_BATCH))
            except Exception as exc:  # retried later; the scrub below does not depend on it
                purge_error = self._purge_failed(exc, now)
            else:
                self._purge_worked()
                more = purged.reached(PURGE_BATCH)
                self._next_purge = now + (PURGE_PAUSE if more else PURGE_INTERVAL)
            if purged != Purged():
                log.info(
                    "purged what is older than the retention",
                    extra={
                        "retention_days": round(retention / 86400, 2),
                        "requests": purged.requests,
                        "history": purged.history,
                        "audit": purged.audit,
                    },
                )
        scrubbed = False
        if self._scrub_wanted:
            self._scrub_wanted = False
            scrubbed = await self._writer.run(lambda store: store.scrub())
            if not scrubbed:
                self._scrub_wanted = True  # (commits meanwhile have set it already)
        return Upkeep(purged, scrubbed, purge_error)

    def _purge_failed(self, exc: Exception, now: float) -> str:
        """Retry a failed purge later and later (up to the normal interval), and warn once
        per run of failures rather than every round; returns the cause."""
        self._purge_failures += 1
        delay = min(PURGE_PAUSE * 2**self._purge_failures, PURGE_INTERVAL)
        self._next_purge = now + delay
        cause = f"{type(exc).__name__}: {exc}"
        if self._purge_failures == 1:
            log.warning(
                "purging what is older than the retention failed; retrying with backoff",
                extra={"cause": cause, "retry_in": delay},
            )
        return cause

    def _purge_worked(self) -> None:
        if self._purge_failures:
            log.warning("purging works again", extra={"failures": self._purge_failures})
            self._purge_failures = 0

    async def _upkeep_loop(self) -> None:
        while not self._stopping:
            try:
                await self.housekeep()
            except Exception:  # a failed purge or scrub is retried; commits decide fatality
                log.warning("store upkeep failed; retrying later", exc_info=True)
            wait = self._upkeep_interval
            if self._retention > 0:
                wait = min(wait, max(PURGE_PAUSE, self._next_purge - self._clock()))
            await asyncio.sleep(wait)

    # ------------------------------------------------------------------------ loop

    async def _run(self) -> None:
        try:
            while True:
                if self._outage is not None or self._rebuild:
                    if self._stopping:
                        break
                    await self._recover()
                    continue
                due = self._next_due()
                if self._pending or (due is not None and due <= self._clock()):
                    # A batch runs for queued commands and for due timers alike: a quiet
                    # scheduler must still time out jobs and notice silent workers.
                    if len(self._unpublished) >= MAX_UNPUBLISHED and self._last_commit:
                        # Its callbacks run before this wait returns; a failure among them
                        # starts a recovery, seen at the top of the loop.
                        await asyncio.wait([self._last_commit])
                        continue
                    self._run_batch()
                    # Let the loop serve I/O before the next batch.
                    await asyncio.sleep(0)
                    continue
                if self._stopping:
                    break
                self._arm_timer()
                await self._wakeup.wait()
                self._wakeup.clear()
            if self._outage is None and not self._rebuild and self.failure is None:
                # What was held back is stored at a clean stop, so a restart starts from it.
                changes, now = self.core.drain(), self._clock()
                stored, carried = self._with_carried(
                    changes, self._to_store(changes, now, flush=True), now, flush=True
                )
                self._finish_batch(changes, [], carried, stored)
            if self._last_commit is not None:
                await asyncio.wait([self._last_commit])
        except BaseException as exc:
            self._fail(exc)
            raise

    def _next_due(self) -> float | None:
        """When a batch is next due without commands: a core timer, or carried events."""
        due = self.core.next_timer()
        if self._carried and (due is None or self._carried_due < due):
            return self._carried_due
        return due

    def _arm_timer(self) -> None:
        due = self._next_due()
        if due == self._timer_due and self._timer is not None:
            return  # already armed for that time
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = due
        if due is not None:
            delay = max(0.0, due - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire_timer)

    def _fire_timer(self) -> None:
        self._timer = None
        self._timer_due = None
        self._wakeup.set()

    def _run_batch(self) -> None:
        now = self._clock()
        core = self.core
        done: list[_Reply] = []
        count = min(len(self._pending), MAX_BATCH)
        current: _Pending[Any] | None = None
        self._applying = True
        try:
            core.tick(now)
            for _ in range(count):
                current = self._pending.popleft()
                try:
                    result = current.command(core, now)
                except BorutaError as exc:
                    done.append((current, None, exc))
                else:
                    done.append((current, result, None))
                current = None
        except Exception as exc:  # a bug: the core may be half changed
            self._drop_batch(exc, current, done)
            return
        finally:
            self._applying = False
        self.batches += 1
        self.commands += count
        changes = core.drain()
        changes.audit.extend(self._audit)
        self._audit = []
        stored, carried = self._with_carried(changes, self._to_store(changes, now), now)
        self._finish_batch(changes, done, carried, stored)

    def _with_carried(
        self, changes: Changes, stored: Changes | None, now: float, *, flush: bool = False
    ) -> tuple[Changes | None, list[AuditEvent]]:
        """Add the carried events to what a batch commits, if it commits anyway or they are
        due (then with a commit of their own); returns what to commit and the events."""
        carried = self._carried
        if not carried or (stored is None and not flush and now < self._carried_due):
            return stored, []
        self._carried, self._carried_due = [], math.inf
        if stored is None:
            stored = Changes(last_request_id=changes.last_request_id)
        stored.audit[:0] = carried
        return stored, carried

    def _to_store(self, changes: Changes, now: float, *, flush: bool = False) -> Changes | None:
        """What of a batch to commit, if anything: facts a restart rebuilds (last-seen
        times, tunnel ports) are held back, and stored with the next batch that commits
        anyway, or on their own once LAST_SEEN_FLUSH has passed (or flush is set)."""
        seen, held = self._seen, self._held
        seen.update(changes.last_seen)
        changes.last_seen.clear()
        if changes.durable:
            for view in changes.requests:  # the batch stores a newer view of its own
                held.pop(view.id, None)
            for worker in (*changes.workers, *changes.removed_workers):
                seen.pop(worker.uuid, None)
        else:
            for view in changes.requests:
                if view.id in changes.rebuildable:
                    held[view.id] = view
        flush = (flush or now >= self._next_seen_flush) and bool(seen or held)
        if not changes.durable and not flush:
            return None
        if not held and not (flush and seen):
            return changes
        extra = Changes(
            requests=list(held.values()),
            last_seen=dict(seen) if flush else {},
            last_request_id=changes.last_request_id,
        )
        held.clear()
        if flush:
            seen.clear()
            self._next_seen_flush = now + self._seen_flush
        return merge([extra, changes])

    def _finish_batch(
        self,
        changes: Changes,
        done: list[_Reply],
        carried: list[AuditEvent],
        stored: Changes | None,
    ) -> None:
        """Commit stored (what of the batch goes to the store, if anything), and queue the
        batch for publication once it (and every batch before it) is durable."""
        assert self._writer is not None
        commit: asyncio.Future[None] | None
        if stored is not None:
            self._note_dropped_keys(stored)
            commit = self._writer.submit(stored)
            self._last_commit = commit
            commit.add_done_callback(self._publish_ready)
        else:
            last = self._last_commit
            commit = last if last is not None and not last.done() else None
        self._unpublished.append(_Batch(commit, changes, done, carried))
        if commit is None:
            self._publish_ready()

    def _note_dropped_keys(self, changes: Changes) -> None:
        """Want a scrub if committing changes may leave a dropped key in the files."""
        if changes.requests or changes.workers or changes.removed_workers:
            # A job's end or a new prepared key drops the key the rows held before.
            self._scrub_wanted = True

    def _publish_ready(self, _: object = None) -> None:
        while self._unpublished:
            batch = self._unpublished[0]
            commit = batch.commit
            if commit is not None:
                if not commit.done():
                    return
                error = None if commit.cancelled() else commit.exception()
                if error is not None:
                    self._store_failed(error)
                    return
            self._unpublished.popleft()
            self._publish(batch.changes, batch.replies)

    def _publish(self, changes: Changes, done: list[_Reply]) -> None:
        for pending, result, error in done:
            future = pending.future
            if future is None or future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        self._wake_acquirers(changes)
        for worker in changes.workers:
            if worker.state is WorkerState.FAILED:
                # An admin must act on a FAILED board: say so where admins look.
                log.warning("worker failed", extra={"worker": worker.uuid, "why": worker.reason})
        if self._publisher is not None:
            self._publisher.publish(changes)
        for tunnel_call in changes.tunnels:
            self._run_tunnel_call(tunnel_call)
        for call in changes.calls:
            task = asyncio.get_running_loop().create_task(self._call_dryad(call))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _wake_acquirers(self, changes: Changes) -> None:
        if not self._acquire_waiters:
            return
        for view in changes.requests:
            if view.state is RequestState.WAITING or (
                view.state is RequestState.IN_PROGRESS and not self._job_ready(view)
            ):
                continue
            for future in self._acquire_waiters.pop(view.id, ()):
                if not future.done():
                    future.set_result(view)

    def _job_ready(self, view: RequestView) -> bool:
        """A running job can be handed out once its tunnel is open (if tunnels are used)."""
        if view.state is not RequestState.IN_PROGRESS:
            return False
        return self._tunnels is None or (view.job is not None and view.job.tunnel_port != 0)

    def _run_tunnel_call(self, call: TunnelCall) -> None:
        """Start a tunnel call after the previous one for the same job, so they never race."""
        if self._tunnels is None:
            return
        request_id = call.request_id
        previous = self._tunnel_ops.get(request_id)
        task = asyncio.get_running_loop().create_task(self._tunnel_call(call, previous))
        self._tunnel_ops[request_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tunnel_ops.get(request_id) is done:
                del self._tunnel_ops[request_id]

        task.add_done_callback(forget)

    async def _tunnel_call(self, call: TunnelCall, previous: asyncio.Task[None] | None) -> None:
        assert self._tunnels is not None
        if previous is not None:
            await asyncio.wait([previous])
        request_id = call.request_id
        if isinstance(call, CloseTunnel):
            await self._tunnels.close(request_id)
            return
        try:
            port = await self._tunnels.open(request_id, call.ssh_address, call.port)
        except Exception as exc:  # any failure to open fails the job, not the scheduler
            error = str(exc) or exc.__class__.__name__
            self.submit(lambda core, now: core.tunnel_failed(now, request_id, error))
        else:
            self.submit(lambda core, now: core.tunnel_opened(now, request_id, port))

    async def _call_dryad(self, call: DryadCall) -> None:
        try:
            access = await self._dryads.call(call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure of a dryad call fails the worker
            error = str(exc) or exc.__class__.__name__
            self.submit(lambda core, now: core.dryad_call_failed(now, call, error))
        else:
            self.submit(lambda core, now: core.dryad_call_succeeded(now, call, access))

    # ------------------------------------------------------------------ recovery

    def _store_failed(self, error: BaseException) -> None:
        """A commit failed: it and every batch applied after it are lost. Their callers
        hear why, nothing of them goes out, and writes are refused until recovery."""
        if self._outage is None:
            cause, detail = self._cause_of(error)
            log.error(
                "the store refuses writes; refusing them too until it accepts them again, "
                "answering reads meanwhile",
                extra={"cause": detail},
            )
            self._outage = _Outage(cause, detail, self._clock())
        outage = self._outage
        self._lose_batches(outage.error())
        while self._pending:
            future = self._pending.popleft().future
            if future is not None and not future.done():
                outage.refused += 1
                future.set_exception(outage.error())
        self._wakeup.set()

    def _lose_batches(self, error: BorutaError) -> None:
        """Answer every unpublished batch with error, oldest first; keep their carried
        audit events for the next batch."""
        carried: list[AuditEvent] = []
        for batch in self._unpublished:
            carried.extend(batch.carried)
            if batch.commit is not None:
                batch.commit.add_done_callback(_seen)
            self._refuse(batch.replies, error)
        self._unpublished.clear()
        self._last_commit = None
        if carried:
            self._carried[:0] = carried
            self._carried_due = self._clock()

    def _refuse(self, replies: list[_Reply], error: BorutaError) -> None:
        for pending, result, failure in replies:
            if failure is None and pending.discard is not None:
                pending.discard(result)
            if pending.future is not None and not pending.future.done():
                if self._outage is not None:
                    self._outage.refused += 1
                pending.future.set_exception(error)

    def _drop_batch(
        self,
        exc: Exception,
        culprit: _Pending[Any] | None,
        done: list[_Reply],
    ) -> None:
        """A command (or a timer) failed with a bug: its batch is dropped and the core,
        which may be half changed, is rebuilt from the store before the next batch."""
        internal = InternalError.logged(log, "a command failed; rebuilding the core", exc)
        if culprit is not None and culprit.future is not None:
            culprit.future.set_exception(internal)
        self._refuse(
            done,
            Unavailable(
                f"nothing of this call was kept: another call applied with it hit an "
                f"internal error (id {internal.error_id}); retry"
            ),
        )
        self._audit = []  # events recorded by the dropped commands are void
        self._rebuild = True
        self._wakeup.set()

    async def _recover(self) -> None:
        """Rebuild the core from the store, as a restart would, and commit what restoring
        produced; while the store refuses that, try again with backoff."""
        assert self._writer is not None
        if self._last_commit is not None and not self._last_commit.done():
            # Batches applied before a failed command are sound: let them commit first.
            await asyncio.wait([self._last_commit])
        delay = RETRY_FIRST
        while not self._stopping:
            try:
                rebuild = functools.partial(
                    restore_core, now=self._clock(), policy=self.core.policy
                )
                core = await self._writer.run(rebuild)
            except Exception as exc:
                self._still_refused(exc)
            else:
                self._replace_core(core)
                freeze_heap(collect=True)  # the old core goes, the new one stays
                restored = core.drain()
                outage = self._outage
                if outage is not None:
                    # A real write, and the admins' record of the outage.
                    restored.audit.append(self._outage_event(outage))
                self._note_dropped_keys(restored)
                try:
                    await self._writer.submit(restored, resume=True)
                except Exception as exc:
                    self._still_refused(exc)
                else:
                    self._recovered(restored)
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)
            delay = min(delay * 2, RETRY_MAX)

    def _still_refused(self, exc: Exception) -> None:
        if self._outage is None:
            self._store_failed(exc)  # the store refused the rebuild after a bug
            return
        cause, detail = self._cause_of(exc)
        if detail != self._outage.detail:
            log.warning("the store still refuses writes", extra={"cause": detail})
        self._outage.cause, self._outage.detail = cause, detail

    @staticmethod
    def _cause_of(error: BaseException) -> tuple[str, str]:
        """(for callers, for admins): why the store refused. Anything but StoreUnavailable
        is a bug, logged with its traceback under an error id."""
        if isinstance(error, StoreUnavailable):
            return error.cause, str(error)
        if isinstance(error, BorutaError):
            return str(error), str(error)
        internal = str(InternalError.logged(log, "the store failed", error))
        return internal, internal

    def _replace_core(self, core: Core) -> None:
        """Serve from core, rebuilt from the store: what was in flight for the old one is
        void (the new one asks for its dryad calls and tunnels itself)."""
        self.core = core
        self._held.clear()  # the new core opens its tunnels again
        for task in self._background:
            task.cancel()
        kept = [p for p in self._pending if p.future is not None]
        self._pending = deque(kept)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = None
        if self._outage is not None:
            self._outage.rebuilt.set()

    def _outage_event(self, outage: _Outage) -> AuditEvent:
        now = self._clock()
        return AuditEvent(
            now,
            SCHEDULER_ACTOR,
            "scheduler",
            "StoreOutage",
            "store",
            f"refused writes for {now - outage.since:.0f} s ({outage.detail}); "
            f"{outage.refused} calls were answered UNAVAILABLE",
        )

    def _recovered(self, restored: Changes) -> None:
        outage, self._outage = self._outage, None
        self._rebuild = False
        if outage is not None:
            log.warning(
                "the store accepts writes again",
                extra={
                    "seconds": round(self._clock() - outage.since, 1),
                    "cause": outage.detail,
                    "refused_calls": outage.refused,
                },
            )
        self._publish(restored, [])
        self._wakeup.set()

    def _fail(self, exc: BaseException) -> None:
        """Stop for good: nothing more is applied, and every waiting caller hears why."""
        if self.failure is None:
            self.failure = exc
            log.critical("engine failed; the scheduler must restart", exc_info=exc)
        self._stopping = True
        self._wakeup.set()
        error = EngineStopped("the scheduler failed and must restart; retry against the new one")
        for batch in self._unpublished:
            for pending, _, _ in batch.replies:
                if pending.future is not None and not pending.future.done():
                    pending.future.set_exception(error)
        self._unpublished.clear()
        while self._pending:
            future = self._pending.popleft().future
            if future is not None and not future.done():
                future.set_exception(error)
        for waiters in self._acquire_waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
        self._acquire_waiters.clear()


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a lost commit's error as handled, so asyncio does not log it as forgotten."""
    if not future.cancelled():
        future.exception()
