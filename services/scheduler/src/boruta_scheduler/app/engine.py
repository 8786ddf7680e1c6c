"""The one owner of scheduling state: applies commands to the core in order, commits, replies.

Commands are applied in batches without waiting for earlier batches to reach the disk;
the store writer (app/writer.py) merges batches that queue up into one transaction (group
commit). Replies, watch events, acquirers' wake-ups (app/waiters.py) and dryad and tunnel
calls (app/effects.py) of a batch go out only after its commit, in batch order
(app/publishing.py), so nobody hears of a change before it is durable.

When a commit fails (disk full, read-only, I/O error), that batch and every batch applied
after it are lost: their callers get UNAVAILABLE with the cause (app/outage.py), and
nothing of them goes out. The engine then does in-process what a restart would do: it
rebuilds the core from the store, which holds exactly what was acknowledged, and commits
what restoring produced. Until that commit succeeds (it is retried with backoff), writes
are refused at once and reads are answered from the rebuilt core. A command that fails
with an exception that is no BorutaError (a bug) costs its batch the same way, but the
store is not blamed.

Facts a restart rebuilds cost no commit of their own. A heartbeat changes nothing but a
worker's last-seen time: those are kept in memory and stored at most once per
LAST_SEEN_FLUSH, so an idle farm's heartbeats cost no commit each; a stale stored time is
harmless, since after a restart or a recovery silence is counted from the rebuild. The
port a job's tunnel opened on rides with the next batch that commits anyway: a restart
opens every tunnel again (on the stored port when it is free). So does a board's move to
IDLE once its dryad answered Prepare, with its history entry: a restart prepares every
board it finds in PREPARE again (reading a worker's history commits it first). Audit
events recorded outside a command (the access AcquireWorker hands out, refusals) ride
with the next batch that commits anyway too, AUDIT_RIDE later at the latest.

Between commits, at a low rate, the same writer keeps the store small and clean
(app/upkeep.py).
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
from typing import Any, Protocol, TypeVar

from boruta_scheduler.app.effects import DryadCaller, Effects, TunnelKeeper
from boruta_scheduler.app.outage import RETRY_FIRST, RETRY_MAX, Outage
from boruta_scheduler.app.publishing import Pending, PublishQueue, Reply
from boruta_scheduler.app.restore import freeze_heap, restore_core
from boruta_scheduler.app.upkeep import UPKEEP_INTERVAL, StoreUpkeep, Upkeep
from boruta_scheduler.app.waiters import AcquireWaiters
from boruta_scheduler.app.writer import CommitObserver, StoreWriter
from boruta_scheduler.core import Changes, Core
from boruta_scheduler.core.outbox import merge
from boruta_scheduler.errors import BorutaError, InternalError, StoreUnavailable, Unavailable
from boruta_scheduler.store import Store
from boruta_scheduler.types import (
    AuditEvent,
    HistoryEntry,
    RequestView,
    WorkerState,
    WorkerView,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Command = Callable[[Core, float], T]

MAX_BATCH = 2000
# Applied batches allowed to wait for the disk before the engine waits too.
MAX_UNPUBLISHED = 1000
# Audit events recorded outside a command ride the next batch that commits anyway; one
# waits at most this many seconds for it before it is committed on its own.
AUDIT_RIDE = 1.0
# How often heartbeats' last-seen times are stored at most, in seconds.
LAST_SEEN_FLUSH = 60.0  # and tunnel ports, if no batch commits meanwhile
# The engine heard nothing for longer than this without knowing it: its wall clock stepped
# forward (NTP, a host resumed from suspend) or its process was held (SIGSTOP, a frozen VM)
# past the time it meant to run. The dryads' silence is then counted from after it, as
# after a restart, rather than failing every board (and job) at once.
DEAF_AFTER = 5.0


class Publisher(Protocol):
    """Receives every committed change, e.g. to feed watch streams."""

    def publish(self, changes: Changes) -> None: ...


class EngineStopped(Unavailable):
    """The engine is not running; the scheduler is shutting down or failed."""


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
        monotonic: Callable[[], float] = time.monotonic,
        retention: float = 0.0,
        usage_retention: float = 0.0,
        token_retention: float = 0.0,
        upkeep_interval: float = UPKEEP_INTERVAL,
        last_seen_flush: float = LAST_SEEN_FLUSH,
        on_commit: CommitObserver | None = None,
    ) -> None:
        self.core = core
        self._on_commit = on_commit
        self._store = store
        self._publisher = publisher
        self._effects = Effects(dryads, tunnels, self)
        self._waiters = AcquireWaiters(self, tunnels_used=tunnels is not None)
        self._clock = clock
        self._monotonic = monotonic
        # The clocks at the last batch, and (monotonic) when the engine meant to run next
        # at the latest: see DEAF_AFTER.
        self._last_clocks: tuple[float, float] | None = None
        self._expected_by: float | None = None
        # The time the last batch (or a rebuild of the core) applied commands and timers up
        # to: later commands apply no earlier. It goes back only if the wall clock does.
        self._applied_at = -math.inf
        self._pending: deque[Pending[Any]] = deque()
        self._wakeup = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer: StoreWriter | None = None
        self._unpublished = PublishQueue(self._publish, self._store_failed)
        self._outage: Outage | None = None
        # A command failed with a bug: the core must be rebuilt before the next batch.
        self._rebuild = False
        self._stop_requested = asyncio.Event()
        # Audit events for the next batch: they commit in its transaction, so an event
        # recorded by a command is durable exactly when the change it records is.
        self._audit: list[AuditEvent] = []
        # Whether a batch's commands are being applied (so an event is a command's).
        self._applying = False
        # Events recorded outside any command (access handed out, refusals), and when they
        # are committed at the latest: they cost no commit of their own while others run.
        self._carried: list[AuditEvent] = []
        self._carried_due = math.inf
        self._upkeep: StoreUpkeep | None = None  # made with the writer, at start()
        self._retention = retention
        self._usage_retention = usage_retention
        self._token_retention = token_retention
        self._upkeep_interval = upkeep_interval
        self._stopping = False
        # Last-seen times heard since they were last stored, and when they are stored next.
        self._seen: dict[str, float] = {}
        # Rebuildable views and history entries held back until a batch commits anyway.
        self._held: dict[int, RequestView] = {}
        self._held_workers: dict[str, WorkerView] = {}
        self._held_history: list[HistoryEntry] = []
        self._store_held = False  # commit what is held with the next batch, even alone
        self._seen_flush = last_seen_flush
        self._next_seen_flush = clock() + last_seen_flush
        self.failure: BaseException | None = None
        self.batches = 0
        self.commands = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, initial: Changes | None = None) -> None:
        """Start the loop; initial holds what restoring the core produced, committed first."""
        loop = asyncio.get_running_loop()
        self._writer = StoreWriter(self._store, loop, self._on_commit)
        self._upkeep = StoreUpkeep(
            self._writer,
            self,
            retention=self._retention,
            interval=self._upkeep_interval,
            usage_retention=self._usage_retention,
            token_retention=self._token_retention,
        )
        if initial is not None:
            self._finish_batch(initial, [], [], initial if initial.durable else None)
        self._task = loop.create_task(self._run(), name="engine")
        self._upkeep.start()

    async def stop(self) -> None:
        """Finish queued commands, then stop; in-flight dryad calls are abandoned."""
        self._stopping = True
        self._stop_requested.set()
        if self._outage is not None:
            self._outage.rebuilt.set()  # readers waiting for a core hear that we stop
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._upkeep is not None:
            await self._upkeep.stop()
        await self._effects.stop()
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def stopping(self) -> bool:
        """Whether the engine stops or stopped: stop() was called, or it failed."""
        return self._stopping

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
        self._pending.append(Pending(command, future, discard, self._clock()))
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

    async def commit_history(self) -> None:
        """Return once every worker history entry recorded so far is committed (a board's
        move to IDLE once prepared is held back, see _to_store): what readers of a worker's
        history call first."""
        if self._held_history:
            self._store_held = True
        await self.read(lambda core, now: None)

    def submit(self, command: Command[Any]) -> None:
        """Queue a command whose result nobody waits for (e.g. a dryad call's outcome).
        While the store refuses writes it is dropped: the rebuilt core asks again."""
        if not self._stopping and self._outage is None:
            self._pending.append(Pending(command, None, None, self._clock()))
            self._wakeup.set()

    async def wait_for_job(
        self,
        request_id: int,
        timeout: float | None,
        authorize: Callable[[RequestView], None] | None = None,
    ) -> RequestView:
        """The request once its job can be handed out, or it ended (AcquireWorker); see
        AcquireWaiters.wait_for_job."""
        return await self._waiters.wait_for_job(request_id, timeout, authorize)

    async def housekeep(self) -> Upkeep:
        """One round of store upkeep (see StoreUpkeep.housekeep); the loop runs one every
        upkeep_interval by itself."""
        assert self._upkeep is not None
        return await self._upkeep.housekeep()

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
                    last_commit = self._unpublished.last_commit
                    if len(self._unpublished) >= MAX_UNPUBLISHED and last_commit:
                        # Its callbacks run before this wait returns; a failure among them
                        # starts a recovery, seen at the top of the loop.
                        await asyncio.wait([last_commit])
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
            if self._unpublished.last_commit is not None:
                await asyncio.wait([self._unpublished.last_commit])
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
        done: list[Reply] = []
        count = min(len(self._pending), MAX_BATCH)
        current: Pending[Any] | None = None
        self._applying = True
        try:
            deaf = self._deaf_for(now)
            if deaf > DEAF_AFTER:
                log.warning(
                    "heard nothing while the clock moved on; counting heartbeats from now",
                    extra={"seconds": round(deaf, 1)},
                )
                core.deaf_until(now)
                self._applied_at = now
            # Each command applies at the time it arrived, after the timers due before it: a
            # heartbeat that came before its board's deadline counts however long it waited
            # (a busy loop, a slow commit), and a prolong after a job's timeout does not.
            # The timers fire before the command leaves the queue: a bug in one blames no
            # command, and those not yet applied wait for the rebuilt core.
            at = self._applied_at
            for _ in range(count):
                at = min(now, max(at, self._pending[0].received))
                due = core.next_timer()
                if due is not None and due <= at:
                    core.tick(at)
                current = self._pending.popleft()
                try:
                    result = current.command(core, at)
                except BorutaError as exc:
                    done.append((current, None, exc))
                else:
                    done.append((current, result, None))
                current = None
            core.tick(now)
            self._applied_at = now
        except Exception as exc:  # a bug: the core may be half changed
            self._drop_batch(exc, current, done)
            return
        finally:
            self._applying = False
        self._expect_next(now)
        self.batches += 1
        self.commands += count
        changes = core.drain()
        changes.audit.extend(self._audit)
        self._audit = []
        stored, carried = self._with_carried(changes, self._to_store(changes, now), now)
        self._finish_batch(changes, done, carried, stored)

    def _deaf_for(self, now: float) -> float:
        """How long before now the engine heard nothing without meaning to: how far the wall
        clock moved beyond the monotonic one since the last batch, or how late this batch
        runs after the time the engine meant to run by."""
        steady = self._monotonic()
        deaf = 0.0
        if self._last_clocks is not None:
            wall, last_steady = self._last_clocks
            deaf = (now - wall) - (steady - last_steady)
        if self._expected_by is not None:
            deaf = max(deaf, steady - self._expected_by)
        self._last_clocks = (now, steady)
        return deaf

    def _expect_next(self, now: float) -> None:
        """Note when the next batch is due at the latest: at once while commands wait,
        else at the core's next timer."""
        steady = self._monotonic()
        due = None if self._pending else self._next_due()
        self._expected_by = steady if self._pending else None
        if due is not None:
            self._expected_by = steady + max(0.0, due - now)

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
        times, tunnel ports, boards IDLE once prepared) are held back, and stored with the
        next batch that commits anyway, or on their own once LAST_SEEN_FLUSH has passed
        (or flush is set)."""
        seen, held, held_workers = self._seen, self._held, self._held_workers
        seen.update(changes.last_seen)
        changes.last_seen.clear()
        durable = changes.durable
        if durable:
            for view in changes.requests:  # the batch stores a newer view of its own
                held.pop(view.id, None)
            for worker in changes.workers:
                held_workers.pop(worker.uuid, None)
                seen.pop(worker.uuid, None)
            for worker in changes.removed_workers:
                seen.pop(worker.uuid, None)
        else:
            # Everything such a batch changed is rebuildable: it is all held.
            for view in changes.requests:
                if view.id in changes.rebuildable:
                    held[view.id] = view
            for worker in changes.workers:
                held_workers[worker.uuid] = worker
            self._held_history.extend(changes.history)
        holding = bool(held or held_workers or self._held_history)
        flush = (flush or self._store_held or now >= self._next_seen_flush) and (
            holding or bool(seen)
        )
        if not durable and not flush:
            return None
        if not holding and not (flush and seen):
            return changes
        extra = Changes(
            requests=list(held.values()),
            workers=list(held_workers.values()),
            history=self._held_history,
            last_seen=dict(seen) if flush else {},
            last_request_id=changes.last_request_id,
        )
        held.clear()
        held_workers.clear()
        self._held_history = []
        self._store_held = False
        if flush:
            seen.clear()
            self._next_seen_flush = now + self._seen_flush
        return merge([extra, changes]) if durable else extra

    def _finish_batch(
        self,
        changes: Changes,
        done: list[Reply],
        carried: list[AuditEvent],
        stored: Changes | None,
    ) -> None:
        """Commit stored (what of the batch goes to the store, if anything), and queue the
        batch for publication once it (and every batch before it) is durable."""
        assert self._writer is not None and self._upkeep is not None
        commit = None
        if stored is not None:
            self._upkeep.note_commit(stored)
            commit = self._writer.submit(stored)
        self._unpublished.add(changes, done, carried, commit)

    def _publish(self, changes: Changes, done: list[Reply]) -> None:
        """Hand out a durable batch: replies first, then waiters, watchers and effects."""
        for pending, result, error in done:
            future = pending.future
            if future is None or future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        self._waiters.wake(changes)
        for worker in changes.workers:
            if worker.state is WorkerState.FAILED:
                # An admin must act on a FAILED board: say so where admins look.
                log.warning("worker failed", extra={"worker": worker.uuid, "why": worker.reason})
        if self._publisher is not None:
            self._publisher.publish(changes)
        self._effects.start(changes)

    # ------------------------------------------------------------------ recovery

    def _store_failed(self, error: BaseException) -> None:
        """A commit failed: it and every batch applied after it are lost. Their callers
        hear why, nothing of them goes out, and writes are refused until recovery."""
        if self._outage is None:
            self._outage = Outage.begin(error, self._clock())
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
        for batch in self._unpublished.lose():
            carried.extend(batch.carried)
            self._refuse(batch.replies, error)
        if carried:
            self._carried[:0] = carried
            self._carried_due = self._clock()

    def _refuse(self, replies: list[Reply], error: BorutaError) -> None:
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
        culprit: Pending[Any] | None,
        done: list[Reply],
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
        assert self._writer is not None and self._upkeep is not None
        last_commit = self._unpublished.last_commit
        if last_commit is not None and not last_commit.done():
            # Batches applied before a failed command are sound: let them commit first.
            await asyncio.wait([last_commit])
        delay = RETRY_FIRST
        while not self._stopping:
            now = self._clock()
            try:
                rebuild = functools.partial(restore_core, now=now, policy=self.core.policy)
                core = await self._writer.run(rebuild)
            except Exception as exc:
                self._still_refused(exc)
            else:
                self._replace_core(core, now)
                freeze_heap(collect=True)  # the old core goes, the new one stays
                restored = core.drain()
                outage = self._outage
                if outage is not None:
                    # A real write, and the admins' record of the outage.
                    restored.audit.append(outage.event(self._clock()))
                self._upkeep.note_commit(restored)
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
        self._outage.still_refused(exc)

    def _replace_core(self, core: Core, restored_at: float) -> None:
        """Serve from core, rebuilt from the store at restored_at: what was in flight for the
        old one is void (the new one asks for its dryad calls and tunnels itself), and the
        commands still queued apply no earlier than the timers it fired by then."""
        self.core = core
        self._applied_at = max(self._applied_at, restored_at)
        # The new core opens its tunnels again and prepares its PREPARE boards again.
        self._held.clear()
        self._held_workers.clear()
        self._held_history = []
        self._effects.abandon_calls()
        kept = [p for p in self._pending if p.future is not None]
        self._pending = deque(kept)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = None
        if self._outage is not None:
            self._outage.rebuilt.set()

    def _recovered(self, restored: Changes) -> None:
        outage, self._outage = self._outage, None
        self._rebuild = False
        if outage is not None:
            outage.ended(self._clock())
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
        self._unpublished.fail(error)
        while self._pending:
            future = self._pending.popleft().future
            if future is not None and not future.done():
                future.set_exception(error)
        self._waiters.fail(error)
