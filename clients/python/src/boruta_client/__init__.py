"""Python client for the boruta device-farm scheduler.

from boruta_client import Client

with Client() as client:  # the farm of schedctl's config (BORUTA_CONFIG, contexts, BORUTA_*)
    with client.lease({"board": "rpi4"}) as board:
        print(board.ssh.run("uname -a").output)
"""

from boruta_client.aio import AsyncBoard, AsyncBoardSSH, AsyncClient, AsyncLease, AsyncWatch
from boruta_client.client import Board, Client, Lease, Watch
from boruta_client.config import ClientConfig, Context, load_config
from boruta_client.errors import (
    BorutaError,
    Busy,
    CommandTimeout,
    DeadlineExceeded,
    FailedPrecondition,
    HostKeyMismatch,
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
from boruta_client.lease import LEASE_JOB_TIMEOUT
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
from boruta_client.ssh import BoardSSH, CommandResult, PortForward
from boruta_client.types import (
    Access,
    Acquired,
    AuditEvent,
    HistoryEntry,
    HostStatus,
    IssuedToken,
    Job,
    Request,
    RequestSort,
    RequestState,
    Token,
    Worker,
    WorkerChange,
    WorkerSort,
    WorkerState,
)

__version__ = "0.1.0"

__all__ = [
    "LEASE_JOB_TIMEOUT",
    "Access",
    "Acquired",
    "AsyncBoard",
    "AsyncBoardSSH",
    "AsyncClient",
    "AsyncLease",
    "AsyncWatch",
    "AuditEvent",
    "Board",
    "BoardSSH",
    "BorutaError",
    "Busy",
    "Client",
    "ClientConfig",
    "CommandResult",
    "CommandTimeout",
    "Context",
    "DeadlineExceeded",
    "FailedPrecondition",
    "HistoryEntry",
    "HostKeyMismatch",
    "HostStatus",
    "InvalidArgument",
    "IssuedToken",
    "Job",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "Lease",
    "NoSuchWorker",
    "NotFound",
    "PermissionDenied",
    "Phase",
    "PortForward",
    "ProlongLimitReached",
    "Request",
    "RequestEnded",
    "RequestNotFound",
    "RequestSort",
    "RequestState",
    "ResourceExhausted",
    "SSHError",
    "ScheduleTimeout",
    "Token",
    "Transfer",
    "Unauthenticated",
    "Unavailable",
    "Watch",
    "Worker",
    "WorkerChange",
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
