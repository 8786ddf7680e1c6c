"""A store that keeps everything in memory: for unit tests and throwaway farms."""

from __future__ import annotations

import bisect
import dataclasses
import threading

from boruta_scheduler.core import Changes, Snapshot
from boruta_scheduler.listing import Page, RequestQuery, page_of, request_sort_key
from boruta_scheduler.store.base import HistoryPage, Purged
from boruta_scheduler.types import (
    AuditEvent,
    HistoryEntry,
    JobUsage,
    RequestView,
    StackView,
    TokenRecord,
    UsageBy,
    UsageQuery,
    UsageTotals,
    WorkerView,
)


class MemoryStore:
    """Implements the Store contract with dicts under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, RequestView] = {}
        # Requests by (owner, idempotency key), for those created with one.
        self._keys: dict[tuple[str, str], RequestView] = {}
        self._workers: dict[str, WorkerView] = {}
        self._history: list[tuple[int, HistoryEntry]] = []
        self._last_request_id = 0
        self._last_token_id = 0
        self._tokens: dict[int, TokenRecord] = {}
        self._stacks: dict[str, StackView] = {}
        # Events in id order; ids are never reused, also after a purge.
        self._audit: list[AuditEvent] = []
        self._last_audit_id = 0
        # Usage records by (request id, job index), as the SQL stores' job_usage table.
        self._usage: dict[tuple[int, int], JobUsage] = {}

    def load(self) -> Snapshot:
        with self._lock:
            live = [r for r in self._requests.values() if not r.state.is_terminal]
            tokens = sorted(self._tokens.values(), key=lambda t: t.id)
            stacks = [self._stacks[name] for name in sorted(self._stacks)]
            workers = list(self._workers.values())
            return Snapshot(
                live, workers, self._last_request_id, tokens, stacks, self._last_token_id
            )

    def commit(self, changes: Changes) -> None:
        with self._lock:
            for request in changes.requests:
                self._requests[request.id] = request
                if request.idempotency_key:
                    self._keys[(request.owner, request.idempotency_key)] = request
            for worker in changes.workers:
                # As the SQL stores: a heartbeat's host status, the stack and the collateral
                # are not kept (the core rebuilds the last two from the stacks and the jobs).
                self._workers[worker.uuid] = dataclasses.replace(
                    worker, host_status=None, stack="", collateral_of=0
                )
            for uuid, seen in changes.last_seen.items():
                if uuid in self._workers:
                    self._workers[uuid] = dataclasses.replace(self._workers[uuid], last_seen=seen)
            for removed in changes.removed_workers:
                uuid = removed.uuid
                self._workers.pop(uuid, None)
                self._history = [(s, e) for s, e in self._history if e.worker_uuid != uuid]
            seq = self._history[-1][0] if self._history else 0
            for entry in changes.history:
                seq += 1
                self._history.append((seq, entry))
            self._last_request_id = max(self._last_request_id, changes.last_request_id)
            for token in changes.tokens:
                self._tokens[token.id] = token
                self._last_token_id = max(self._last_token_id, token.id)
            for token_id in changes.removed_tokens:
                self._tokens.pop(token_id, None)
            for name in changes.removed_stacks:
                self._stacks.pop(name, None)
            for stack in changes.stacks:
                self._stacks[stack.name] = dataclasses.replace(stack, holder=0)
            for record in changes.usage:
                key = (record.request_id, record.index)
                first = self._usage.get(key)
                if first is not None:  # the group stays the one fixed at the start
                    record = dataclasses.replace(record, group=first.group)
                self._usage[key] = record
            for event in changes.audit:
                self._last_audit_id += 1
                self._audit.append(dataclasses.replace(event, id=self._last_audit_id))

    def get_request(self, request_id: int) -> RequestView | None:
        with self._lock:
            return self._requests.get(request_id)

    def find_request(self, owner: str, idempotency_key: str) -> RequestView | None:
        with self._lock:
            return self._keys.get((owner, idempotency_key))

    def list_requests(self, query: RequestQuery) -> Page[RequestView]:
        with self._lock:
            selected = [r for r in self._requests.values() if query.matches(r)]
        return page_of(
            selected,
            lambda r: request_sort_key(query.sort, r),
            descending=query.descending,
            after=query.after,
            limit=query.limit,
        )

    def worker_history(self, uuid: str, limit: int, before: int | None = None) -> HistoryPage:
        with self._lock:
            mine = [
                (s, e)
                for s, e in reversed(self._history)
                if e.worker_uuid == uuid and (before is None or s < before)
            ]
        page = mine[: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        return HistoryPage([e for _, e in page], page[-1][0] if more else None)

    def audit(self, limit: int, before: int | None = None) -> list[AuditEvent]:
        with self._lock:
            events = self._audit
            end = len(events) if before is None else bisect.bisect_left(events, before, key=_id)
            return list(reversed(events[max(0, end - limit) : end]))

    def purge(self, before: float, limit: int) -> Purged:
        with self._lock:
            old = [
                r.id
                for r in self._requests.values()
                if r.state.is_terminal and r.updated_at < before
            ][:limit]
            for request_id in old:
                gone = self._requests.pop(request_id)
                self._keys.pop((gone.owner, gone.idempotency_key), None)
            # Like the SQL store: the oldest entries first, by when they were added.
            history = sum(1 for _, e in self._history[:limit] if e.time < before)
            self._history = [
                (s, e) for i, (s, e) in enumerate(self._history) if i >= limit or e.time >= before
            ]
            audit = sum(1 for e in self._audit[:limit] if e.time < before)
            self._audit = [e for i, e in enumerate(self._audit) if i >= limit or e.time >= before]
        return Purged(len(old), history, audit)

    def usage(self, query: UsageQuery) -> list[UsageTotals]:
        with self._lock:
            records = list(self._usage.values())
        return sum_usage(records, query)

    def purge_usage(self, before: float, limit: int) -> int:
        with self._lock:
            old = [
                key
                for key, record in self._usage.items()
                if record.ended_at is not None and record.ended_at < before
            ][:limit]
            for key in old:
                del self._usage[key]
        return len(old)

    def scrub(self) -> bool:
        return True  # nothing outlives its Python objects here

    def close(self) -> None:
        pass


def _id(event: AuditEvent) -> int:
    return event.id


def sum_usage(records: list[JobUsage], query: UsageQuery) -> list[UsageTotals]:
    """What the SQL stores' usage_totals statement computes, over records in memory."""
    since, until = query.since, query.until
    sums: dict[str, dict[str, float]] = {}
    for r in records:
        if query.owner and r.owner != query.owner:
            continue
        if r.ended_at is not None and r.ended_at < since:
            continue
        first = r.started_at if r.started_at is not None else r.ended_at
        if first is None or first >= until:
            continue
        key = r.group if query.by is UsageBy.GROUP else r.owner
        s = sums.setdefault(key, dict.fromkeys(_SUMS, 0.0))
        if r.started_at is None:
            assert r.ended_at is not None
            if since <= r.ended_at < until:
                s["unstarted"] += 1
                s["unstarted_wait_seconds"] += r.ended_at - r.submitted_at
            continue
        end = min(query.now if r.ended_at is None else r.ended_at, until)
        s["board_seconds"] += max(0.0, end - max(r.started_at, since))
        if since <= r.started_at < until:
            s["jobs"] += 1
            if r.index == 0:
                wait = r.started_at - r.submitted_at
                s["requests"] += 1
                s["wait_seconds"] += wait
                s["max_wait_seconds"] = max(s["max_wait_seconds"], wait)
    return [
        UsageTotals(
            key=key,
            board_seconds=s["board_seconds"],
            jobs=int(s["jobs"]),
            requests=int(s["requests"]),
            wait_seconds=s["wait_seconds"],
            max_wait_seconds=s["max_wait_seconds"],
            unstarted=int(s["unstarted"]),
            unstarted_wait_seconds=s["unstarted_wait_seconds"],
        )
        for key, s in sorted(sums.items())
    ]


_SUMS = (
    "board_seconds",
    "jobs",
    "requests",
    "wait_seconds",
    "max_wait_seconds",
    "unstarted",
    "unstarted_wait_seconds",
)
