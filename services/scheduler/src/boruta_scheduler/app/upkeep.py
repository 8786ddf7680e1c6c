"""Store upkeep between commits: purges what is older than the retention in small batches,
forgets tokens that stopped working longer ago than the token retention (a core command,
since the core keeps the tokens), and scrubs the store's files of keys that are gone from
its tables."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from boruta_scheduler.app.outage import SCHEDULER_ACTOR
from boruta_scheduler.core import Changes, Core
from boruta_scheduler.store import Purged, Store
from boruta_scheduler.types import AuditEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows of each kind one purge deletes (one short transaction), how often a purge runs
# while a backlog lasts and when there is none, and how often the files are scrubbed of
# dropped keys (if any may have been dropped).
PURGE_BATCH = 500
PURGE_PAUSE = 1.0
PURGE_INTERVAL = 600.0
UPKEEP_INTERVAL = 10.0
# Tokens one purge forgets: a short engine batch however long the backlog.
TOKEN_PURGE_BATCH = 200


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

    async def execute(self, command: Callable[[Core, float], T]) -> T: ...

    def audit(self, event: AuditEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one round of store upkeep did."""

    purged: Purged
    scrubbed: bool
    purge_error: str = ""  # why the purge failed, if it did
    tokens_purged: int = 0


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
        token_retention: float = 0.0,
    ) -> None:
        self._store = store
        self._host = host
        # Finished requests, history and audit events older than this are purged (0: never).
        self._retention = retention
        # Usage records of jobs that ended longer ago than this are purged (0: never).
        self._usage_retention = usage_retention
        # Tokens that stopped working longer ago than this are forgotten (0: never).
        self._token_retention = token_retention
        self._interval = interval
        self._next_purge = 0.0
        self._next_token_purge = 0.0
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
        if (
            changes.requests
            or changes.workers
            or changes.removed_workers
            or changes.tokens
            or changes.removed_tokens
        ):
            # A job's end or a new prepared key drops the key the rows held before; a
            # token's sealed secret is cleared a while after its issue, or with its token.
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
        tokens_purged = 0
        if self._token_retention > 0 and now >= self._next_token_purge and not self._host.stopping:
            tokens_purged = await self._purge_tokens(now)
        scrubbed = False
        if self._scrub_wanted:
            self._scrub_wanted = False
            scrubbed = await self._store.run(lambda store: store.scrub())
            if not scrubbed:
                self._scrub_wanted = True  # (commits meanwhile have set it already)
        return Upkeep(purged, scrubbed, purge_error, tokens_purged)

    async def _purge_tokens(self, now: float) -> int:
        """Forget one batch of the tokens that stopped working longer ago than the token
        retention, through the engine (the core keeps the tokens; the batch deletes their
        rows), with one audit event; plan the next purge. The number forgotten."""
        retention = self._token_retention
        host = self._host

        def purge(core: Core, at: float) -> tuple[list[int], float | None]:
            purged = core.purge_tokens(at, retention, TOKEN_PURGE_BATCH)
            if purged:
                ids = ", ".join(str(i) for i in purged)
                host.audit(
                    AuditEvent(
                        at,
                        SCHEDULER_ACTOR,
                        "scheduler",
                        "PurgeTokens",
                        "tokens",
                        f"{len(purged)} tokens forgotten: expired or revoked more than "
                        f"{_duration(retention)} ago (token_retention); ids {ids}",
                    )
                )
            return purged, core.next_token_purge(retention)

        # A token issued or revoked later may be due before the next one known now.
        later = now + min(PURGE_INTERVAL, retention)
        try:
            purged, due = await host.execute(purge)
        except Exception as exc:  # retried later; the rest of upkeep does not depend on it
            log.warning(
                "purging old tokens failed; retrying later",
                extra={"cause": f"{type(exc).__name__}: {exc}", "retry_in": later - now},
            )
            self._next_token_purge = later
            return 0
        if len(purged) >= TOKEN_PURGE_BATCH:  # more may be due: soon, but not at once
            self._next_token_purge = now + PURGE_PAUSE
        else:
            self._next_token_purge = later if due is None else min(due, later)
        if purged:
            log.info(
                "forgot tokens that stopped working longer ago than the token retention",
                extra={"token_retention_days": round(retention / 86400, 2), "tokens": len(purged)},
            )
        return len(purged)

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
            if self._token_retention > 0:
                wait = min(wait, max(PURGE_PAUSE, self._next_token_purge - self._host.now()))
            await asyncio.sleep(wait)


def _duration(seconds: float) -> str:
    """A retention as admins set it: in days, hours or seconds."""
    for unit, size in (("d", 86400.0), ("h", 3600.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
