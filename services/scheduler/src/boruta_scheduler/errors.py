"""The scheduler's one exception hierarchy; ``rpc.status`` maps it to gRPC codes in one table."""

from __future__ import annotations

import logging
import secrets
from typing import Any, ClassVar

from boruta.reasons import Reason
from boruta.v1.errors_pb2 import ErrorReason

# Longest piece of a caller's input quoted in a message: a 500 KB name must not come back.
SHOWN_CHARS = 64


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """text quoted for an error message, cut to limit characters with an ellipsis."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


class BorutaError(Exception):
    """Base of every error the scheduler reports to a caller; the message says what to fix."""

    # Sent to clients beside the status code (boruta.reasons); every class that can be
    # raised names its ErrorReason, and tests/test_error_reasons.py checks the client agrees.
    reason: ClassVar[Reason] = ErrorReason.ERROR_REASON_UNSPECIFIED


class InvalidArgument(BorutaError):
    """A field of the call is malformed or out of range; nothing was changed."""

    reason = ErrorReason.ERROR_REASON_INVALID_ARGUMENT


class NotFound(BorutaError):
    """The named request or worker does not exist."""

    reason = ErrorReason.ERROR_REASON_NOT_FOUND


class RequestNotFound(NotFound):
    """No request has this id."""

    reason = ErrorReason.ERROR_REASON_REQUEST_NOT_FOUND

    def __init__(self, request_id: int, why: str = "") -> None:
        super().__init__(f"request {request_id} does not exist" + (f" ({why})" if why else ""))
        self.request_id = request_id


class WorkerNotFound(NotFound):
    """No registered worker has this UUID."""

    reason = ErrorReason.ERROR_REASON_WORKER_NOT_FOUND

    def __init__(self, worker_uuid: str) -> None:
        super().__init__(f"worker {shown(worker_uuid)} is not registered")
        self.worker_uuid = worker_uuid


class AlreadyExists(BorutaError):
    """What the call would make exists already (a stack of that name)."""

    reason = ErrorReason.ERROR_REASON_ALREADY_EXISTS


class FailedPrecondition(BorutaError):
    """The call is well formed but the farm is not in a state that allows it."""

    reason = ErrorReason.ERROR_REASON_FAILED_PRECONDITION


class NoCapableWorker(FailedPrecondition):
    """No registered worker could ever satisfy the request."""

    reason = ErrorReason.ERROR_REASON_NO_CAPABLE_WORKER


class WrongRequestState(FailedPrecondition):
    """The request is not in a state that allows the call."""

    reason = ErrorReason.ERROR_REASON_WRONG_REQUEST_STATE


class WrongWorkerState(FailedPrecondition):
    """The worker is not in a state that allows the call."""

    reason = ErrorReason.ERROR_REASON_WRONG_WORKER_STATE


class ProlongLimitReached(FailedPrecondition):
    """The job cannot be prolonged any more."""

    reason = ErrorReason.ERROR_REASON_PROLONG_LIMIT_REACHED


class IdempotencyKeyReused(FailedPrecondition):
    """An idempotency key (NewRequest's, IssueToken's) was used before by the same caller with
    other arguments."""

    reason = ErrorReason.ERROR_REASON_IDEMPOTENCY_KEY_REUSED


class PermissionDenied(BorutaError):
    """The caller is known but may not do this."""

    reason = ErrorReason.ERROR_REASON_PERMISSION_DENIED


class Unauthenticated(BorutaError):
    """The caller did not prove who they are."""

    reason = ErrorReason.ERROR_REASON_UNAUTHENTICATED


class ResourceExhausted(BorutaError):
    """A limit on size or count was hit; retry later or with less."""

    reason = ErrorReason.ERROR_REASON_RESOURCE_EXHAUSTED


class Busy(ResourceExhausted):
    """No worker for the request is free now and the caller asked not to wait."""

    reason = ErrorReason.ERROR_REASON_BUSY


class DeadlineExceeded(BorutaError):
    """The call's deadline passed before the awaited change happened."""

    reason = ErrorReason.ERROR_REASON_DEADLINE_EXCEEDED


class Unavailable(BorutaError):
    """The scheduler cannot serve the call right now; retry with backoff."""

    reason = ErrorReason.ERROR_REASON_UNAVAILABLE


class StoreUnavailable(Unavailable):
    """The store refuses writes (disk full, read-only, failing); nothing of the call was kept.
    The scheduler keeps answering reads and retries by itself."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        # In a few words, for callers (e.g. "disk full"); the message also names the file.
        self.cause = cause or message


class NotLeader(StoreUnavailable):
    """Another scheduler took over the shared store (a higher epoch): this one may write
    nothing more and steps down."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "not the leader")


class InternalError(BorutaError):
    """Something failed that no caller's input explains: a bug. The caller gets only the
    error id; the log line with that id holds the traceback."""

    reason = ErrorReason.ERROR_REASON_INTERNAL

    def __init__(self, error_id: str) -> None:
        super().__init__(f"internal error (id {error_id}); the scheduler's log has the details")
        self.error_id = error_id

    @classmethod
    def logged(
        cls, logger: logging.Logger, what: str, error: BaseException, **fields: Any
    ) -> InternalError:
        """Log error with its traceback under a fresh id; the InternalError to answer with."""
        error_id = secrets.token_hex(4)
        logger.error(what, exc_info=error, extra={"error_id": error_id, **fields})
        return cls(error_id)
