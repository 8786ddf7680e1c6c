"""The Dryad service: Prepare, PutInMaintenance and Healthcheck for the boards of this host."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from boruta.pki import PkiError, Role
from boruta.tls import PeerCertificates
from boruta.v1 import dryad_pb2, dryad_pb2_grpc

from boruta_dryad.backends import BackendError, BoardBackend
from boruta_dryad.config import BoardConfig
from boruta_dryad.health import run_checks
from boruta_dryad.hostkeys import HostKeyError, read_host_keys
from boruta_dryad.users import JobUsers, UserError

if TYPE_CHECKING:
    from boruta_dryad.metrics import DryadMetrics

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


class CallerRefused(Exception):
    """The caller is not the scheduler (with TLS, only its certificate may call)."""


class UnknownBoard(Exception):
    """This dryad serves no board with the UUID named."""


# The one table from the dryad's errors to gRPC codes. UNAVAILABLE is never used for
# these: the scheduler retries UNAVAILABLE, and these failures do not go away by retrying.
STATUS_OF_ERROR: dict[type[Exception], grpc.StatusCode] = {
    PkiError: grpc.StatusCode.UNAUTHENTICATED,
    CallerRefused: grpc.StatusCode.PERMISSION_DENIED,
    UnknownBoard: grpc.StatusCode.NOT_FOUND,
    BackendError: grpc.StatusCode.FAILED_PRECONDITION,
    HostKeyError: grpc.StatusCode.FAILED_PRECONDITION,
    UserError: grpc.StatusCode.INTERNAL,
    OSError: grpc.StatusCode.INTERNAL,
}
_CALL_ERRORS = (BackendError, HostKeyError, UserError, OSError)


async def abort_for_error(context: Context, error: Exception, message: str) -> None:
    """End the call with the status the table gives the error."""
    code = next(
        (c for t, c in STATUS_OF_ERROR.items() if isinstance(error, t)),
        grpc.StatusCode.INTERNAL,
    )
    await context.abort(code, message)


@dataclass
class Board:
    """A board at run time: its configuration, hardware and job users."""

    config: BoardConfig
    backend: BoardBackend
    users: JobUsers


class DryadServicer(dryad_pb2_grpc.DryadServicer):
    def __init__(
        self,
        boards: Mapping[str, Board],
        peers: PeerCertificates | None = None,
        metrics: DryadMetrics | None = None,
        leaving_service: Callable[[str], None] | None = None,
        checks_ran: Callable[[str], None] | None = None,
    ) -> None:
        self._boards = boards
        self._metrics = metrics
        # Told of each board PutInMaintenance takes out, before the next heartbeat says so:
        # the dryad's own checks must not report a board an admin is taking out.
        self._leaving_service = leaving_service or (lambda uuid: None)
        # Told when a call runs a board's checks: a round of the dryad's own begun before
        # is stale (the board may have been fixed since) and must not report it.
        self._checks_ran = checks_ran or (lambda uuid: None)
        # With TLS, only the scheduler's certificate may have users created or boards
        # taken out of service; None on a plaintext loopback demo.
        self._peers = peers

    def _check_caller(self, context: Context) -> None:
        if self._peers is None:
            return
        caller = self._peers.identity(context)
        if caller.role is not Role.SCHEDULER:
            raise CallerRefused(
                f"only the scheduler may call a dryad, not {caller.role.value} {caller.name}"
            )

    async def _board(self, uuid: str, context: Context) -> Board:
        try:
            self._check_caller(context)
            board = self._boards.get(uuid)
            if board is None:
                raise UnknownBoard(f"this dryad serves no board {uuid!r}")
            return board
        except (PkiError, CallerRefused, UnknownBoard) as exc:
            log.warning("call refused", extra={"why": str(exc)})
            await abort_for_error(context, exc, str(exc))
            raise AssertionError("unreachable") from exc

    async def _fail(self, context: Context, what: str, error: Exception) -> None:
        log.error("dryad call failed", extra={"call": what, "error": str(error)})
        await abort_for_error(context, error, f"{what}: {error}")

    async def Prepare(
        self, request: dryad_pb2.PrepareRequest, context: Context
    ) -> dryad_pb2.PrepareResponse:
        board = await self._board(request.worker_uuid, context)
        health = None
        if request.run_healthcheck:
            # Checked first, so that a board failing its checks gets no new user: nobody
            # could use it, and the scheduler fails it. The last job still ends, with its
            # processes: a hostile job must not outlive it by failing a check (a full disk).
            health = await self._check(board)
            if not health.healthy:
                log.warning(
                    "board failed its checks; not prepared",
                    extra={"worker": board.config.uuid, "failed": _failed_names(health)},
                )
                try:
                    await board.users.remove_all()
                except _CALL_ERRORS as exc:
                    await self._fail(context, "prepare", exc)
                return dryad_pb2.PrepareResponse(healthcheck=health)
        began = time.perf_counter()
        try:
            # Read at every Prepare, so that rotated host keys reach the next job; first,
            # since a board whose identity cannot be shown must not be handed out.
            host_keys = read_host_keys(board.config.ssh_host_keys)
            await board.backend.prepare()
            prepared = await board.users.prepare()
        except _CALL_ERRORS as exc:
            if self._metrics is not None:
                self._metrics.prepared(board.config.uuid, time.perf_counter() - began, ok=False)
            await self._fail(context, "prepare", exc)
            raise AssertionError("unreachable") from exc
        if self._metrics is not None:
            self._metrics.prepared(board.config.uuid, time.perf_counter() - began, ok=True)
        return dryad_pb2.PrepareResponse(
            username=prepared.username,
            private_key_pem=prepared.private_key_pem,
            ssh_host_keys=host_keys,
            healthcheck=health,
        )

    async def PutInMaintenance(
        self, request: dryad_pb2.PutInMaintenanceRequest, context: Context
    ) -> dryad_pb2.PutInMaintenanceResponse:
        board = await self._board(request.worker_uuid, context)
        self._leaving_service(board.config.uuid)
        try:
            # Nobody may keep using the board: the job user goes with its processes.
            await board.users.remove_all()
            await board.backend.maintenance(request.message)
        except _CALL_ERRORS as exc:
            await self._fail(context, "maintenance", exc)
        return dryad_pb2.PutInMaintenanceResponse()

    async def Healthcheck(
        self, request: dryad_pb2.HealthcheckRequest, context: Context
    ) -> dryad_pb2.HealthcheckResponse:
        board = await self._board(request.worker_uuid, context)
        return await self._check(board)

    async def _check(self, board: Board) -> dryad_pb2.HealthcheckResponse:
        """Run the board's checks, as Healthcheck and a Prepare that asks for them do."""
        self._checks_ran(board.config.uuid)
        checks = await run_checks(board.config, board.backend)
        if self._metrics is not None:
            self._metrics.checked(board.config.uuid, checks)
        return dryad_pb2.HealthcheckResponse(
            healthy=all(c.ok for c in checks),
            checks=[dryad_pb2.CheckResult(name=c.name, ok=c.ok, detail=c.detail) for c in checks],
        )


def _failed_names(health: dryad_pb2.HealthcheckResponse) -> str:
    return ", ".join(c.name for c in health.checks if not c.ok)
