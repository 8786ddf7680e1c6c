"""The one table from scheduler errors to gRPC status codes."""

from __future__ import annotations

import grpc

from boruta_scheduler import errors

STATUS_OF_ERROR: dict[type[errors.BorutaError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.InternalError: grpc.StatusCode.INTERNAL,
}


def status_of(error: errors.BorutaError) -> grpc.StatusCode:
    """The code for an error: that of its nearest class in the table."""
    for cls in type(error).__mro__:
        code = STATUS_OF_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN
