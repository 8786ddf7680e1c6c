"""How a watch carries on when its scheduler goes away: it opens again on the leader, and
what changed meanwhile is caught up without a gap or a duplicate.

The watch API has no change log to resume from, so a request watch catches up by listing
the requests that pass its filter and changed since a little before the last change it
saw (ListRequests sorted by updated_at), and drops any change not newer than the last one
it delivered of the same request. A request that changed several times while no
scheduler could be reached shows up once, in its latest state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from boruta.v1 import requests_pb2, workers_pb2

from boruta_client import _convert as convert
from boruta_client.types import Request, RequestSort, WorkerChange

if TYPE_CHECKING:
    from boruta_client.aio import AsyncClient

T = TypeVar("T")
Reply = TypeVar("Reply")

# How far before the last change seen the catch-up looks (the schedulers' clocks may
# differ by this much), and how many delivered requests a watch remembers at most.
CATCH_UP_MARGIN = timedelta(seconds=30)
REMEMBERED = 10_000
PAGE_SIZE = 500

Reopen = Callable[[], Awaitable[tuple["grpc.aio.UnaryStreamCall[Any, Reply]", list[T]]]]


class Resume(Generic[T, Reply]):
    """What a watch needs to open again: the message to open it with, what it missed, and
    which changes it already delivered. reopen is set by the client that opened it."""

    reopen: Reopen[Reply, T]

    def message_again(self, message: Any) -> Any:
        return message

    async def missed(self) -> list[T]:
        return []

    def fresh(self, item: T) -> bool:
        """Whether item is news to the watch's reader (and note it as delivered)."""
        raise NotImplementedError


class RequestResume(Resume[Request, requests_pb2.WatchRequestsResponse]):
    """A request watch: catch up with ListRequests, deliver each change of a request once."""

    def __init__(self, client: AsyncClient, flt: requests_pb2.RequestFilter) -> None:
        self._client = client
        self._filter = flt
        self._seen: dict[int, Request] = {}
        self._latest: datetime | None = None
        self._opened = datetime.now(UTC)

    def message_again(self, message: Any) -> Any:
        again = requests_pb2.WatchRequestsRequest()
        again.CopyFrom(message)
        again.include_current = False  # the catch-up brings what matters of it
        return again

    async def missed(self) -> list[Request]:
        """Requests that pass the filter and changed since a little before the last change
        seen, oldest change first."""
        floor = (self._latest or self._opened) - CATCH_UP_MARGIN
        message = convert.list_requests(self._filter, RequestSort.UPDATED_AT, True, PAGE_SIZE)
        found: list[Request] = []
        while True:
            reply = await self._client._call(lambda s: s.requests.ListRequests, message)
            page = [convert.request(r) for r in reply.requests]
            found.extend(r for r in page if r.updated_at >= floor)
            if not reply.next_page_token or page[-1].updated_at < floor:
                break
            message.page_token = reply.next_page_token
        return sorted(found, key=lambda r: (r.updated_at, r.id))

    def fresh(self, item: Request) -> bool:
        last = self._seen.get(item.id)
        if last is not None and (item == last or item.updated_at < last.updated_at):
            return False
        self._seen[item.id] = item
        if self._latest is None or item.updated_at > self._latest:
            self._latest = item.updated_at
        if len(self._seen) > REMEMBERED:
            self._forget()
        return True

    def _forget(self) -> None:
        """Forget requests older than any catch-up can bring back."""
        assert self._latest is not None
        floor = self._latest - 2 * CATCH_UP_MARGIN
        self._seen = {k: v for k, v in self._seen.items() if v.updated_at >= floor}


class WorkerResume(Resume[WorkerChange, workers_pb2.WatchWorkersResponse]):
    """A worker watch: open again with the current workers, deliver those that changed."""

    def __init__(self) -> None:
        self._seen: dict[str, WorkerChange] = {}

    def message_again(self, message: Any) -> Any:
        again = workers_pb2.WatchWorkersRequest()
        again.CopyFrom(message)
        again.include_current = True
        return again

    def fresh(self, item: WorkerChange) -> bool:
        if self._seen.get(item.worker.uuid) == item:
            return False
        self._seen[item.worker.uuid] = item
        return True
