"""How the blocking client is made from the asyncio one: each Client owns an event loop in a
thread of its own where its AsyncClient runs, and its methods are the AsyncClient's
coroutines, run there and waited for. So there is one implementation, and the blocking
API cannot drift from it: the facades below are made from the async methods themselves."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A")
S = TypeVar("S")
Inner = TypeVar("Inner")


class Portal:
    """An event loop running in a daemon thread; ``run`` hands it work and waits."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Awaitable[R]) -> R:
        """The result of work, run in the loop. Ctrl-C cancels the work and waits until it
        has unwound (a lease closes its request) before it is raised here."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a blocking client call from the client's own loop (an on_wait callback?); "
                "use AsyncClient there"
            )
        outcome: concurrent.futures.Future[R] = concurrent.futures.Future()
        task: list[asyncio.Future[R]] = []

        def settle(done: asyncio.Future[R]) -> None:
            if done.cancelled():
                outcome.cancel()
            elif (error := done.exception()) is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(done.result())

        def start() -> None:
            task.append(asyncio.ensure_future(work))
            task[0].add_done_callback(settle)

        self._loop.call_soon_threadsafe(start)
        interrupt: BaseException | None = None
        while True:
            try:
                result = outcome.result()
                break
            except concurrent.futures.CancelledError:
                if interrupt is None:
                    raise
                break
            except KeyboardInterrupt as exc:
                # Runs after start(): call_soon_threadsafe keeps the order.
                if interrupt is None:
                    self._loop.call_soon_threadsafe(lambda: task[0].cancel())
                interrupt = exc
        if interrupt is not None:
            raise interrupt
        return result

    def close(self) -> None:
        """Cancel what still runs in the loop (a forgotten lease's prolonger), then stop it."""
        if not self._thread.is_alive():
            return
        self.run(_cancel_the_rest())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _cancel_the_rest() -> None:
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class Facade(Generic[Inner]):
    """A blocking object over an async one (its ``_inner``), run in ``_portal``."""

    _portal: Portal
    _inner: Inner

    def __init__(self, portal: Portal, inner: Inner) -> None:
        self._portal = portal
        self._inner = inner


def _same(portal: Portal, value: A) -> A:
    return value


class Blocking(Generic[P, A, S]):
    """A method of a Facade made from a coroutine method of its inner object: the same
    parameters, run in the portal, its result passed through ``wrap`` (e.g. an AsyncWatch
    into a Watch). Read on the class, it is a plain function whose signature is the async
    method's, so ``inspect`` and ``help`` show the real parameters."""

    def __init__(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[A]],
        wrap: Callable[[Portal, A], S],
    ) -> None:
        self._method = method
        self._wrap = wrap

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[Concatenate[Any, P], S]: ...

    @overload
    def __get__(self, obj: Facade[Any], owner: type) -> Callable[P, S]: ...

    def __get__(self, obj: Facade[Any] | None, owner: type) -> Callable[..., S]:
        method, wrap = self._method, self._wrap

        if obj is None:

            @functools.wraps(method)
            def unbound(facade: Facade[Any], *args: Any, **kwargs: Any) -> S:
                return bound_to(facade)(*args, **kwargs)

            return unbound

        def bound_to(facade: Facade[Any]) -> Callable[..., S]:
            @functools.wraps(method)
            def bound(*args: Any, **kwargs: Any) -> S:
                portal = facade._portal
                return wrap(portal, portal.run(method(facade._inner, *args, **kwargs)))

            return bound

        return bound_to(obj)


def blocking(method: Callable[Concatenate[Any, P], Awaitable[R]]) -> Blocking[P, R, R]:
    """The coroutine method as a blocking one that returns what the coroutine returns."""
    return Blocking(method, _same)


def blocking_as(
    method: Callable[Concatenate[Any, P], Awaitable[A]], wrap: Callable[[Portal, A], S]
) -> Blocking[P, A, S]:
    """The coroutine method as a blocking one that returns ``wrap(portal, result)``."""
    return Blocking(method, wrap)


def in_loop(
    method: Callable[Concatenate[Inner, P], R],
) -> Callable[Concatenate[Inner, P], Awaitable[R]]:
    """A plain method of the inner object as a coroutine, so that it runs in the loop
    (grpc.aio objects belong to their loop's thread)."""

    @functools.wraps(method)
    async def call(inner: Inner, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(inner, *args, **kwargs)

    return call
