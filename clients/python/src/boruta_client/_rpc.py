"""gRPC plumbing shared by Client and AsyncClient: identity metadata and error mapping."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

import grpc
from boruta import pki
from boruta.reasons import ERROR_REASON_KEY

from boruta_client import errors

_BY_CODE: dict[grpc.StatusCode, type[errors.BorutaError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.INTERNAL: errors.InternalError,
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the client calls as. Until the scheduler authenticates channels (TLS or tokens),
    it is sent as call metadata and trusted as given."""

    user: str
    groups: tuple[str, ...] = ()
    admin: bool = False

    @classmethod
    def of_certificate(cls, path: str) -> Identity:
        """Who the scheduler will take us for, read from our certificate."""
        try:
            found = pki.identity_of(pki.load_pem_cert(path))
        except pki.PkiError as exc:
            raise errors.InvalidArgument(f"{path}: {exc}") from None
        return cls(found.name, tuple(sorted(found.groups)), found.role is pki.Role.ADMIN)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs = [("x-boruta-user", self.user), ("x-boruta-groups", ",".join(self.groups))]
        if self.admin:
            pairs.append(("x-boruta-role", "admin"))
        return tuple(pairs)


def login_name() -> str:
    return getpass.getuser()


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    # Sync errors are grpc.Call, async ones AioRpcError: both have code() and details().
    code = getattr(error, "code", None)
    return code() if callable(code) else grpc.StatusCode.UNKNOWN


def went_away(error: grpc.RpcError) -> bool:
    """Whether the scheduler was not there to answer: UNAVAILABLE (unreachable, a standby,
    a restart), or CANCELLED, which a client gets not for a call it cancelled itself
    (asyncio cancels those) but for one a gRPC server took in and then stopped before
    handling it (a standby handing its ports to the new leader stops its servers)."""
    return code_of(error) in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def reason_of(error: grpc.RpcError) -> str:
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == ERROR_REASON_KEY:
            return str(value)
    return ""


def translate(error: grpc.RpcError, target: str) -> errors.BorutaError:
    """The client's exception for a failed call, with the scheduler's message."""
    code = code_of(error)
    get_details = getattr(error, "details", None)
    details = (get_details() if callable(get_details) else None) or code.name
    cls = errors.for_reason(reason_of(error)) or _BY_CODE.get(code, errors.BorutaError)
    if code is grpc.StatusCode.UNAVAILABLE and not reason_of(error):
        details = f"cannot reach the scheduler at {target}: {details}"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"the scheduler at {target} did not answer in time: {details}"
    return cls(details)
