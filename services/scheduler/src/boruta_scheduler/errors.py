"""The scheduler's one exception hierarchy; ``rpc.status`` maps it to gRPC codes in one table."""

from __future__ import annotations

from typing import ClassVar


class BorutaError(Exception):
    """Base of every error the scheduler reports to a caller; the message says what to fix."""

    # Stable name sent to clients beside the status code (trailing metadata).
    reason: ClassVar[str] = "UNKNOWN"


class InvalidArgument(BorutaError):
    """A field of the call is malformed or out of range; nothing was changed."""

    reason = "INVALID_ARGUMENT"


class NotFound(BorutaError):
    """The named request or worker does not exist."""

    reason = "NOT_FOUND"


class RequestNotFound(NotFound):
    """No request has this id."""

    reason = "REQUEST_NOT_FOUND"

    def __init__(self, request_id: int, why: str = "") -> None:
        super().__init__(f"request {request_id} does not exist" + (f" ({why})" if why else ""))
        self.request_id = request_id


class WorkerNotFound(NotFound):
    """No registered worker has this UUID."""

    reason = "WORKER_NOT_FOUND"

    def __init__(self, worker_uuid: str) -> None:
        super().__init__(f"worker {worker_uuid!r} is not registered")
        self.worker_uuid = worker_uuid


class FailedPrecondition(BorutaError):
    """The call is well formed but the farm is not in a state that allows it."""

    reason = "FAILED_PRECONDITION"


class NoCapableWorker(FailedPrecondition):
    """No registered worker could ever satisfy the request."""

    reason = "NO_CAPABLE_WORKER"


class WrongRequestState(FailedPrecondition):
    """The request is not in a state that allows the call."""

    reason = "WRONG_REQUEST_STATE"


class WrongWorkerState(FailedPrecondition):
    """The worker is not in a state that allows the call."""

    reason = "WRONG_WORKER_STATE"


class ProlongLimitReached(FailedPrecondition):
    """The job cannot be prolonged any more."""

    reason = "PROLONG_LIMIT_REACHED"


class PermissionDenied(BorutaError):
    """The caller is known but may not do this."""

    reason = "PERMISSION_DENIED"


class Unauthenticated(BorutaError):
    """The caller did not prove who they are."""

    reason = "UNAUTHENTICATED"


class ResourceExhausted(BorutaError):
    """A limit on size or count was hit; retry later or with less."""

    reason = "RESOURCE_EXHAUSTED"


class Busy(ResourceExhausted):
    """No worker for the request is free now and the caller asked not to wait."""

    reason = "BUSY"


class DeadlineExceeded(BorutaError):
    """The call's deadline passed before the awaited change happened."""

    reason = "DEADLINE_EXCEEDED"


class Unavailable(BorutaError):
    """The scheduler cannot serve the call right now; retry with backoff."""

    reason = "UNAVAILABLE"
