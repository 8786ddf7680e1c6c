"""Fans committed changes out to WatchRequests and WatchWorkers streams (and to whatever
else follows the engine's commits, through Publishers)."""

from __future__ import annotations

import asyncio
from collections import Counter
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

    def __init__(
        self, hub: WatchHub, accepts: Callable[[T], bool], capacity: int, owner: str
    ) -> None:
        self._hub = hub
        self.owner = owner
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
            self.close()

    def close(self) -> None:
        """Stop the subscription (idempotent); the stream's server side calls it always, since
        a client that leaves early may never start iterating."""
        self._hub.unsubscribe(self)


class Publishers:
    """Hands each commit to several publishers in turn: the engine takes one."""

    def __init__(self, *publish: Callable[[Changes], None]) -> None:
        self._publish = list(publish)

    def add(self, publish: Callable[[Changes], None]) -> None:
        self._publish.append(publish)

    def publish(self, changes: Changes) -> None:
        for publish in self._publish:
            publish(changes)


class WatchHub:
    """Keeps the open subscriptions; publish() is called by the engine after each commit."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._requests: set[Subscription[RequestView]] = set()
        self._workers: set[Subscription[WorkerEvent]] = set()
        self._per_owner: Counter[str] = Counter()

    def watch_requests(
        self, accepts: Callable[[RequestView], bool], owner: str = ""
    ) -> Subscription[RequestView]:
        sub = Subscription(self, accepts, self.capacity, owner)
        self._requests.add(sub)
        self._per_owner[owner] += 1
        return sub

    def watch_workers(
        self, accepts: Callable[[WorkerEvent], bool], owner: str = ""
    ) -> Subscription[WorkerEvent]:
        sub = Subscription(self, accepts, self.capacity, owner)
        self._workers.add(sub)
        self._per_owner[owner] += 1
        return sub

    def unsubscribe(self, sub: Subscription[Any]) -> None:
        if sub in self._requests or sub in self._workers:
            self._requests.discard(sub)
            self._workers.discard(sub)
            self._per_owner[sub.owner] -= 1
            if not self._per_owner[sub.owner]:
                del self._per_owner[sub.owner]

    def open_of(self, owner: str) -> int:
        """How many watches this caller has open."""
        return self._per_owner.get(owner, 0)

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
