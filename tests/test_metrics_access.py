"""Who may read the metrics port (issue 13): with TLS it is HTTPS, and a scrape shows a
client certificate from the farm's CA or one of the scheduler's bearer tokens; anything
else is refused. Without TLS a scheduler serves metrics only when anonymous scrapes are
allowed, and only on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from boruta import pki
from boruta_client import Client
from farm_kit import SCHEDULER, SchedulerProcess
from metrics_kit import https, poll, samples, scrape, total
from pki_kit import FarmPki


@pytest.fixture(scope="module")
def farm_pki(tmp_path_factory: pytest.TempPathFactory) -> FarmPki:
    return FarmPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def scheduler(
    tmp_path_factory: pytest.TempPathFactory, farm_pki: FarmPki
) -> Iterator[SchedulerProcess]:
    files = farm_pki.scheduler()
    process = SchedulerProcess(
        tmp_path_factory.mktemp("scheduler"),
        *("--tls-ca", files.ca, "--tls-cert", files.cert, "--tls-key", files.key),
        *("--listen-tokens", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def status_of(address: str, context: ssl.SSLContext, token: str = "") -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        scrape(address, context=context, headers=headers)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def test_a_scrape_without_credentials_is_refused(
    scheduler: SchedulerProcess, farm_pki: FarmPki
) -> None:
    context = https(str(farm_pki.dir / "ca.pem"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(scheduler.metrics_address, context=context)
    assert refused.value.code == 401
    assert "Bearer" in refused.value.headers["WWW-Authenticate"]
    assert "certificate" in refused.value.read().decode()


@pytest.mark.parametrize("role", ["admin", "user"])
def test_a_farm_certificate_may_scrape(
    scheduler: SchedulerProcess, farm_pki: FarmPki, role: str
) -> None:
    files = farm_pki.admin() if role == "admin" else farm_pki.user("grafana")
    found = samples(scrape(scheduler.metrics_address, context=https(files.ca, files)))
    assert total(found, "boruta_leader") == 1


def test_a_certificate_of_another_ca_gets_no_connection(
    scheduler: SchedulerProcess, farm_pki: FarmPki
) -> None:
    foreign = farm_pki.files("mallory", pki.Role.USER, foreign=True)
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        scrape(scheduler.metrics_address, context=https(foreign.ca, foreign))


def test_plain_http_gets_nothing_from_a_tls_port(scheduler: SchedulerProcess) -> None:
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(scheduler.metrics_address)


def test_connections_closed_after_a_scrape_or_a_failed_handshake_are_not_held(
    scheduler: SchedulerProcess, farm_pki: FarmPki
) -> None:
    """The port's count of open connections (which its limits use) follows TLS
    connections to their end, whether they were served or failed their handshake."""
    files = farm_pki.admin()
    for _ in range(5):
        samples(scrape(scheduler.metrics_address, context=https(files.ca, files)))
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            scrape(scheduler.metrics_address)
    found = poll(
        scheduler.metrics_address,
        lambda s: total(s, "boruta_http_connections") == 1,  # this scrape's own
        "the closed connections forgotten",
        context=https(files.ca, files),
    )
    assert total(found, "boruta_http_connections_refused_total") == 0


def test_a_bearer_token_may_scrape_until_revoked(
    scheduler: SchedulerProcess, farm_pki: FarmPki
) -> None:
    ca = str(farm_pki.dir / "ca.pem")
    with Client(scheduler.address, tls=farm_pki.admin()) as admin:
        issued = admin.issue_token("prometheus", description="scrapes")
        assert status_of(scheduler.metrics_address, https(ca), issued.secret) == 200
        wrong = issued.secret[:-1] + ("0" if issued.secret[-1] != "0" else "1")
        assert status_of(scheduler.metrics_address, https(ca), wrong) == 401
        admin.revoke_token(issued.token.id)
    # A revocation counts once it is committed, which the call's answer waited for.
    assert status_of(scheduler.metrics_address, https(ca), issued.secret) == 401


def refusal_of(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCHEDULER, "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0", *options],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plaintext_metrics_need_anonymous_scrapes_allowed(tmp_path: Path) -> None:
    ran = refusal_of(tmp_path, "--plaintext", "yes", "--metrics-listen", "127.0.0.1:0")
    assert ran.returncode == 2, ran.stderr
    assert "metrics_anonymous" in ran.stderr
    assert ran.stdout == ""  # no readiness line


def test_plaintext_metrics_only_on_loopback(tmp_path: Path) -> None:
    ran = refusal_of(
        tmp_path,
        *("--plaintext", "yes", "--metrics-listen", "0.0.0.0:0", "--metrics-anonymous", "yes"),
    )
    assert ran.returncode == 2, ran.stderr
    assert "loopback" in ran.stderr


def test_a_busy_metrics_port_is_one_line(tmp_path: Path) -> None:
    with anonymous_metrics(tmp_path / "first") as first:
        ran = refusal_of(
            tmp_path / "second",
            *("--plaintext", "yes", "--metrics-anonymous", "yes"),
            *("--metrics-listen", first.metrics_address),
        )
    assert ran.returncode == 2, ran.stderr
    assert f"cannot listen on {first.metrics_address}" in ran.stderr
    assert "in use" in ran.stderr


@contextmanager
def anonymous_metrics(data_dir: Path) -> Iterator[SchedulerProcess]:
    """A plaintext scheduler with anonymous metrics, for as long as a with block."""
    process = SchedulerProcess(
        data_dir, "--metrics-listen", "127.0.0.1:0", "--metrics-anonymous", "yes"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_without_tokens_only_a_certificate_may_scrape(farm_pki: FarmPki) -> None:
    """The dryad's case: its port checks certificates and has no tokens to offer."""
    from boruta.metrics_http import MetricsServer
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry(auto_describe=False)
    Counter("boruta_probe", "a figure to read", registry=registry).inc()
    files = farm_pki.dryad("lab-pc", "board-1")
    server = MetricsServer(registry, "127.0.0.1:0", files)
    port = await server.start()
    try:
        address = f"127.0.0.1:{port}"
        ca = str(farm_pki.dir / "ca.pem")
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(scrape, address, context=https(ca))
        assert refused.value.code == 401
        assert "Bearer" not in refused.value.read().decode()
        # A token means nothing here.
        assert await asyncio.to_thread(status_of, address, https(ca), "1.secret") == 401
        admin = farm_pki.admin()
        text = await asyncio.to_thread(scrape, address, context=https(ca, admin))
        assert total(samples(text), "boruta_probe_total") == 1
    finally:
        await server.stop()


