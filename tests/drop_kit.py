"""A TCP proxy in front of a scheduler that can lose one answer: it holds what the scheduler
sends back, and once the test has seen the call take effect it closes the client's
connection without passing the answer on, as a network that drops a connection after the
server answered does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class DroppingProxy:
    """Forwards every connection to target; hold() then drop() loses the answers of the
    calls in flight between them. Connections made after drop() pass everything."""

    def __init__(self, target: str) -> None:
        self._host, _, port = target.rpartition(":")
        self._port = int(port)
        self._holding = False
        self._clients: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.held = 0  # bytes of answers held back, then lost
        self.address = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.address

    def hold(self) -> None:
        """From now on keep the scheduler's answers from the open connections."""
        self._holding = True

    def drop(self) -> None:
        """Close the open connections to the client; their held answers are lost."""
        self._holding = False
        for writer in self._clients:
            writer.transport.abort()
        self._clients.clear()

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        self._clients.append(writer)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, answers=False)),
            asyncio.create_task(self._pump(up_reader, writer, answers=True)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            up_writer.transport.abort()
            writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if answers and self._holding:
                    self.held += len(data)
                    continue
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()


@contextlib.asynccontextmanager
async def dropping_proxy(target: str) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def until(check: object, what: str, give_up_after: float = 120.0) -> None:
    """Await check() (a coroutine function returning bool) until it is true, yielding to the
    loop between looks. give_up_after only keeps a broken test from hanging the suite: far
    beyond anything a loaded machine needs (it was 2,000 looks, ~10 s, before)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    while loop.time() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")
