"""A store that keeps everything in memory: for unit tests and throwaway farms."""

from __future__ import annotations

import dataclasses
import threading

from boruta_scheduler.core import Changes, Snapshot
from boruta_scheduler.listing import Page, RequestQuery, page_of, request_sort_key
from boruta_scheduler.store.base import HistoryPage
from boruta_scheduler.types import (
    AuditEvent,
    HistoryEntry,
    RequestView,
    TokenRecord,
    WorkerView,
)


class MemoryStore:
    """Implements the Store contract with dicts under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[int, RequestView] = {}
        self._workers: dict[str, WorkerView] = {}
        self._history: list[tuple[int, HistoryEntry]] = []
        self._last_request_id = 0
        self._tokens: list[TokenRecord] = []
        self._audit: list[AuditEvent] = []

    def load(self) -> Snapshot:
        with self._lock:
            live = [r for r in self._requests.values() if not r.state.is_terminal]
            return Snapshot(live, list(self._workers.values()), self._last_request_id)

    def commit(self, changes: Changes) -> None:
        with self._lock:
            for request in changes.requests:
                self._requests[request.id] = request
            for worker in changes.workers:
                self._workers[worker.uuid] = dataclasses.replace(worker, host_status=None)
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
            for event in changes.audit:
                self._audit.append(dataclasses.replace(event, id=len(self._audit) + 1))

    def get_request(self, request_id: int) -> RequestView | None:
        with self._lock:
            return self._requests.get(request_id)

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

    def add_token(self, token: TokenRecord) -> TokenRecord:
        with self._lock:
            return self._add_token(token)

    def _add_token(self, token: TokenRecord) -> TokenRecord:
        record = dataclasses.replace(token, id=len(self._tokens) + 1, revoked_at=None)
        self._tokens.append(record)
        return record

    def tokens(self) -> list[TokenRecord]:
        return list(self._tokens)

    def get_token(self, token_id: int) -> TokenRecord | None:
        return self._tokens[token_id - 1] if 0 < token_id <= len(self._tokens) else None

    def revoke_token(self, token_id: int, now: float) -> TokenRecord | None:
        with self._lock:
            return self._revoke_token(token_id, now)

    def _revoke_token(self, token_id: int, now: float) -> TokenRecord | None:
        record = self.get_token(token_id)
        if record is not None and record.revoked_at is None:
            record = dataclasses.replace(record, revoked_at=now)
            self._tokens[token_id - 1] = record
        return record

    def audit(self, limit: int, before: int | None = None) -> list[AuditEvent]:
        end = len(self._audit) if before is None else min(before - 1, len(self._audit))
        return list(reversed(self._audit[max(0, end - limit) : end]))

    def close(self) -> None:
        pass
