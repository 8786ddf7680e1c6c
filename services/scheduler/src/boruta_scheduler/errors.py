"""The scheduler's one exception hierarchy; ``rpc.status`` maps it to gRPC codes in one table."""

from __future__ import annotations


class BorutaError(Exception):
    """Base of every error the scheduler reports to a caller; the message says what to fix."""


class InvalidArgument(BorutaError):
    """A field of the call is malformed or out of range; nothing was changed."""


class NotFound(BorutaError):
    """The named request or worker does not exist."""


class RequestNotFound(NotFound):
    """No request has this id."""

    def __init__(self, request_id: int) -> None:
        super().__init__(f"request {request_id} does not exist")
        self.request_id = request_id


class WorkerNotFound(NotFound):
    """No registered worker has this UUID."""

    def __init__(self, worker_uuid: str) -> None:
        super().__init__(f"worker {worker_uuid!r} is not registered")
        self.worker_uuid = worker_uuid


class FailedPrecondition(BorutaError):
    """The call is well formed but the farm is not in a state that allows it."""


class NoCapableWorker(FailedPrecondition):
    """No registered worker could ever satisfy the request."""


class WrongRequestState(FailedPrecondition):
    """The request is not in a state that allows the call."""


class WrongWorkerState(FailedPrecondition):
    """The worker is not in a state that allows the call."""


class ProlongLimitReached(FailedPrecondition):
    """The job cannot be prolonged any more."""


class PermissionDenied(BorutaError):
    """The caller is known but may not do this."""


class Unauthenticated(BorutaError):
    """The caller did not prove who they are."""


class ResourceExhausted(BorutaError):
    """A limit on size or count was hit; retry later or with less."""


class DeadlineExceeded(BorutaError):
    """The call's deadline passed before the awaited change happened."""


class Unavailable(BorutaError):
    """The scheduler cannot serve the call right now; retry with backoff."""
