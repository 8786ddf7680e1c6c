"""Call wrapping: establishes who is calling and turns scheduler errors into statuses.

Who is calling comes from the channel: the client certificate on a TLS port
(CertificateIdentities), or, on a plaintext loopback port for demos and tests, call
metadata taken as given (MetadataIdentities). Servicers read it with current_identity().
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc
from boruta import pki
from boruta.metrics import LoopHistogram, LoopHistograms
from boruta.reasons import ERROR_REASON_KEY, wire_name
from boruta.tls import PeerCertificates
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from boruta_scheduler.app.authz import Refusal, Rule, admit, rule_of
from boruta_scheduler.app.refusals import Suppressed, ThrottledRefusals
from boruta_scheduler.app.tokens import TokenAuthority
from boruta_scheduler.errors import (
    BorutaError,
    InternalError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from boruta_scheduler.rpc.status import status_of
from boruta_scheduler.types import Identity, Role

log = logging.getLogger(__name__)

USER_KEY = "x-boruta-user"
GROUPS_KEY = "x-boruta-groups"
ROLE_KEY = "x-boruta-role"
ANONYMOUS = Identity("anonymous")
# Messages travel in a trailer, which clients refuse past 16 KiB; ours stay far below.
MAX_MESSAGE_CHARS = 1000

Context = grpc.aio.ServicerContext[Any, Any]
_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("identity", default=ANONYMOUS)


class IdentitySource(Protocol):
    """Tells who is calling from the call's context; raises BorutaError to refuse."""

    def __call__(self, context: Context) -> Identity: ...


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


def metadata_identities(context: Context) -> Identity:
    """Plaintext loopback only: the caller says who it is."""
    return identity_from_metadata(context.invocation_metadata())


_ROLE_OF_CERT = {pki.Role.USER: Role.USER, pki.Role.ADMIN: Role.ADMIN, pki.Role.DRYAD: Role.DRYAD}


class CertificateIdentities:
    """TLS: the caller is who its client certificate from the farm's CA says."""

    def __init__(self, ca_pem: bytes) -> None:
        self._peers = PeerCertificates(ca_pem)

    def __call__(self, context: Context) -> Identity:
        try:
            cert = self._peers.identity(context)
        except pki.PkiError as error:
            raise Unauthenticated(str(error)) from None
        return self.of_certificate(cert)

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def of_certificate(cert: pki.CertIdentity) -> Identity:
        """The identity a verified farm certificate names (the dashboard's HTTPS too)."""
        role = _ROLE_OF_CERT.get(cert.role)
        if role is None:
            raise PermissionDenied(f"a {cert.role.value} certificate cannot call the scheduler")
        workers = cert.workers if role is Role.DRYAD else frozenset()
        hosts = frozenset(cert.hosts) if role is Role.DRYAD else frozenset()
        return Identity(cert.name, cert.groups, role, workers, hosts=hosts)


class CertificateOrToken:
    """Both ports of a TLS scheduler at once: the certificate port requires a client
    certificate; the token port requests none (gRPC Python cannot ask for an optional
    one), so there a caller shows "authorization: Bearer <token>" instead."""

    def __init__(self, certificates: CertificateIdentities, tokens: TokenAuthority) -> None:
        self._certificates = certificates
        self._tokens = tokens

    def __call__(self, context: Context) -> Identity:
        if context.auth_context().get("x509_pem_cert"):
            return self._certificates(context)
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() != "bearer" or not token:
                    break
                return self._tokens.identify(token.strip())
        raise Unauthenticated(
            "this port needs a bearer token (authorization: Bearer <token>); ask an admin "
            "for one with schedctl tokens issue"
        )


Refusals = Callable[[Identity, str, str], None]
# Every caller that proved no identity counts against this one allowance.
UNAUTHENTICATED = ("(unauthenticated)", "")


class RefusalLog:
    """Logs refused calls, per caller up to per_minute lines at once and then per_minute a
    minute; the rest are counted, and one line per caller and interval says how many were
    left out. Anyone who can reach a port could otherwise write a line per call."""

    def __init__(self, per_minute: int = 60) -> None:
        self._refusals = ThrottledRefusals(per_minute, time.monotonic, self._write)

    def refused(self, who: Identity, call: str, why: str, peer: str, *, proven: bool) -> None:
        caller = (who.user, who.role.value) if proven else UNAUTHENTICATED
        if self._refusals.admit(caller, call):
            log.warning(
                "call refused",
                extra={
                    "call": call,
                    "caller": who.user,
                    "role": who.role.value,
                    "peer": peer,
                    "why": why,
                },
            )

    def close(self) -> None:
        """Log every pending count and stop the timer."""
        self._refusals.close()

    @staticmethod
    def _write(summaries: list[Suppressed]) -> None:
        for summary in summaries:
            user, role = summary.caller
            log.warning(
                "refused calls not logged",
                extra={
                    "caller": user,
                    "role": role,
                    "count": summary.count,
                    "seconds": round(summary.until - summary.since),
                    "calls": dict(summary.calls.most_common(20)),
                },
            )


async def _abort(
    context: Context,
    error: BorutaError,
    call: str,
    refused: Refusals | None,
    refusal_log: RefusalLog,
) -> None:
    if isinstance(error, PermissionDenied | Unauthenticated):
        who = _identity.get()
        if refused is not None:
            refused(who, call, str(error))
        refusal_log.refused(
            who, call, str(error), context.peer(), proven=not isinstance(error, Unauthenticated)
        )
    message = str(error)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 20] + "… (message cut)"
    context.set_trailing_metadata(((ERROR_REASON_KEY, wire_name(error.reason)),))
    await context.abort(status_of(error), message)