def test_a_scheduler_may_serve_metrics_without_the_dashboard(tmp_path: Path) -> None:
    process = SchedulerProcess(
        tmp_path,
        *("--metrics-listen", "127.0.0.1:0", "--metrics-anonymous", "yes"),
        *("--dashboard", "no"),
    )
    process.start()
    try:
        assert total(samples(scrape(process.metrics_address)), "boruta_leader") == 1
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://{process.metrics_address}/", timeout=60)
        assert missing.value.code == 404
    finally:
        process.stop()


TIMEOUT = 0.5  # the request deadline of the servers below, in seconds


@contextlib.asynccontextmanager
async def guarded_server(
    farm_pki: FarmPki,
) -> AsyncIterator[tuple[int, asyncio.Event, Any]]:
    """A TLS metrics port with a short request deadline and a /stream route that answers
    a first line at once and its last once the test sets the event."""
    from aiohttp import web
    from boruta.metrics_http import MetricsServer
    from prometheus_client import CollectorRegistry

    finish = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse()
        await reply.prepare(request)
        await reply.write(b"first\n")
        await finish.wait()
        await reply.write(b"last\n")
        await reply.write_eof()
        return reply

    def extend(app: web.Application) -> None:
        app.router.add_get("/stream", stream)

    server = MetricsServer(
        CollectorRegistry(),
        "127.0.0.1:0",
        farm_pki.dryad("lab-pc", "board-1"),
        anonymous=True,
        extend=extend,
        request_timeout=TIMEOUT,
    )
    port = await server.start()
    try:
        yield port, finish, server
    finally:
        finish.set()
        await server.stop()


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    """Return once the server has ended the connection; a server that keeps it fails the
    test after a generous deadline (a slow machine only makes the end come later)."""
    with contextlib.suppress(ConnectionResetError):
        while await asyncio.wait_for(reader.read(1024), 60):
            pass


async def test_a_connection_that_sends_nothing_is_closed(farm_pki: FarmPki) -> None:
    """Unauthenticated, it could otherwise hold a file descriptor of the scheduler for
    ever: in the TLS handshake, or after it with no request. Nothing of either is kept
    once they are gone (a failed handshake leaves no deadline behind, re-armed for ever)."""
    async with guarded_server(farm_pki) as (port, _, server):
        raw_reader, raw_writer = await asyncio.open_connection("127.0.0.1", port)
        tls_reader, tls_writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=https(str(farm_pki.dir / "ca.pem"))
        )
        await closed_by_server(raw_reader)
        await closed_by_server(tls_reader)
        raw_writer.close()
        tls_writer.close()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        while server.pending_deadlines() and loop.time() < give_up:
            await asyncio.sleep(TIMEOUT / 5)
        assert server.pending_deadlines() == 0


async def test_a_request_sent_a_byte_at_a_time_is_cut(farm_pki: FarmPki) -> None:
    async with guarded_server(farm_pki) as (port, _, _server):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=https(str(farm_pki.dir / "ca.pem"))
        )
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        loop = asyncio.get_running_loop()
        cut = loop.create_task(closed_by_server(reader))
        # Trickle a header for three deadlines' time; the server must end it meanwhile.
        give_up = loop.time() + 3 * TIMEOUT
        while not cut.done() and loop.time() < give_up:
            with contextlib.suppress(ConnectionError):
                writer.write(b"X")
                await writer.drain()
            await asyncio.sleep(TIMEOUT / 10)
        await cut
        writer.close()


async def test_answers_and_streams_outlast_the_deadline(farm_pki: FarmPki) -> None:
    """A scrape is answered; an answer being streamed (the dashboard's live events) is a
    request in progress, not cut however long it runs."""
    async with guarded_server(farm_pki) as (port, finish, _server):
        address = f"127.0.0.1:{port}"
        context = https(str(farm_pki.dir / "ca.pem"))
        await asyncio.to_thread(scrape, address, context=context)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"first\n"), 60)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(3 * TIMEOUT)  # three deadlines pass while the answer streams
        finish.set()
        rest = await asyncio.wait_for(reader.read(), 60)
        assert b"last\n" in rest
        writer.close()
