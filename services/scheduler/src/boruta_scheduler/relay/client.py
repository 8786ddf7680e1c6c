"""The scheduler's side of the relay: a TunnelKeeper that asks boruta-relay to hold the
tunnels, and reconciles it with the tunnels the running jobs need whenever it (re)connects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import grpc
from boruta.v1 import relay_pb2, relay_pb2_grpc

from boruta_scheduler.tunnels.forwarder import TunnelError

log = logging.getLogger(__name__)

# A relay that restarts is found again within a fraction of a second.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Pause before watching again after a watch ended while the channel looked ready.
_REWATCH_PAUSE = 0.2

Wanted = tuple[int, str, int]  # request id, board's SSH address, port (0: any)


class RelayTunnels:
    """Tunnels held by the relay at socket_path. It remembers the tunnels it was asked for,
    so that after a restart of the relay it can ask for all of them again; on_moved hears of
    a tunnel reopened on another port, on_failed of one that could not be reopened."""

    def __init__(
        self,
        socket_path: str,
        *,
        call_timeout: float = 10.0,
        on_moved: Callable[[int, int], None] | None = None,
        on_failed: Callable[[int, str], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.on_moved = on_moved
        self.on_failed = on_failed
        self._timeout = call_timeout
        self._channel = grpc.aio.insecure_channel(f"unix:{socket_path}", options=_CHANNEL_OPTIONS)
        self._stub = relay_pb2_grpc.RelayStub(self._channel)
        self._wanted: dict[int, tuple[str, int]] = {}
        # Orders go one at a time, so a reconcile never crosses an open or a close.
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._reconciled = asyncio.Event()
        self.instance = ""  # of the relay last reconciled
        self.public_host = ""  # as the relay reported it
        self.reconciles = 0

    def __len__(self) -> int:
        return len(self._wanted)

    async def start(self, wanted: Iterable[Wanted], wait: float = 5.0) -> bool:
        """Take the tunnels the running jobs need, and keep the relay holding exactly those
        from now on; returns whether the relay was reconciled within wait seconds (if not,
        it is as soon as it answers)."""
        self._wanted = {rid: (address, port) for rid, address, port in wanted}
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._watch(), name="relay")
        reconciled = loop.create_task(self._reconciled.wait())
        await asyncio.wait(
            {reconciled, self._watcher}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
        )
        if reconciled.done():
            return True
        reconciled.cancel()
        log.warning(
            "the relay does not answer yet; its tunnels are reconciled when it does",
            extra={"socket": self.socket_path},
        )
        return False

    async def reconcile(self, wanted: Iterable[Wanted]) -> None:
        """Replace the tunnels wanted (e.g. after a takeover) and tell the relay at once."""
        async with self._lock:
            self._wanted = {rid: (address, port) for rid, address, port in wanted}
        try:
            await self._reconcile()
        except grpc.aio.AioRpcError as exc:
            # The watch reconciles with this set as soon as the relay answers again.
            log.warning(
                "the relay is away; reconciled when it is back", extra={"why": exc.code().name}
            )

    async def open(self, request_id: int, ssh_address: str, port: int = 0) -> int:
        async with self._lock:
            self._wanted[request_id] = (ssh_address, port)
            tunnel = relay_pb2.Tunnel(request_id=request_id, ssh_address=ssh_address, port=port)
            try:
                reply = await self._stub.OpenTunnel(
                    relay_pb2.OpenTunnelRequest(tunnel=tunnel),
                    timeout=self._timeout,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                del self._wanted[request_id]
                raise TunnelError(f"the relay did not open it: {exc.details()}") from None
            self._wanted[request_id] = (ssh_address, reply.port)
            return reply.port

    async def close(self, request_id: int) -> None:
        async with self._lock:
            self._wanted.pop(request_id, None)
            try:
                await self._stub.CloseTunnel(
                    relay_pb2.CloseTunnelRequest(request_id=request_id), timeout=self._timeout
                )
            except grpc.aio.AioRpcError as exc:
                # The relay is away: the reconcile when it is back closes the tunnel.
                log.info(
                    "tunnel close deferred", extra={"request": request_id, "why": exc.code().name}
                )

    async def close_all(self) -> None:
        """The scheduler stops: the relay keeps every tunnel for the next one, so only the
        connection to the relay is closed."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._channel.close()

    async def _watch(self) -> None:
        """Reconcile whenever the relay answers anew; its watch ends when it goes away."""
        while True:
            call = self._stub.WatchRelay(relay_pb2.WatchRelayRequest(), wait_for_ready=True)
            try:
                hello = await call.read()
                if isinstance(hello, relay_pb2.WatchRelayResponse):
                    if hello.instance != self.instance:
                        log.info(
                            "relay found",
                            extra={"instance": hello.instance, "tunnels": hello.tunnels},
                        )
                    self.public_host = hello.public_host
                    await self._reconcile(hello.instance)
                    while await call.read() is not grpc.aio.EOF:
                        pass
                log.warning("the relay went away", extra={"socket": self.socket_path})
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "the relay went away",
                    extra={"socket": self.socket_path, "why": exc.code().name},
                )
            except Exception:  # a bug must not end the watch: the next relay needs it
                log.exception("watching the relay failed")
            finally:
                call.cancel()
            await asyncio.sleep(_REWATCH_PAUSE)

    async def _reconcile(self, instance: str = "") -> None:
        async with self._lock:
            wanted = dict(self._wanted)
            reply = await self._stub.Reconcile(
                relay_pb2.ReconcileRequest(
                    tunnels=[
                        relay_pb2.Tunnel(request_id=rid, ssh_address=address, port=port)
                        for rid, (address, port) in sorted(wanted.items())
                    ]
                ),
                timeout=self._timeout,
            )
            for tunnel in reply.tunnels:
                asked = wanted.get(tunnel.request_id)
                if asked is not None and asked[1] != tunnel.port:
                    self._wanted[tunnel.request_id] = (asked[0], tunnel.port)
                    if asked[1] and self.on_moved is not None:
                        log.warning(
                            "tunnel moved to another port",
                            extra={"request": tunnel.request_id, "port": tunnel.port},
                        )
                        self.on_moved(tunnel.request_id, tunnel.port)
            for failure in reply.failures:
                self._wanted.pop(failure.request_id, None)
                log.warning(
                    "the relay could not reopen a tunnel",
                    extra={"request": failure.request_id, "why": failure.reason},
                )
                if self.on_failed is not None:
                    self.on_failed(failure.request_id, failure.reason)
        if instance:
            self.instance = instance
        self.reconciles += 1
        self._reconciled.set()
        log.info("relay reconciled", extra={"tunnels": len(reply.tunnels)})