def _unexpected(error: Exception, context: Context, call: str) -> BorutaError:
    """What to answer for an exception that is no BorutaError: the input did not explain
    it, so the caller gets INTERNAL and an id, and the log the traceback under that id."""
    return InternalError.logged(
        log,
        "internal error",
        error,
        call=call,
        caller=_identity.get().user,
        peer=context.peer(),
    )


def _cancelled(call: str) -> None:
    """The client cancelled the stream or went away (or the server is stopping): a
    normal end of a watch, not a failure."""
    log.info("stream cancelled", extra={"call": call, "caller": _identity.get().user})


class MethodTimings:
    """One method's latency histograms by status code, for the calls metric; the child of
    each code is looked up once, so a call costs a dict lookup and an observe."""

    __slots__ = ("_children", "_family", "_method", "_service")

    def __init__(self, family: LoopHistograms, service: str, method: str) -> None:
        self._family = family
        self._service = service
        self._method = method
        self._children: dict[str, LoopHistogram] = {}

    def observe(self, code: str, seconds: float) -> None:
        child = self._children.get(code)
        if child is None:
            child = self._children[code] = self._family.child(self._service, self._method, code)
        child.observe(seconds)


def _aborted_code(context: Context) -> str:
    """The code of a call something else already aborted."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _check_parsed(request: Any) -> None:
    if isinstance(request, _Malformed):
        raise InvalidArgument(f"the request is not a valid {request.type_name}: {request.error}")


def _unary(
    behavior: Callable[[Any, Context], Awaitable[Any]],
    identify: IdentitySource,
    call: str,
    refused: Refusals | None,
    refusal_log: RefusalLog,
    timings: MethodTimings | None = None,
) -> Callable[[Any, Context], Awaitable[Any]]:
    async def serve(request: Any, context: Context) -> Any:
        began = time.perf_counter()
        code = "OK"
        # Each RPC runs in its own task and context, so the value needs no reset.
        _identity.set(ANONYMOUS)
        try:
            _identity.set(identify(context))
            _check_parsed(request)
            return await behavior(request, context)
        except BorutaError as error:
            code = status_of(error).name
            await _abort(context, error, call, refused, refusal_log)
        except grpc.aio.AbortError:
            code = _aborted_code(context)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as error:
            code = "INTERNAL"
            await _abort(context, _unexpected(error, context, call), call, refused, refusal_log)
        finally:
            if timings is not None:
                timings.observe(code, time.perf_counter() - began)

    return serve


def _stream(
    behavior: Callable[[Any, Context], AsyncIterator[Any]],
    identify: IdentitySource,
    call: str,
    refused: Refusals | None,
    refusal_log: RefusalLog,
    timings: MethodTimings | None = None,
) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
        began = time.perf_counter()
        code = "OK"
        _identity.set(ANONYMOUS)
        try:
            _identity.set(identify(context))
            _check_parsed(request)
            async for item in behavior(request, context):
                yield item
        except BorutaError as error:
            code = status_of(error).name
            await _abort(context, error, call, refused, refusal_log)
        except (asyncio.CancelledError, GeneratorExit):
            # GeneratorExit: gRPC closed the stream while a message of it was on its way.
            code = "CANCELLED"
            _cancelled(call)
            raise
        except grpc.aio.AbortError:
            code = _aborted_code(context)
            raise
        except Exception as error:
            if context.cancelled() or context.done():
                code = "CANCELLED"
                _cancelled(call)  # e.g. sending to a client that has gone
                return
            code = "INTERNAL"
            await _abort(context, _unexpected(error, context, call), call, refused, refusal_log)
        finally:
            if timings is not None:
                timings.observe(code, time.perf_counter() - began)

    return serve


def gate(identify: IdentitySource, rule: Rule) -> IdentitySource:
    """An identity source that also refuses callers whose role the call's rule does not
    allow (app/authz.py): dryads use only Superviser, admins alone manage the farm."""

    def identify_and_check(context: Context) -> Identity:
        who = identify(context)
        _identity.set(who)
        admit(who, rule)
        return who

    return identify_and_check


class _Malformed:
    """Stands in for a request whose bytes are no valid message, so that the caller gets
    INVALID_ARGUMENT from our wrapper rather than gRPC's own opaque error."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error


def _lenient(cls: type[Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return parse


def add_service(
    server: grpc.aio.Server,
    servicer: Any,
    service: ServiceDescriptor,
    identify: IdentitySource = metadata_identities,
    refused: Refusals | None = None,
    refusal_log: RefusalLog | None = None,
    timings: LoopHistograms | None = None,
) -> None:
    """Serve a servicer: every call gets its caller's identity (refused if the call's rule
    in app/authz.py does not allow its role; a method without a rule is not served),
    malformed requests are INVALID_ARGUMENT, BorutaErrors become statuses and any other
    exception INTERNAL with an error id. Handlers are wrapped once, not per call as
    interceptors would be. Refusals are logged through refusal_log (by default one of this
    service's own), and go to refused where the rule says they are recorded. With timings,
    every call is counted and timed by method and status code."""
    refusal_log = refusal_log or RefusalLog()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        rule = rule_of(service.full_name, method.name)
        checked = gate(identify, rule)
        recorded = refused if rule.refusal is Refusal.RECORDED else None
        behavior = getattr(servicer, method.name)
        parse = _lenient(message_factory.GetMessageClass(method.input_type))
        serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        timed = None if timings is None else MethodTimings(timings, service.full_name, method.name)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream(behavior, checked, method.full_name, recorded, refusal_log, timed),
                request_deserializer=parse,
                response_serializer=serialize,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(behavior, checked, method.full_name, recorded, refusal_log, timed),
                request_deserializer=parse,
                response_serializer=serialize,
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
