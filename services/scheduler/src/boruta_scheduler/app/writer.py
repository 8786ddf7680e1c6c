"""The store's writer thread: commits in order, merging batches that queued up meanwhile."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from boruta_scheduler.core import Changes
from boruta_scheduler.core.outbox import merge
from boruta_scheduler.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
# Told of each commit, on the writer's thread: its seconds and how many batches it merged.
CommitObserver = Callable[[float, int], None]


@dataclass(frozen=True, slots=True)
class _Commit:
    changes: Changes
    future: asyncio.Future[None]
    # Commit even after a failed commit, and on success accept commits again.
    resume: bool = False


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Callable[[Store], Any]
    future: asyncio.Future[Any]


_Item = _Commit | _Call


class StoreWriter:
    """Runs Store.commit on its own thread so the event loop goes on while a commit syncs.

    Batches submitted while a commit is on disk are merged into the next transaction:
    the more load, the fewer syncs per change. Futures resolve in submission order. Once a
    commit fails, every later one fails with the same error without touching the store
    (each was built on the lost one) until a commit submitted with resume succeeds.
    """

    def __init__(
        self,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        on_commit: CommitObserver | None = None,
    ) -> None:
        self._store = store
        self._on_commit = on_commit
        self._loop = loop
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._failed: BaseException | None = None  # owned by the writer thread
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        self.commits = 0
        self.batches = 0

    def submit(self, changes: Changes, *, resume: bool = False) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(_Commit(changes, future, resume))
        return future

    def run(self, fn: Callable[[Store], T]) -> asyncio.Future[T]:
        """Call fn(store) on the writer thread, in order with the commits: work that is no
        commit (Store.load after a failed commit, purges, scrubs)."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put(_Call(fn, future))
        return future

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        held: list[_Item | None] = []  # taken from the queue while merging, not handled yet
        while True:
            item = held.pop() if held else self._queue.get()
            if item is None:
                return
            if isinstance(item, _Call):
                self._call(item)
                continue
            commits = [item]
            while not item.resume:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, _Commit) or more.resume:
                    held.append(more)
                    break
                commits.append(more)
            self._commit(commits)

    def _commit(self, commits: list[_Commit]) -> None:
        error = self._failed
        if error is None or commits[0].resume:
            began = time.perf_counter()
            try:
                self._store.commit(merge([c.changes for c in commits]))
            except BaseException as exc:  # reported to every waiter; the engine recovers
                error = self._failed = exc
            else:
                error = self._failed = None
                if self._on_commit is not None:
                    self._on_commit(time.perf_counter() - began, len(commits))
            self.commits += 1
            self.batches += len(commits)
        self._loop.call_soon_threadsafe(_resolve, [c.future for c in commits], error)

    def _call(self, call: _Call) -> None:
        try:
            result = call.fn(self._store)
        except BaseException as exc:
            self._loop.call_soon_threadsafe(_settle, call.future, None, exc)
        else:
            self._loop.call_soon_threadsafe(_settle, call.future, result, None)


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _settle(future, None, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
