"""The client's one exception hierarchy; every error carries the scheduler's message."""

from __future__ import annotations

from boruta.reasons import Reason, from_wire
from boruta.v1.errors_pb2 import ErrorReason


class BorutaError(Exception):
    """Base of every error the client raises; ``str(error)`` says what went wrong."""


class InvalidArgument(BorutaError):
    """A value in the call is malformed or out of range; nothing was changed."""


class NotFound(BorutaError):
    """The named request or worker does not exist."""


class RequestNotFound(NotFound):
    """No request has this id."""


class WorkerNotFound(NotFound):
    """No registered worker has this UUID."""


class AlreadyExists(BorutaError):
    """What the call would make exists already (ALREADY_EXISTS): a stack of that name."""


class FailedPrecondition(BorutaError):
    """The call is well formed but the farm is not in a state that allows it."""


class NoSuchWorker(FailedPrecondition):
    """No registered worker could ever satisfy the request: check the caps."""


class WrongRequestState(FailedPrecondition):
    """The request's state does not allow the call (e.g. it has already ended)."""


class WrongWorkerState(FailedPrecondition):
    """The worker's state does not allow the call."""


class ProlongLimitReached(FailedPrecondition):
    """The job cannot be prolonged any more."""


class IdempotencyKeyReused(FailedPrecondition):
    """An idempotency key (new_request's, issue_token's) was used before, by you, with
    other arguments."""


class ResourceExhausted(BorutaError):
    """A limit on size or count was hit."""


class Busy(ResourceExhausted):
    """No matching worker is free now and the caller asked not to wait."""


class PermissionDenied(BorutaError):
    """The caller is known but may not do this."""


class Unauthenticated(BorutaError):
    """The caller did not prove who they are."""


class Unavailable(BorutaError):
    """The scheduler cannot be reached or is restarting; retry later."""


class DeadlineExceeded(BorutaError):
    """The scheduler did not answer within the call's time limit."""


class ScheduleTimeout(BorutaError):
    """The request was still waiting when the caller's time to wait ran out."""


class RequestEnded(WrongRequestState):
    """The request reached a terminal state (e.g. TIMEOUT, INVALID, FAILED) before it ran;
    ``state`` names it."""

    def __init__(self, message: str, state: str = "") -> None:
        super().__init__(message)
        self.state = state


class InternalError(BorutaError):
    """A bug in the scheduler; the message has an id that finds the traceback in its log."""


class CommandTimeout(BorutaError):
    """A command on the board did not finish in the time given; it was cut off."""


class SSHError(BorutaError):
    """Logging in to the board, or a transfer to or from it, failed."""


class HostKeyMismatch(SSHError):
    """The SSH server reached through the job's tunnel showed a host key the board's dryad
    did not report: it is not the board (or the board's host keys changed). Not logged in."""


# The exception for each ErrorReason (boruta/v1/errors.proto) a scheduler sends; a test
# checks that it names every reason and that the scheduler's classes agree.
BY_REASON: dict[Reason, type[BorutaError]] = {
    ErrorReason.ERROR_REASON_INVALID_ARGUMENT: InvalidArgument,
    ErrorReason.ERROR_REASON_NOT_FOUND: NotFound,
    ErrorReason.ERROR_REASON_REQUEST_NOT_FOUND: RequestNotFound,
    ErrorReason.ERROR_REASON_WORKER_NOT_FOUND: WorkerNotFound,
    ErrorReason.ERROR_REASON_FAILED_PRECONDITION: FailedPrecondition,
    ErrorReason.ERROR_REASON_NO_CAPABLE_WORKER: NoSuchWorker,
    ErrorReason.ERROR_REASON_WRONG_REQUEST_STATE: WrongRequestState,
    ErrorReason.ERROR_REASON_WRONG_WORKER_STATE: WrongWorkerState,
    ErrorReason.ERROR_REASON_PROLONG_LIMIT_REACHED: ProlongLimitReached,
    ErrorReason.ERROR_REASON_PERMISSION_DENIED: PermissionDenied,
    ErrorReason.ERROR_REASON_UNAUTHENTICATED: Unauthenticated,
    ErrorReason.ERROR_REASON_RESOURCE_EXHAUSTED: ResourceExhausted,
    ErrorReason.ERROR_REASON_BUSY: Busy,
    ErrorReason.ERROR_REASON_DEADLINE_EXCEEDED: DeadlineExceeded,
    ErrorReason.ERROR_REASON_UNAVAILABLE: Unavailable,
    ErrorReason.ERROR_REASON_INTERNAL: InternalError,
    ErrorReason.ERROR_REASON_IDEMPOTENCY_KEY_REUSED: IdempotencyKeyReused,
    ErrorReason.ERROR_REASON_ALREADY_EXISTS: AlreadyExists,
}

# Raised by the client itself, never named by a scheduler's reason.
CLIENT_SIDE: frozenset[type[BorutaError]] = frozenset(
    {ScheduleTimeout, RequestEnded, CommandTimeout, SSHError, HostKeyMismatch}
)


def for_reason(wire: str) -> type[BorutaError] | None:
    """The exception for the text of a boruta-error-reason trailer; None if it names no
    reason this client knows (then the status code decides)."""
    return BY_REASON.get(from_wire(wire))
