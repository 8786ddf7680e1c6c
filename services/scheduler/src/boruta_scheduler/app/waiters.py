"""AcquireWorker's waiters: callers waiting for their request's job to be ready to hand out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVar

from boruta_scheduler.core import Changes, Core
from boruta_scheduler.types import RequestState, RequestView

T = TypeVar("T")


class Executor(Protocol):
    """Applies a command to the core in order with every other one (Engine.execute)."""

    async def execute(self, command: Callable[[Core, float], T]) -> T: ...


class AcquireWaiters:
    """Futures of callers waiting for a request, woken by the committed changes to it."""

    def __init__(self, engine: Executor, tunnels_used: bool) -> None:
        self._engine = engine
        self._tunnels_used = tunnels_used
        self._waiters: dict[int, set[asyncio.Future[RequestView]]] = {}

    async def wait_for_job(
        self,
        request_id: int,
        timeout: float | None,
        authorize: Callable[[RequestView], None] | None = None,
    ) -> RequestView:
        """The request once it is IN_PROGRESS or terminal; raises TimeoutError after timeout.
        authorize sees the request inside the engine, in order with every other command, so
        no request created after a check can slip past it."""
        future: asyncio.Future[RequestView] = asyncio.get_running_loop().create_future()

        def check(core: Core, now: float) -> RequestView | None:
            view = core.request(request_id)
            if authorize is not None:
                authorize(view)
            if self._job_ready(view):
                return view
            # Registered inside the command, so no change to the request can slip past it.
            self._waiters.setdefault(request_id, set()).add(future)
            return None

        try:
            view = await self._engine.execute(check)
        except BaseException:
            self._forget(request_id, future)
            raise
        if view is not None:
            return view
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._forget(request_id, future)

    def wake(self, changes: Changes) -> None:
        """Hand each committed request that is ready (or will never be) to its waiters."""
        if not self._waiters:
            return
        for view in changes.requests:
            if view.state is RequestState.WAITING or (
                view.state is RequestState.IN_PROGRESS and not self._job_ready(view)
            ):
                continue
            for future in self._waiters.pop(view.id, ()):
                if not future.done():
                    future.set_result(view)

    def fail(self, error: BaseException) -> None:
        """Raise error in every waiter: the engine stopped for good."""
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(error)
        self._waiters.clear()

    def _job_ready(self, view: RequestView) -> bool:
        """A running request can be handed out once the tunnels of all its jobs are open (if
        tunnels are used)."""
        if view.state is not RequestState.IN_PROGRESS:
            return False
        jobs = view.all_jobs
        return not self._tunnels_used or (bool(jobs) and all(j.tunnel_port != 0 for j in jobs))

    def _forget(self, request_id: int, future: asyncio.Future[RequestView]) -> None:
        waiters = self._waiters.get(request_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[request_id]
