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
import errno
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
# Connections held open at most, in all and from one client address; beyond, a new one is
# closed as soon as it is accepted. Each open connection holds a file descriptor, which the
# process's other ports (gRPC) need too.
MAX_CONNECTIONS = 256
MAX_CONNECTIONS_PER_ADDRESS = 64
# Pauses of the accept loop while the process has no file descriptor to spare (EMFILE):
# the connection waits in the listen backlog instead of the loop trying again at once.
ACCEPT_PAUSE_FIRST = 0.05
ACCEPT_PAUSE_MOST = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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


class _Throttle:
    """Counts events, and says when one is to be logged: the first of a quiet spell, then
    at most one every REFUSAL_LOG_INTERVAL seconds."""

    def __init__(self) -> None:
        self._count = 0  # events since the last one logged
        self._next_log = 0.0

    def count(self) -> int:
        """Count one event; the events to log now (this one included), or 0: not yet."""
        self._count += 1
        now = time.monotonic()
        if now < self._next_log:
            return 0
        counted, self._count = self._count, 0
        self._next_log = now + REFUSAL_LOG_INTERVAL
        return counted


class _Connections(Collector):
    """The connections the port holds open (each until its socket is closed, whoever closes
    it), which it admits within its limits; a collector of their metrics."""

    def __init__(self, most: int, most_per_address: int) -> None:
        self._most = most
        self._most_per_address = most_per_address
        self._open: dict[socket.socket, str] = {}
        self.refused = {"total": 0, "per_address": 0}

    def admit(self, conn: socket.socket, address: str) -> str:
        """ "" if conn may be served (and it is counted from now on), else the limit it
        would pass: "total" or "per_address"."""
        self._forget_closed()
        if len(self._open) >= self._most:
            limit = "total"
        elif sum(1 for a in self._open.values() if a == address) >= self._most_per_address:
            limit = "per_address"
        else:
            self._open[conn] = address
            return ""
        self.refused[limit] += 1
        return limit

    def __len__(self) -> int:
        self._forget_closed()
        return len(self._open)

    def _forget_closed(self) -> None:
        # A socket is closed by its transport when its connection ends (an answer, a
        # deadline, a failed handshake): no callback is needed to see it go.
        for conn in [c for c in self._open if c.fileno() == -1]:
            del self._open[conn]

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "boruta_http_connections", "Connections the HTTP port holds open.", value=len(self)
        )
        refused = CounterMetricFamily(
            "boruta_http_connections_refused",
            "Connections the HTTP port closed at once, over a limit on open connections.",
            labels=["limit"],
        )
        for limit, count in sorted(self.refused.items()):
            refused.add_metric([limit], count)
        yield refused


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
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
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
        self._connections = _Connections(max_connections, max_connections_per_address)
        self._sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._refusals = _Throttle()
        self._pauses = _Throttle()
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

        # Served here rather than by aiohttp's SockSite (or loop.create_server), which set
        # no handshake deadline, no deadline for a request to arrive and no limit on the
        # connections held open.
        self.registry.register(self._connections)
        self._sock = sock
        self._acceptor = asyncio.get_running_loop().create_task(
            self._accept(sock, connection, self._ssl_context()), name="http-accept"
        )
        self.port = sock.getsockname()[1]
        return self.port

    async def _accept(
        self, sock: socket.socket, connection: Callable[[], Any], tls: ssl.SSLContext | None
    ) -> None:
        """Accept connections for ever: each within the limits is served, the others are
        closed at once; out of file descriptors, wait (growing pauses) rather than spin."""
        loop = asyncio.get_running_loop()
        pause = ACCEPT_PAUSE_FIRST
        while True:
            try:
                conn, peer = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    if sock.fileno() == -1:
                        return
                    continue  # that one connection failed (e.g. reset while queued)
                self._log_pause(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, ACCEPT_PAUSE_MOST)
                continue
            pause = ACCEPT_PAUSE_FIRST
            address = peer[0] if isinstance(peer, tuple) else str(peer)
            if self._connections.admit(conn, address):
                conn.close()
                continue
            task = loop.create_task(self._serve(conn, connection, tls))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _serve(
        self, conn: socket.socket, connection: Callable[[], Any], tls: ssl.SSLContext | None
    ) -> None:
        """Hand an accepted connection to aiohttp, after its TLS handshake if any."""
        conn.setblocking(False)
        handshake = {} if tls is None else {"ssl_handshake_timeout": self._request_timeout}
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                connection, conn, ssl=tls, **handshake
            )
        except (OSError, TimeoutError):  # SSLError and ConnectionError are OSErrors
            conn.close()  # a failed or slow handshake: nothing to serve

    def _log_pause(self, error: OSError) -> None:
        """One line a minute at most about accepting paused for want of resources."""
        pauses = self._pauses.count()
        if pauses:
            log.warning(
                "HTTP port cannot accept: out of file descriptors; accepting paused",
                extra={"error": error.strerror, "pauses": pauses},
            )

    def open_connections(self) -> int:
        """Connections the port holds open (for tests)."""
        return len(self._connections)

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
        tasks = [t for t in (self._acceptor, *self._handshakes) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acceptor = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.registry.unregister(self._connections)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
        refusals = self._refusals.count()
        if refusals:
            log.warning(
                "HTTP request refused", extra={"peer": peer, "status": status, "refusals": refusals}
            )

    async def _metrics(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            self.log_refusal(request.remote or "", refused.status)
            return refused
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
