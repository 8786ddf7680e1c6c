"""Call wrapping: establishes who is calling and turns scheduler errors into statuses.

Until TLS lands, identity comes from call metadata (x-boruta-user, x-boruta-groups,
x-boruta-role); the servicers read it with current_identity().
"""

from __future__ import annotations

import contextvars
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
    values = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    user = values.get(USER_KEY, "").strip() or ANONYMOUS.user
    groups = frozenset(g.strip() for g in values.get(GROUPS_KEY, "").split(",") if g.strip())
    try:
        role = Role(values.get(ROLE_KEY, Role.USER.value))
    except ValueError:
        role = Role.USER
    return Identity(user, groups, role)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: BorutaError) -> None:
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
