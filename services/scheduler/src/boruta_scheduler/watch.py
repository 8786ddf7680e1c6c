"""Fans committed changes out to WatchRequests and WatchWorkers streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from boruta_scheduler.core import Changes
from boruta_scheduler.errors import ResourceExhausted
from boruta_scheduler.types import RequestView, WorkerView

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """A worker changed; removed means it was deregistered (view is its last state)."""

    view: WorkerView
    removed: bool = False


class _Overflow:
    """Marks a subscription whose reader fell too far behind."""


_OVERFLOW = _Overflow()


class Subscription(Generic[T]):
    """One watch stream's queue of events that passed its filter."""

    def __init__(self, hub: WatchHub, accepts: Callable[[T], bool], capacity: int) -> None:
        self._hub = hub
        self._accepts = accepts
        self._queue: asyncio.Queue[T | _Overflow] = asyncio.Queue(capacity + 1)
        self._capacity = capacity

    def offer(self, item: T) -> None:
        if not self._accepts(item):
            return
        if self._queue.qsize() >= self._capacity:
            # Keep no partial history: the reader must list again and re-watch.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(_OVERFLOW)
            self._hub.unsubscribe(self)
            return
        self._queue.put_nowait(item)

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Overflow):
                    raise ResourceExhausted(
                        f"the watch fell more than {self._capacity} changes behind; "
                        "list the current state and watch again"
                    )
                yield item
        finally:
            self._hub.unsubscribe(self)


class WatchHub:
    """Keeps the open subscriptions; publish() is called by the engine after each commit."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._requests: set[Subscription[RequestView]] = set()
        self._workers: set[Subscription[WorkerEvent]] = set()

    def watch_requests(self, accepts: Callable[[RequestView], bool]) -> Subscription[RequestView]:
        sub = Subscription(self, accepts, self.capacity)
        self._requests.add(sub)
        return sub

    def watch_workers(self, accepts: Callable[[WorkerEvent], bool]) -> Subscription[WorkerEvent]:
        sub = Subscription(self, accepts, self.capacity)
        self._workers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription[Any]) -> None:
        self._requests.discard(sub)
        self._workers.discard(sub)

    @property
    def open_count(self) -> int:
        return len(self._requests) + len(self._workers)

    def publish(self, changes: Changes) -> None:
        if self._requests:
            for view in changes.requests:
                for rsub in list(self._requests):
                    rsub.offer(view)
        if self._workers:
            events = [WorkerEvent(w) for w in changes.workers]
            events.extend(WorkerEvent(w, removed=True) for w in changes.removed_workers)
            for event in events:
                for wsub in list(self._workers):
                    wsub.offer(event)
