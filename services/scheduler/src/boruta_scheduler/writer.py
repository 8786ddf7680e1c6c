"""The store's writer thread: commits in order, merging batches that queued up meanwhile."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from boruta_scheduler.core import Changes
from boruta_scheduler.core.outbox import merge
from boruta_scheduler.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
# Store work that is not a commit (purges, scrubs): it runs alone, in order with commits.
Task = Callable[[Store], Any]
_Item = tuple[Changes | Task, asyncio.Future[Any]]


class StoreWriter:
    """Runs Store.commit on its own thread so the event loop goes on while a commit syncs.

    Batches submitted while a commit is on disk are merged into the next transaction:
    the more load, the fewer syncs per change. Futures resolve in submission order.
    """

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        self.commits = 0
        self.batches = 0

    def submit(self, changes: Changes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((changes, future))
        return future

    def run(self, task: Callable[[Store], T]) -> asyncio.Future[T]:
        """Run task(store) on the writer thread after the commits submitted before it."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((task, future))
        return future

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        carried: _Item | None = None
        while True:
            item = carried or self._queue.get()
            carried = None
            if item is None:
                return
            work, future = item
            if not isinstance(work, Changes):
                self._run_task(work, future)
                continue
            items = [(work, future)]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if not isinstance(more[0], Changes):
                    carried = more  # runs after this commit
                    break
                items.append((more[0], more[1]))
            error: BaseException | None = None
            try:
                self._store.commit(merge([changes for changes, _ in items]))
            except BaseException as exc:  # reported to every waiter; the engine stops
                error = exc
            self.commits += 1
            self.batches += len(items)
            self._loop.call_soon_threadsafe(_resolve, [f for _, f in items], None, error)
            if stop:
                return

    def _run_task(self, task: Task, future: asyncio.Future[Any]) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = task(self._store)
        except BaseException as exc:  # reported to the caller, who decides what it means
            error = exc
        self._loop.call_soon_threadsafe(_resolve, [future], result, error)


def _resolve(futures: list[asyncio.Future[Any]], result: Any, error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
