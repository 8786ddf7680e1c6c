"""Call wrapping: establishes who is calling and turns scheduler errors into statuses.

Until TLS lands, identity comes from call metadata (x-boruta-user, x-boruta-groups,
x-boruta-role); the servicers read it with current_identity().
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from boruta_scheduler.errors import BorutaError
from boruta_scheduler.rpc.status import status_of
from boruta_scheduler.types import Identity, Role

log = logging.getLogger(__name__)

USER_KEY = "x-boruta-user"
GROUPS_KEY = "x-boruta-groups"
ROLE_KEY = "x-boruta-role"
ANONYMOUS = Identity("anonymous")

_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("identity", default=ANONYMOUS)


def current_identity() -> Identity:
    """Identity of the caller of the RPC being served."""
    return _identity.get()


def identity_from_metadata(metadata: Any) -> Identity:
    user = groups = role = ""
    for key, value in metadata or ():
        if key == USER_KEY:
            user = value
        elif key == GROUPS_KEY:
            groups = value
        elif key == ROLE_KEY:
            role = value
    return _identity_of(user, groups, role)


@functools.lru_cache(maxsize=4096)
def _identity_of(user: str, groups: str, role: str) -> Identity:
    """Identities repeat call after call; parse each combination once."""
    try:
        parsed_role = Role(role) if role else Role.USER
    except ValueError:
        parsed_role = Role.USER
    names = frozenset(g.strip() for g in groups.split(",") if g.strip())
    return Identity(user.strip() or ANONYMOUS.user, names, parsed_role)


ERROR_REASON_KEY = "boruta-error-reason"


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: BorutaError) -> None:
    context.set_trailing_metadata(((ERROR_REASON_KEY, error.reason),))
    await context.abort(status_of(error), str(error))


def _unary(
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def serve(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # Each RPC runs in its own task and context, so the value needs no reset.
        _identity.set(identity_from_metadata(context.invocation_metadata()))
        try:
            return await behavior(request, context)
        except BorutaError as error:
            await _abort(context, error)

    return serve


def _stream(
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def serve(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        _identity.set(identity_from_metadata(context.invocation_metadata()))
        try:
            async for item in behavior(request, context):
                yield item
        except BorutaError as error:
            await _abort(context, error)

    return serve


def wrap_servicer(servicer: Any, service: ServiceDescriptor) -> Any:
    """Wrap each RPC method of a servicer once, so every call has its caller's identity and
    BorutaErrors become gRPC statuses (per-call interceptors would cost more per RPC)."""
    for method in service.methods:
        behavior = getattr(servicer, method.name)
        wrapped = _stream(behavior) if method.server_streaming else _unary(behavior)
        setattr(servicer, method.name, wrapped)
    return servicer
