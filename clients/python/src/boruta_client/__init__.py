"""Python client for the boruta device-farm scheduler.

from boruta_client import Client

with Client() as client:  # the farm of schedctl's config (BORUTA_CONFIG, contexts, BORUTA_*)
    with client.lease({"board": "rpi4"}) as board:
        print(board.ssh.run("uname -a").output)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each name is loaded from its module when first used, so that importing the package (or
# one name of it, as schedctl's commands do) does not load gRPC, asyncio and the generated
# code of every service. Type checkers see ordinary imports.
if TYPE_CHECKING:
    from boruta_client.aio import (
        AsyncBoard,
        AsyncBoards,
        AsyncBoardsLease,
        AsyncBoardSSH,
        AsyncClient,
        AsyncLease,
        AsyncWatch,
    )
    from boruta_client.client import (
        Board,
        Boards,
        BoardsLease,
        Client,
        Lease,
        Watch,
    )
    from boruta_client.config import (
        ClientConfig,
        Context,
        load_config,
    )
    from boruta_client.errors import (
        AlreadyExists,
        BorutaError,
        Busy,
        CommandTimeout,
        DeadlineExceeded,
        FailedPrecondition,
        HostKeyMismatch,
        IdempotencyKeyReused,
        InternalError,
        InvalidArgument,
        NoSuchWorker,
        NotFound,
        PermissionDenied,
        ProlongLimitReached,
        RequestEnded,
        RequestNotFound,
        ResourceExhausted,
        ScheduleTimeout,
        SSHError,
        Unauthenticated,
        Unavailable,
        WorkerNotFound,
        WrongRequestState,
        WrongWorkerState,
    )
    from boruta_client.lease import (
        LEASE_JOB_TIMEOUT,
    )
    from boruta_client.runner import (
        JobResult,
        JobSpec,
        JobStatus,
        Phase,
        Transfer,
        load_job,
        parse_job,
        run_job,
    )
    from boruta_client.ssh import (
        BoardSSH,
        CommandResult,
        PortForward,
    )
    from boruta_client.types import (
        Access,
        Acquired,
        AcquiredBoard,
        AllocatedBoard,
        Allocation,
        AuditEvent,
        Caller,
        Colocation,
        FailureKind,
        HistoryEntry,
        HostStatus,
        IssuedToken,
        Job,
        PendingBoard,
        PendingCode,
        PendingReason,
        Placement,
        Profile,
        Request,
        RequestSort,
        RequestState,
        Stack,
        Together,
        Token,
        Usage,
        UsageBy,
        UsageTotals,
        Worker,
        WorkerChange,
        WorkerFailure,
        WorkerSort,
        WorkerState,
    )

__version__ = "0.1.0"

# Where each public name is defined.
_NAMES_BY_MODULE = {
    "aio": (
        "AsyncBoard",
        "AsyncBoards",
        "AsyncBoardsLease",
        "AsyncBoardSSH",
        "AsyncClient",
        "AsyncLease",
        "AsyncWatch",
    ),
    "client": (
        "Board",
        "Boards",
        "BoardsLease",
        "Client",
        "Lease",
        "Watch",
    ),
    "config": (
        "ClientConfig",
        "Context",
        "load_config",
    ),
    "errors": (
        "AlreadyExists",
        "BorutaError",
        "Busy",
        "CommandTimeout",
        "DeadlineExceeded",
        "FailedPrecondition",
        "HostKeyMismatch",
        "IdempotencyKeyReused",
        "InternalError",
        "InvalidArgument",
        "NoSuchWorker",
        "NotFound",
        "PermissionDenied",
        "ProlongLimitReached",
        "RequestEnded",
        "RequestNotFound",
        "ResourceExhausted",
        "ScheduleTimeout",
        "SSHError",
        "Unauthenticated",
        "Unavailable",
        "WorkerNotFound",
        "WrongRequestState",
        "WrongWorkerState",
    ),
    "lease": ("LEASE_JOB_TIMEOUT",),
    "runner": (
        "JobResult",
        "JobSpec",
        "JobStatus",
        "Phase",
        "Transfer",
        "load_job",
        "parse_job",
        "run_job",
    ),
    "ssh": (
        "BoardSSH",
        "CommandResult",
        "PortForward",
    ),
    "types": (
        "Access",
        "Acquired",
        "AcquiredBoard",
        "AllocatedBoard",
        "Allocation",
        "AuditEvent",
        "Caller",
        "Colocation",
        "FailureKind",
        "HistoryEntry",
        "HostStatus",
        "IssuedToken",
        "Job",
        "PendingBoard",
        "PendingCode",
        "PendingReason",
        "Placement",
        "Profile",
        "Request",
        "RequestSort",
        "RequestState",
        "Stack",
        "Together",
        "Token",
        "Usage",
        "UsageBy",
        "UsageTotals",
        "Worker",
        "WorkerChange",
        "WorkerFailure",
        "WorkerSort",
        "WorkerState",
    ),
}
_MODULE_OF = {name: module for module, names in _NAMES_BY_MODULE.items() for name in names}


# Hidden from type checkers, which would otherwise take any misspelt name for Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """A public name, imported from its module on first use and kept in the package."""
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


__all__ = [
    "LEASE_JOB_TIMEOUT",
    "Access",
    "Acquired",
    "AcquiredBoard",
    "AllocatedBoard",
    "Allocation",
    "AlreadyExists",
    "AsyncBoard",
    "AsyncBoardSSH",
    "AsyncBoards",
    "AsyncBoardsLease",
    "AsyncClient",
    "AsyncLease",
    "AsyncWatch",
    "AuditEvent",
    "Board",
    "BoardSSH",
    "Boards",
    "BoardsLease",
    "BorutaError",
    "Busy",
    "Caller",
    "Client",
    "ClientConfig",
    "Colocation",
    "CommandResult",
    "CommandTimeout",
    "Context",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FailureKind",
    "HistoryEntry",
    "HostKeyMismatch",
    "HostStatus",
    "IdempotencyKeyReused",
    "InternalError",
    "InvalidArgument",
    "IssuedToken",
    "Job",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "Lease",
    "NoSuchWorker",
    "NotFound",
    "PendingBoard",
    "PendingCode",
    "PendingReason",
    "PermissionDenied",
    "Phase",
    "Placement",
    "PortForward",
    "Profile",
    "ProlongLimitReached",
    "Request",
    "RequestEnded",
    "RequestNotFound",
    "RequestSort",
    "RequestState",
    "ResourceExhausted",
    "SSHError",
    "ScheduleTimeout",
    "Stack",
    "Together",
    "Token",
    "Transfer",
    "Unauthenticated",
    "Unavailable",
    "Usage",
    "UsageBy",
    "UsageTotals",
    "Watch",
    "Worker",
    "WorkerChange",
    "WorkerFailure",
    "WorkerNotFound",
    "WorkerSort",
    "WorkerState",
    "WrongRequestState",
    "WrongWorkerState",
    "load_config",
    "load_job",
    "parse_job",
    "run_job",
]
