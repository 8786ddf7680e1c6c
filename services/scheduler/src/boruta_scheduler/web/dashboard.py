"""The dashboard's routes on the scheduler's HTTP port: pages rendered with Jinja2, and a
server-sent event stream fed from the watch hub that tells pages when to refresh.

Every page reads through the same service calls as the gRPC API, with the caller's
identity and the rule app/authz.py has for the matching RPC, so a user sees here exactly
what the API shows them, and no page holds a secret (views never render Access).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined

from boruta_scheduler.app.authz import admit, rule_of
from boruta_scheduler.errors import (
    BorutaError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from boruta_scheduler.listing import MAX_PAGE_SIZE, RequestQuery, WorkerQuery
from boruta_scheduler.rpc.calls import ANONYMOUS, CertificateIdentities
from boruta_scheduler.types import Identity, Role, WorkerView
from boruta_scheduler.web import views
from boruta_scheduler.web.utilisation import (
    HEIGHT,
    WIDTH,
    UtilisationSeries,
    chart_lines,
    sample_of,
)

if TYPE_CHECKING:
    from boruta.metrics_http import MetricsServer

    from boruta_scheduler.app.service import SchedulerService

log = logging.getLogger(__name__)

COOKIE = "boruta_token"
# Requests shown on the queue page; the rest are counted.
QUEUE_SHOWN = 500
# Audit events searched for a request's timeline (admins only).
AUDIT_SEARCHED = 1000
# Events an SSE stream holds for a slow reader before its watch overflows.
STREAM_BACKLOG = 100
# A comment line this often finds a reader that went away while nothing happened.
KEEPALIVE_S = 15.0
# A reader that takes longer than this to take one event is dropped.
SLOW_READER_S = 60.0
# No inline script or style: what a user wrote cannot run even if escaping failed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request, Identity], Awaitable[web.StreamResponse]]


class Dashboard:
    """The pages; they answer 503 until attach() hands them a serving scheduler's service
    (a standby has none)."""

    def __init__(self, *, anonymous: bool, sample_interval: float) -> None:
        # Without TLS nobody can prove who they are: pages show what the plaintext gRPC
        # API shows a caller that names nobody (the user "anonymous").
        self._anonymous = anonymous
        self.http: MetricsServer | None = None
        self.service: SchedulerService | None = None
        self.series = UtilisationSeries(sample_interval)
        self._streams: set[asyncio.Event] = set()
        self._templates = Environment(
            loader=PackageLoader("boruta_scheduler.web", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
        )
        self._templates.filters["when"] = views.when

    def routes(self, app: web.Application) -> None:
        """Add the dashboard to the HTTP port's application (before it starts)."""
        app.router.add_get("/", self._page(self._queue))
        app.router.add_get("/boards", self._page(self._boards))
        app.router.add_get("/utilisation", self._page(self._utilisation))
        app.router.add_get("/requests/{id}", self._page(self._request))
        app.router.add_get("/events", self._page(self._events))
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_static("/static", Path(__file__).parent / "static")
        app.on_response_prepare.append(_security_headers)
        app.on_shutdown.append(self._end_streams)

    def attach(self, service: SchedulerService) -> None:
        """Serve the pages from service, and start sampling utilisation."""
        self.service = service
        engine = service.engine

        async def sample() -> Any:
            return await engine.read(lambda core, now: sample_of(core.workers(), now))

        self.series.start(sample)

    async def close(self) -> None:
        """Stop serving pages (503 again) and end every event stream: the engine stops."""
        self.service = None
        await self.series.stop()
        await self._end_streams(None)

    async def _end_streams(self, _app: object) -> None:
        for ended in list(self._streams):
            ended.set()

    # ---------------------------------------------------------------- who calls

    def _identity(self, request: web.Request) -> Identity | web.Response:
        assert self.http is not None
        found = self.http.caller(
            request, anonymous=self._anonymous, token=request.cookies.get(COOKIE, "")
        )
        if isinstance(found, web.Response):
            self.http.log_refusal(request.remote or "", found.status)
            if found.status == 401 and "text/html" in request.headers.get("Accept", ""):
                # A browser: the login form, still with the refusal's status and header.
                html = self._templates.get_template("login.html").render(
                    failed=False, title="Log in"
                )
                challenge = {k: v for k, v in found.headers.items() if k == "WWW-Authenticate"}
                return web.Response(
                    status=401, text=html, content_type="text/html", headers=challenge
                )
            if found.status == 401:
                found.text = (found.text or "") + "or log in with a token at /login\n"
            return found
        if found.certificate is not None:
            try:
                return CertificateIdentities.of_certificate(found.certificate)
            except PermissionDenied as error:
                return web.Response(status=403, text=f"{error}\n")
        if isinstance(found.token, Identity):
            return found.token
        return ANONYMOUS

    def _page(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            who = self._identity(request)
            if isinstance(who, web.Response):
                return who
            if self.service is None:
                return web.Response(
                    status=503, text="this scheduler is a standby: open the leader's dashboard\n"
                )
            try:
                return await handler(request, who)
            except NotFound as error:
                return web.Response(status=404, text=f"{error}\n")
            except PermissionDenied as error:
                return web.Response(status=403, text=f"{error}\n")
            except Unauthenticated as error:
                return web.Response(status=401, text=f"{error}\n")
            except ResourceExhausted as error:
                return web.Response(status=429, text=f"{error}\n")
            except BorutaError as error:
                return web.Response(status=400, text=f"{error}\n")

        return serve

    def _render(
        self, request: web.Request, who: Identity, fragment: str, **context: Any
    ) -> web.Response:
        """The page, or only its live part when the page's script asks for it to refresh."""
        name = fragment if request.query.get("fragment") else "page.html"
        html = self._templates.get_template(name).render(
            who=who, fragment=fragment, path=request.path, now=time.time(), **context
        )
        return web.Response(text=html, content_type="text/html")

    # -------------------------------------------------------------------- pages

    async def _queue(self, request: web.Request, who: Identity) -> web.Response:
        assert self.service is not None
        admit(who, rule_of("boruta.v1.Requests", "ListRequests"))
        live, total = await self.service.live_requests(who, QUEUE_SHOWN)
        rows = views.queue_rows(live)
        return self._render(
            request,
            who,
            "queue.html",
            title="Queue",
            rows=rows,
            more=max(total - len(rows), 0),
        )

    async def _all_workers(self, who: Identity) -> list[WorkerView]:
        assert self.service is not None
        admit(who, rule_of("boruta.v1.Workers", "ListWorkers"))
        found: list[WorkerView] = []
        query = WorkerQuery(limit=MAX_PAGE_SIZE)
        while True:
            page = await self.service.list_workers(who, query)
            found.extend(page.items)
            if page.next_after is None:
                return found
            query = WorkerQuery(limit=MAX_PAGE_SIZE, after=page.next_after)

    async def _boards(self, request: web.Request, who: Identity) -> web.Response:
        workers = await self._all_workers(who)
        now = time.time()
        rows = [views.board_row(worker, now) for worker in workers]
        window_days = views.FAILURE_WINDOW_S / 86400
        return self._render(
            request, who, "boards.html", title="Boards", rows=rows, window_days=window_days
        )

    async def _utilisation(self, request: web.Request, who: Identity) -> web.Response:
        admit(who, rule_of("boruta.v1.Workers", "ListWorkers"))
        samples = list(self.series.samples)
        return self._render(
            request,
            who,
            "utilisation.html",
            title="Utilisation",
            lines=chart_lines(samples),
            first=samples[0].time if samples else 0.0,
            last=samples[-1].time if samples else 0.0,
            width=WIDTH,
            height=HEIGHT,
            interval=self.series.interval,
        )

    async def _request(self, request: web.Request, who: Identity) -> web.Response:
        assert self.service is not None
        admit(who, rule_of("boruta.v1.Requests", "GetRequestInfo"))
        try:
            request_id = int(request.match_info["id"])
        except ValueError:
            return web.Response(status=400, text="a request id is a number\n")
        view, reason = await self.service.request_info(who, request_id)
        events = []
        try:
            admit(who, rule_of("boruta.v1.Audit", "ListAuditEvents"))
        except PermissionDenied:
            pass  # the audit log is the admins'; users see the record only
        else:
            target = f"request {request_id}"
            searched = await self.service.audit.events(who, AUDIT_SEARCHED, None)
            events = [e for e in searched if e.target == target and e.action != "NewRequest"]
        return self._render(
            request,
            who,
            "request.html",
            title=f"Request {view.id}",
            view=view,
            why=views.pending_text(view, reason),
            moments=views.timeline(view, events),
            audited=who.role is Role.ADMIN,
        )

    # ------------------------------------------------------------------- events

    async def _events(self, request: web.Request, who: Identity) -> web.StreamResponse:
        """Server-sent events: one per change the caller's watches would see (ids and
        states only; pages fetch what they show). A reader that falls too far behind gets
        a `reset` event and the end of the stream, as a watch stream would end."""
        assert self.service is not None
        admit(who, rule_of("boruta.v1.Requests", "WatchRequests"))
        admit(who, rule_of("boruta.v1.Workers", "WatchWorkers"))
        _, requests = await self.service.watch_requests(who, RequestQuery(), False)
        try:
            _, workers = await self.service.watch_workers(who, WorkerQuery(), False)
        except BaseException:
            requests.close()
            raise
        backlog: asyncio.Queue[tuple[str, dict[str, object]]] = asyncio.Queue(STREAM_BACKLOG)
        ended = asyncio.Event()
        self._streams.add(ended)

        async def pump(kind: str, items: AsyncIterator[Any]) -> None:
            try:
                async for item in items:
                    await backlog.put((kind, _event_of(kind, item)))
            except ResourceExhausted:
                # What is queued is stale now: the page fetches everything again.
                while not backlog.empty():
                    backlog.get_nowait()
                backlog.put_nowait(("reset", {}))

        pumps = [
            asyncio.ensure_future(pump("request", aiter(requests))),
            asyncio.ensure_future(pump("worker", aiter(workers))),
        ]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            # The watches are in place: a reader may make its change now and see it.
            await response.write(b"event: ready\ndata: {}\n\n")
            ending = asyncio.ensure_future(ended.wait())
            try:
                while not ended.is_set():
                    getting = asyncio.ensure_future(backlog.get())
                    done, _ = await asyncio.wait(
                        {getting, ending}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getting not in done:
                        getting.cancel()
                        if not ended.is_set():
                            await asyncio.wait_for(
                                response.write(b": keepalive\n\n"), SLOW_READER_S
                            )
                        continue
                    kind, data = getting.result()
                    event = f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
                    await asyncio.wait_for(response.write(event), SLOW_READER_S)
                    if kind == "reset":
                        break
            finally:
                ending.cancel()
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the reader went away
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()  # a write stuck on it would block the end too
            log.info(
                "dashboard event stream dropped: its reader fell behind", extra={"user": who.user}
            )
        finally:
            self._streams.discard(ended)
            for task in pumps:
                task.cancel()
            requests.close()
            workers.close()
        return response

    # -------------------------------------------------------------------- login

    async def _login_form(self, request: web.Request) -> web.Response:
        html = self._templates.get_template("login.html").render(failed=False, title="Log in")
        return web.Response(text=html, content_type="text/html")

    async def _login(self, request: web.Request) -> web.Response:
        """A bearer token typed into the form becomes an HttpOnly cookie; it is checked
        again on every request, so revoking the token logs the browser out."""
        if not _same_origin(request):
            return web.Response(status=403, text="log in from the dashboard's own page\n")
        form = await request.post()
        token = str(form.get("token", "")).strip()
        assert self.http is not None
        try:
            if self.http.tokens is None or not token:
                raise ValueError
            self.http.tokens(token)
        except Exception:  # any refusal: the token's text is never logged or echoed
            html = self._templates.get_template("login.html").render(failed=True, title="Log in")
            return web.Response(status=401, text=html, content_type="text/html")
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, token, httponly=True, secure=True, samesite="Strict", path="/")
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        if not _same_origin(request):
            return web.Response(status=403, text="log out from the dashboard's own page\n")
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response


def _event_of(kind: str, item: Any) -> dict[str, object]:
    if kind == "request":
        return {"id": item.id, "state": item.state.name}
    return {"uuid": item.view.uuid, "state": item.view.state.name, "removed": item.removed}


def _same_origin(request: web.Request) -> bool:
    """A browser names the page a form was posted from; another site's page is refused."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
