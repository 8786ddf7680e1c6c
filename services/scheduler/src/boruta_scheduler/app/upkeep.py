"""Store upkeep between commits: purges what is older than the retention in small batches,
and scrubs the store's files of keys that are gone from its tables."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from boruta_scheduler.core import Changes
from boruta_scheduler.store import Purged, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows of each kind one purge deletes (one short transaction), how often a purge runs
# while a backlog lasts and when there is none, and how often the files are scrubbed of
# dropped keys (if any may have been dropped).
PURGE_BATCH = 500
PURGE_PAUSE = 1.0
PURGE_INTERVAL = 600.0
UPKEEP_INTERVAL = 10.0


class StoreCalls(Protocol):
    """Runs work on the store in order with the commits (StoreWriter.run)."""

    def run(self, fn: Callable[[Store], T]) -> asyncio.Future[T]: ...


class UpkeepHost(Protocol):
    """What upkeep asks of the engine it serves."""

    @property
    def outage(self) -> str | None: ...

    @property
    def stopping(self) -> bool: ...

    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one round of store upkeep did."""

    purged: Purged
    scrubbed: bool
    purge_error: str = ""  # why the purge failed, if it did


class StoreUpkeep:
    """Runs rounds of upkeep, one at a time, every interval (0: only when housekeep() is
    called) and a purge pause apart while a purge backlog lasts."""

    def __init__(
        self,
        store: StoreCalls,
        host: UpkeepHost,
        *,
        retention: float,
        interval: float,
        usage_retention: float = 0.0,
    ) -> None:
        self._store = store
        self._host = host
        # Finished requests, history and audit events older than this are purged (0: never).
        self._retention = retention
        # Usage records of jobs that ended longer ago than this are purged (0: never).
        self._usage_retention = usage_retention
        self._interval = interval
        self._next_purge = 0.0
        self._purge_failures = 0  # in a row
        self._lock = asyncio.Lock()  # one round at a time, whoever starts it
        # Whether a commit since the last scrub may have dropped a key (so may a restart).
        self._scrub_wanted = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="store-upkeep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def note_commit(self, changes: Changes) -> None:
        """Want a scrub if committing changes may leave a dropped key in the files."""
        if changes.requests or changes.workers or changes.removed_workers or changes.tokens:
            # A job's end or a new prepared key drops the key the rows held before; a
            # token's sealed secret is cleared a while after its issue.
            self._scrub_wanted = True

    async def housekeep(self) -> Upkeep:
        """One round of store upkeep, run by the writer between commits: purge one batch of
        what is older than the retention (when due), and scrub the store's files if a
        commit since the last scrub may have dropped a key."""
        async with self._lock:
            return await self._housekeep()

    async def _housekeep(self) -> Upkeep:
        if self._host.outage is not None:
            return Upkeep(Purged(), scrubbed=False)  # purges and scrubs are writes too
        now = self._host.now()
        purged = Purged()
        purge_error = ""
        if self._purges and now >= self._next_purge:
            retention, usage_retention = self._retention, self._usage_retention

            def purge(store: Store) -> Purged:
                done = Purged()
                if retention > 0:
                    done = store.purge(now - retention, PURGE_BATCH)
                if usage_retention > 0:
                    usage = store.purge_usage(now - usage_retention, PURGE_BATCH)
                    done = dataclasses.replace(done, usage=usage)
                return done

            try:
                purged = await self._store.run(purge)
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
                        "usage_retention_days": round(usage_retention / 86400, 2),
                        "usage": purged.usage,
                    },
                )
        scrubbed = False
        if self._scrub_wanted:
            self._scrub_wanted = False
            scrubbed = await self._store.run(lambda store: store.scrub())
            if not scrubbed:
                self._scrub_wanted = True  # (commits meanwhile have set it already)
        return Upkeep(purged, scrubbed, purge_error)

    @property
    def _purges(self) -> bool:
        return self._retention > 0 or self._usage_retention > 0

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

    async def _loop(self) -> None:
        while not self._host.stopping:
            try:
                await self.housekeep()
            except Exception:  # a failed purge or scrub is retried; commits decide fatality
                log.warning("store upkeep failed; retrying later", exc_info=True)
            wait = self._interval
            if self._purges:
                wait = min(wait, max(PURGE_PAUSE, self._next_purge - self._host.now()))
            await asyncio.sleep(wait)
