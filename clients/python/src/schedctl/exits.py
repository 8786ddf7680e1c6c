"""schedctl's exit codes: one per kind of failure, so that scripts can react (documented in
docs/user-guide.md). `run` and `ssh` exit with the remote command's status once it ran."""

from __future__ import annotations

from boruta_client import (
    AlreadyExists,
    BorutaError,
    Busy,
    FailedPrecondition,
    InvalidArgument,
    NoSuchWorker,
    NotFound,
    PermissionDenied,
    RequestEnded,
    ScheduleTimeout,
    SSHError,
    Unauthenticated,
    Unavailable,
)

OK = 0
FAILURE = 1
USAGE = 2
INVALID = 64
NO_SUCH_BOARD = 65
NOT_FOUND = 66
UNAVAILABLE = 69
WRONG_STATE = 73
NOT_SCHEDULED = 74
BUSY = 75
DENIED = 77
SSH_FAILED = 255

# Most specific first: the first class an error is an instance of decides.
EXIT_CODES: list[tuple[type[BorutaError], int]] = [
    (NoSuchWorker, NO_SUCH_BOARD),
    (Busy, BUSY),
    (RequestEnded, NOT_SCHEDULED),
    (ScheduleTimeout, NOT_SCHEDULED),
    (InvalidArgument, INVALID),
    (NotFound, NOT_FOUND),
    (FailedPrecondition, WRONG_STATE),
    (AlreadyExists, WRONG_STATE),
    (PermissionDenied, DENIED),
    (Unauthenticated, DENIED),
    (Unavailable, UNAVAILABLE),
    (SSHError, SSH_FAILED),
]


def exit_code_of(error: BorutaError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return FAILURE
