"""The store's writer thread: commits in order, merging batches that queued up meanwhile."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

from boruta_scheduler.core import Changes
from boruta_scheduler.core.outbox import merge
from boruta_scheduler.store import Store

log = logging.getLogger(__name__)

_Item = tuple[Changes, asyncio.Future[None]]


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

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
            error: BaseException | None = None
            try:
                self._store.commit(merge([changes for changes, _ in items]))
            except BaseException as exc:  # reported to every waiter; the engine stops
                error = exc
            self.commits += 1
            self.batches += len(items)
            self._loop.call_soon_threadsafe(_resolve, [f for _, f in items], error)
            if stop:
                return


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
