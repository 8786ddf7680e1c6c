"""The HTTP port of the scheduler and the dryad: Prometheus metrics at /metrics (and, on
the scheduler, the dashboard's pages, which it adds with `extend`).

It runs on the process's own asyncio loop (aiohttp), so collectors that read state kept on
that loop need no locks: a scrape and the code that counts never run at once. With TLS
the port is HTTPS with the process's certificate, and a scrape must show a client
certificate from the farm's CA or (where the process checks them) a bearer token; without
TLS it serves only on loopback and only when anonymous scrapes are allowed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)

from boruta import pki
from boruta.address import split_host_port
from boruta.metrics import check_options
from boruta.ports import CannotListen, bind_failure
from boruta.tls import PeerCertificates, TlsFiles

log = logging.getLogger(__name__)

# Seconds between two log lines about refused scrapes.
REFUSAL_LOG_INTERVAL = 60.0
# Raises (any exception) when the token is not one the process accepts.
TokenCheck = Callable[[str], object]
# Seconds a connection may take to finish its TLS handshake, to send a whole request after
# it opened or after its last answer: anyone who reaches the port could otherwise hold
# connections (and the process's file descriptors) open for ever without authenticating,
# by sending nothing or a header a byte at a time. An answer being streamed (the
# dashboard's live events) is a request in progress and is not cut.
REQUEST_TIMEOUT = 10.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Deadlines:
    """Aborts a connection with no request in progress request_timeout seconds after it
    opened or after its last answer."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._timers: dict[Any, asyncio.TimerHandle] = {}

    def arm(self, connection: Any, *, handshaking: bool = False) -> None:
        old = self._timers.pop(connection, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[connection] = loop.call_later(
            self._timeout, self._expire, connection, handshaking
        )

    def __len__(self) -> int:
        """Connections with a deadline pending."""
        return len(self._timers)

    def _expire(self, connection: Any, handshaking: bool) -> None:
        del self._timers[connection]
        transport = connection.transport
        if transport is None:
            # Still in its TLS handshake, which has a deadline of the same length: look
            # once more. A handshake that failed never gives the handler a transport (nor
            # tells it the connection is gone), so a second look is the last.
            if not handshaking:
                self.arm(connection, handshaking=True)
        elif not transport.is_closing():
            transport.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = request.protocol
        timer = self._timers.pop(connection, None)
        if timer is not None:
            timer.cancel()
        try:
            return await handler(request)
        finally:
            transport = connection.transport
            if transport is not None and not transport.is_closing():
                self.arm(connection)


class _PeerContext:
    """What PeerCertificates reads a gRPC context for, from an HTTPS connection."""

    def __init__(self, der: bytes) -> None:
        self._pem = ssl.DER_cert_to_PEM_cert(der).encode()

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who an HTTP request proved to be: a farm certificate's identity, or what the token
    check returned for its bearer token; neither when it was let in anonymously."""

    certificate: pki.CertIdentity | None = None
    token: object = None


class MetricsServer:
    """Serves registry at /metrics on listen, and whatever extend adds; port once started."""

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str,
        tls: TlsFiles | None,
        *,
        anonymous: bool = False,
        tokens: TokenCheck | None = None,
        setting: str = "metrics_listen",
        extend: Callable[[web.Application], None] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        check_options(listen, tls, anonymous, setting)
        self.registry = registry
        self.tokens = tokens
        self._listen = listen
        self._tls = tls
        self._anonymous = anonymous
        self._setting = setting
        self._extend = extend
        self._peers = None if tls is None else PeerCertificates(tls.read()[0])
        # The *_created series of counters and histograms say only when the process started.
        disable_created_metrics()
        self._runner: web.AppRunner | None = None
        self._deadlines = _Deadlines(request_timeout)
        self._request_timeout = request_timeout
        self._listener: asyncio.AbstractServer | None = None
        self._refused = 0  # refusals since the last line logged about them
        self._next_refusal_log = 0.0
        self.port = 0

    def pending_deadlines(self) -> int:
        """Connections whose request deadline is still to come (for tests)."""
        return len(self._deadlines)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._tls.cert, self._tls.key)
        context.load_verify_locations(self._tls.ca)
        # Optional: a scraper with a bearer token shows no certificate; one that shows a
        # certificate must show one the CA signed, or the handshake fails.
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    async def start(self) -> int:
        """Bind and serve; raises CannotListen naming the setting and the reason."""
        sock = self._bind()
        app = web.Application(middlewares=[self._deadlines.middleware])
        app.router.add_get("/metrics", self._metrics)
        if self._extend is not None:
            self._extend(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        serve = runner.server
        assert serve is not None

        def connection() -> Any:
            handler = serve()
            self._deadlines.arm(handler)
            return handler

        # Served here rather than by aiohttp's SockSite, which sets no handshake deadline
        # and no deadline for a request to arrive.
        ssl_context = self._ssl_context()
        handshake = {} if ssl_context is None else {"ssl_handshake_timeout": self._request_timeout}
        self._listener = await asyncio.get_running_loop().create_server(
            connection, sock=sock, ssl=ssl_context, **handshake
        )
        self.port = sock.getsockname()[1]
        return self.port

    def _bind(self) -> socket.socket:
        """The listening socket, bound here so that port 0 tells which port it got."""
        host, port = split_host_port(self._listen, self._setting, listen=True)
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise CannotListen(
                f"cannot listen on {self._listen} ({self._setting}): {exc}"
            ) from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            reason = bind_failure(self._listen) or "the address cannot be bound"
            raise CannotListen(
                f"cannot listen on {self._listen} ({self._setting}): {reason}"
            ) from None
        return sock

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None

    def caller(
        self, request: web.Request, *, anonymous: bool, token: str = ""
    ) -> Caller | web.Response:
        """Who request comes from, or the answer that refuses it. token is a bearer token
        found elsewhere than the Authorization header (the dashboard's cookie)."""
        if anonymous:
            return Caller()
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der and self._peers is not None:
            try:
                return Caller(certificate=self._peers.identity(_PeerContext(der)))
            except pki.PkiError as error:
                return web.Response(status=403, text=f"{error}\n")
        scheme, _, header = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and header.strip():
            token = header.strip()
        if self.tokens is not None and token:
            try:
                return Caller(token=self.tokens(token))
            except Exception:  # any refusal: the token's text is never logged or echoed
                return web.Response(status=401, text="the bearer token is not valid\n")
        what = "a client certificate from the farm's CA"
        headers = {}
        if self.tokens is not None:
            what += " or a bearer token (Authorization: Bearer <token>)"
            headers["WWW-Authenticate"] = 'Bearer realm="boruta"'
        return web.Response(status=401, text=f"reading this needs {what}\n", headers=headers)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """None when the scrape may read the metrics, else the answer that refuses it."""
        found = self.caller(request, anonymous=self._anonymous)
        return found if isinstance(found, web.Response) else None

    def log_refusal(self, peer: str, status: int) -> None:
        """One line a minute at most: anyone who reaches the port could otherwise write a
        line per request. The first refusal of a quiet spell is logged at once."""
        self._refused += 1
        now = time.monotonic()
        if now < self._next_refusal_log:
            return
        log.warning(
            "HTTP request refused",
            extra={"peer": peer, "status": status, "refusals": self._refused},
        )
        self._refused = 0
        self._next_refusal_log = now + REFUSAL_LOG_INTERVAL

    async def _metrics(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            self.log_refusal(request.remote or "", refused.status)
            return refused
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
