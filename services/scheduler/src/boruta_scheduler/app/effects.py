"""Runs the slow effects of committed batches: dryad calls and tunnel calls, as tasks whose
outcomes come back to the core as commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from boruta_scheduler.core import Changes, CloseTunnel, Core, DryadCall, TunnelCall
from boruta_scheduler.types import Access, FailedChecks

# The tunnels (forwarder, relay) know a job's tunnel by one number: its request's id for
# the first profile's job, and the id plus index * 2**TUNNEL_INDEX_SHIFT for a later
# profile's, above any request id the scheduler gives out (they count up from 1).
TUNNEL_INDEX_SHIFT = 56


def tunnel_key(request_id: int, index: int) -> int:
    """The number the tunnels know the job of profile index of a request by."""
    return request_id | index << TUNNEL_INDEX_SHIFT


def tunnel_job(key: int) -> tuple[int, int]:
    """(request id, profile index) of a tunnel's number."""
    return key & ((1 << TUNNEL_INDEX_SHIFT) - 1), key >> TUNNEL_INDEX_SHIFT


class DryadCaller(Protocol):
    """Makes the dryad calls the core asks for; raises DryadCallError on failure. Returns
    what a Prepare made, or FailedChecks when the checks it ran first failed."""

    async def call(self, call: DryadCall) -> Access | FailedChecks | None: ...


class TunnelKeeper(Protocol):
    """Opens and closes the per-job SSH tunnels; open() raises on failure."""

    async def open(self, key: int, ssh_address: str, port: int = 0) -> int: ...

    async def close(self, key: int) -> None: ...

    async def close_all(self) -> None: ...


class CommandSink(Protocol):
    """Where an effect's outcome goes: a command nobody waits for (Engine.submit)."""

    def submit(self, command: Callable[[Core, float], Any]) -> None: ...


class Effects:
    """Starts the dryad and tunnel calls of each committed batch; never blocks the engine."""

    def __init__(
        self, dryads: DryadCaller, tunnels: TunnelKeeper | None, outcomes: CommandSink
    ) -> None:
        self._dryads = dryads
        self._tunnels = tunnels
        self._outcomes = outcomes
        # Dryad calls in flight: void, and cancelled, when the core is rebuilt.
        self._calls: set[asyncio.Task[None]] = set()
        # The last tunnel call started for each job (by tunnel_key), which the next one
        # waits for.
        self._tunnel_ops: dict[int, asyncio.Task[None]] = {}

    def start(self, changes: Changes) -> None:
        """Start the tunnel calls and dryad calls of a batch that is durable."""
        for tunnel_call in changes.tunnels:
            self._run_tunnel_call(tunnel_call)
        for call in changes.calls:
            task = asyncio.get_running_loop().create_task(self._call_dryad(call))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    def abandon_calls(self) -> None:
        """Cancel the dryad calls in flight: the core that asked for them was replaced, and
        the new one asks for its own. Tunnel calls are left to finish: a job's calls run one
        after another, so the new core's calls for it wait for them."""
        for task in self._calls:
            task.cancel()

    async def stop(self) -> None:
        """Abandon the dryad calls, let the tunnel calls finish, then close every tunnel."""
        calls = list(self._calls)
        self.abandon_calls()
        await asyncio.gather(*calls, return_exceptions=True)
        await asyncio.gather(*self._tunnel_ops.values(), return_exceptions=True)
        if self._tunnels is not None:
            await self._tunnels.close_all()

    def _run_tunnel_call(self, call: TunnelCall) -> None:
        """Start a tunnel call after the previous one for the same job, so they never race."""
        if self._tunnels is None:
            return
        key = tunnel_key(call.request_id, call.index)
        previous = self._tunnel_ops.get(key)
        task = asyncio.get_running_loop().create_task(self._tunnel_call(call, previous))
        self._tunnel_ops[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tunnel_ops.get(key) is done:
                del self._tunnel_ops[key]

        task.add_done_callback(forget)

    async def _tunnel_call(self, call: TunnelCall, previous: asyncio.Task[None] | None) -> None:
        assert self._tunnels is not None
        if previous is not None:
            await asyncio.wait([previous])
        request_id, index = call.request_id, call.index
        key = tunnel_key(request_id, index)
        if isinstance(call, CloseTunnel):
            await self._tunnels.close(key)
            return
        try:
            port = await self._tunnels.open(key, call.ssh_address, call.port)
        except Exception as exc:  # any failure to open fails the job, not the scheduler
            error = str(exc) or exc.__class__.__name__
            self._outcomes.submit(
                lambda core, now: core.tunnel_failed(now, request_id, error, index)
            )
        else:
            self._outcomes.submit(
                lambda core, now: core.tunnel_opened(now, request_id, port, index)
            )

    async def _call_dryad(self, call: DryadCall) -> None:
        try:
            result = await self._dryads.call(call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure of a dryad call fails the worker
            error = str(exc) or exc.__class__.__name__
            self._outcomes.submit(lambda core, now: core.dryad_call_failed(now, call, error))
        else:
            self._outcomes.submit(lambda core, now: core.dryad_call_succeeded(now, call, result))
