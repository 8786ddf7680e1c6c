"""The storage contract: what the scheduler needs to survive a crash and to answer reads."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Protocol

from boruta_scheduler.core import Changes, Snapshot
from boruta_scheduler.listing import Page, RequestQuery
from boruta_scheduler.types import (
    AuditEvent,
    HistoryEntry,
    RequestView,
    StackView,
    TokenRecord,
    UsageQuery,
    UsageTotals,
    WorkerView,
)


class CannotOpenStore(Exception):
    """The store cannot be opened for writing at start; the message names the path and why."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Entries of a worker's history, newest first; next_before continues the list."""

    entries: list[HistoryEntry]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows one purge deleted, per kind."""

    requests: int = 0
    history: int = 0
    audit: int = 0
    usage: int = 0

    def reached(self, limit: int) -> bool:
        """Whether some kind hit the limit, so that more may be left to purge."""
        return max(self.requests, self.history, self.audit, self.usage) >= limit


@dataclass(frozen=True, slots=True)
class ChangedSince:
    """What commits changed after the change number since, read in one snapshot of a
    store that numbers its changes (PostgreSQL), for a standby's copy (app/warm.py)."""

    since: int
    seq: int  # the highest change number read: since, if nothing changed
    requests: list[RequestView]  # in any state: a finished one leaves the live state
    workers: list[WorkerView]
    removed_workers: list[str]
    tokens: list[TokenRecord]
    removed_tokens: list[int]
    last_request_id: int
    # Why these changes cannot bring a copy as of since up to date ("": they can): the
    # purge deleted a request changed after since (whether it was live then is lost), or
    # the database server is not the one the copy was loaded from.
    gap: str
    stacks: list[StackView] = field(default_factory=list)
    removed_stacks: list[str] = field(default_factory=list)
    last_token_id: int = 0

    @property
    def rows(self) -> int:
        """Rows read, tombstones included."""
        return (
            len(self.requests)
            + len(self.workers)
            + len(self.removed_workers)
            + len(self.tokens)
            + len(self.removed_tokens)
            + len(self.stacks)
            + len(self.removed_stacks)
        )


class Store(Protocol):
    """Durable scheduler state. commit() is atomic; reads see only committed state.

    Calls block; the engine runs them off the event loop. commit() is called from one
    thread at a time, reads from any thread.
    """

    def load(self) -> Snapshot:
        """Live requests, every worker, the last request and token ids and every token kept
        (not purged), to rebuild the core. The requests may be read from the store as they
        are iterated: iterate them once, at once, on the thread that called load()."""
        ...

    def commit(self, changes: Changes) -> None:
        """Make every change durable at once, or raise and keep none (StoreUnavailable
        when the store refuses writes: disk full, read-only, I/O errors)."""
        ...

    def get_request(self, request_id: int) -> RequestView | None:
        """One request in any state, or None."""
        ...

    def find_request(self, owner: str, idempotency_key: str) -> RequestView | None:
        """The request, in any state, that owner created with this idempotency key, or None."""
        ...

    def list_requests(self, query: RequestQuery) -> Page[RequestView]:
        """Requests in any state that pass the query, one page."""
        ...

    def worker_history(self, uuid: str, limit: int, before: int | None = None) -> HistoryPage:
        """A worker's state changes, newest first, older than the cursor before."""
        ...

    def audit(self, limit: int, before: int | None = None) -> list[AuditEvent]:
        """Audit events older than the id before, newest first."""
        ...

    def purge(self, before: float, limit: int) -> Purged:
        """Delete up to limit rows of each kind older than before, in one transaction:
        finished requests (with their jobs) last changed before it, worker history
        entries and audit events. Live requests and workers are never purged."""
        ...

    def usage(self, query: UsageQuery) -> list[UsageTotals]:
        """Usage over the query's period, one row per user or group with any, by key
        (code point order); summed by the store, so memory does not grow with the records."""
        ...

    def purge_usage(self, before: float, limit: int) -> int:
        """Delete up to limit usage records of jobs (or unstarted requests) that ended
        before before, in one transaction; the number deleted. Running jobs are kept."""
        ...

    def scrub(self) -> bool:
        """Make what was deleted or overwritten unreadable from the store's files too (no
        old copies of keys left in free space or journals); False if it must be retried."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


def safe_url(url: str) -> str:
    """The store URL without a password, to log or show."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
