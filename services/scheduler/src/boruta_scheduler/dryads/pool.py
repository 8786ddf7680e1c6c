"""One gRPC channel per dryad address, with timeouts and retries for the idempotent calls."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc
from boruta.metrics import LoopHistograms
from boruta.v1 import dryad_pb2, dryad_pb2_grpc

from boruta_scheduler.core import DryadCall, DryadCallKind
from boruta_scheduler.types import Access, FailedChecks

if TYPE_CHECKING:
    from boruta.v1.dryad_pb2_grpc import DryadAsyncStub

log = logging.getLogger(__name__)

# Every Dryad call is idempotent, so a call that never reached the dryad is retried.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
# The result of a call that found the board failing its checks, in the call metrics.
UNHEALTHY = "unhealthy"


def failing_checks(health: dryad_pb2.HealthcheckResponse) -> str:
    """The failed checks of an unhealthy board, as its worker's FAILED reason shows them."""
    failed = "; ".join(f"{c.name}: {c.detail}" for c in health.checks if not c.ok)
    return f"failing checks: {failed or 'none named'}"


class DryadCallError(Exception):
    """A Dryad call failed; the message becomes part of the worker's FAILED reason."""

    def __init__(self, message: str, result: str) -> None:
        super().__init__(message)
        # Why, in a word, for metrics: a gRPC status code's name, "unhealthy" or "bad_reply".
        self.result = result


class DryadPool:
    """Dials dryads at their advertised addresses and makes the calls the core asks for."""

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.5,
        credentials: grpc.ChannelCredentials | None = None,
        timings: LoopHistograms | None = None,
    ) -> None:
        # With credentials, a dryad must show a certificate from the farm's CA that names
        # its advertised host, and sees ours: neither side can be impersonated.
        self._credentials = credentials
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, DryadAsyncStub] = {}
        # Workers already reported for sending no host keys: said once, not after every job.
        self._without_host_keys: set[str] = set()
        # Latency by (kind, result), when the scheduler keeps metrics.
        self._timings = timings

    def _stub(self, address: str) -> DryadAsyncStub:
        stub = self._stubs.get(address)
        if stub is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials)
            self._channels[address] = channel
            stub = self._stubs[address] = dryad_pb2_grpc.DryadStub(channel)
        return stub

    async def call(self, call: DryadCall) -> Access | FailedChecks | None:
        """Make the call; a Prepare that runs the checks first returns FailedChecks when
        one fails (a failed Healthcheck call raises DryadCallError)."""
        if self._timings is None:
            return await self._call(call)
        began = time.perf_counter()
        result = "ok"
        try:
            reply = await self._call(call)
            if isinstance(reply, FailedChecks):
                result = UNHEALTHY
            return reply
        except DryadCallError as error:
            result = error.result
            raise
        except asyncio.CancelledError:
            result = "cancelled"  # e.g. superseded, or the scheduler stopping
            raise
        except Exception:
            result = "error"
            raise
        finally:
            self._timings.child(call.kind.value, result).observe(time.perf_counter() - began)

    async def _call(self, call: DryadCall) -> Access | FailedChecks | None:
        stub = self._stub(call.address)
        attempt = 0
        while True:
            try:
                return await self._once(stub, call)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in _RETRYABLE and attempt < self._retries:
                    attempt += 1
                    await asyncio.sleep(self._backoff * attempt)
                    continue
                detail = exc.details() or ""
                message = f"{code.name} from {call.address}: {detail}".rstrip(": ")
                raise DryadCallError(message, code.name) from None

    async def _once(self, stub: DryadAsyncStub, call: DryadCall) -> Access | FailedChecks | None:
        timeout = self._timeout
        if call.kind is DryadCallKind.PREPARE:
            reply = await stub.Prepare(
                dryad_pb2.PrepareRequest(
                    worker_uuid=call.worker_uuid, run_healthcheck=call.healthcheck_first
                ),
                timeout=timeout,
            )
            if call.healthcheck_first:
                if reply.HasField("healthcheck"):
                    health = reply.healthcheck
                else:
                    # A dryad older than run_healthcheck prepared without checking: the
                    # board is checked now, before it is handed out.
                    health = await self._healthcheck(stub, call)
                if not health.healthy:
                    return FailedChecks(failing_checks(health))
            if not reply.username or not reply.private_key_pem:
                raise DryadCallError(
                    f"Prepare on {call.address} returned no username or key", "bad_reply"
                )
            if not reply.ssh_host_keys and call.worker_uuid not in self._without_host_keys:
                # A dryad older than host keys: jobs on it work, but nothing proves the board.
                self._without_host_keys.add(call.worker_uuid)
                log.warning(
                    "dryad sent no SSH host keys; clients cannot check the board's identity",
                    extra={"worker": call.worker_uuid, "dryad": call.address},
                )
            return Access(reply.username, reply.private_key_pem, tuple(reply.ssh_host_keys))
        if call.kind is DryadCallKind.PUT_IN_MAINTENANCE:
            await stub.PutInMaintenance(
                dryad_pb2.PutInMaintenanceRequest(
                    worker_uuid=call.worker_uuid, message=call.message
                ),
                timeout=timeout,
            )
            return None
        health = await self._healthcheck(stub, call)
        if not health.healthy:
            raise DryadCallError(failing_checks(health), UNHEALTHY)
        return None

    async def _healthcheck(
        self, stub: DryadAsyncStub, call: DryadCall
    ) -> dryad_pb2.HealthcheckResponse:
        return await stub.Healthcheck(
            dryad_pb2.HealthcheckRequest(worker_uuid=call.worker_uuid), timeout=self._timeout
        )

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self._channels.values()))
        self._channels.clear()
        self._stubs.clear()
