"""The scheduler's web dashboard (issue 13 point 6) on a live TLS farm: a real scheduler,
dryad and sshd, read over HTTPS with a farm certificate, a bearer token or the login
cookie; each identity sees what the gRPC API shows it, user-written text is escaped, and
the event stream tells of a new request."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import grpc
import pytest
from boruta.tls import channel_credentials
from boruta.v1 import superviser_pb2, superviser_pb2_grpc
from boruta_client import Client, WorkerState
from browser_kit import chromium
from dashboard_kit import event_stream, get, poll_page
from live_farm import LiveFarm, live_farm
from metrics_kit import https
from pki_kit import FarmPki
from system_kit import require_chromium

BOARDS = {str(uuid4()): {"board": "rpi4"}, str(uuid4()): {"board": "rpi4"}}
GROUP = f"lab-{uuid4().hex[:8]}"
PAGES = ("/", "/boards", "/utilisation", "/requests/1", "/events")


@pytest.fixture(scope="module")
def farm_pki(tmp_path_factory: pytest.TempPathFactory) -> FarmPki:
    return FarmPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory, farm_pki: FarmPki) -> Iterator[LiveFarm]:
    http = ("--metrics-listen", "127.0.0.1:0", "--dashboard-sample-interval", "0.2")
    with live_farm(tmp_path_factory.mktemp("farm"), BOARDS, *http, pki=farm_pki) as running:
        with running.admin() as admin:
            for uuid in BOARDS:
                admin.set_worker_groups(uuid, [GROUP])
        yield running


@pytest.fixture
def clean(farm: LiveFarm) -> Iterator[LiveFarm]:
    farm.reset()
    yield farm
    farm.reset()


def as_admin(farm_pki: FarmPki) -> ssl.SSLContext:
    return https(str(farm_pki.dir / "ca.pem"), farm_pki.admin())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_nothing_is_readable_without_credentials(farm: LiveFarm, farm_pki: FarmPki) -> None:
    anonymous = https(str(farm_pki.dir / "ca.pem"))
    for path in PAGES:
        reply = get(farm.metrics_address, path, anonymous)
        assert reply.status == 401, path
        assert "Bearer" in reply.headers["WWW-Authenticate"]
        assert "/login" in reply.body
    # The login form itself is open: it holds nothing of the farm.
    login = get(farm.metrics_address, "/login", anonymous)
    assert login.status == 200 and 'name="token"' in login.body
    assert get(farm.metrics_address, "/", anonymous, bearer("not-a-token")).status == 401
    # A browser is shown the login form, still refused.
    browser = get(farm.metrics_address, "/", anonymous, {"Accept": "text/html"})
    assert browser.status == 401 and 'name="token"' in browser.body
    assert "Queue" not in browser.body


def test_an_admin_sees_the_queue_boards_and_a_running_job(
    clean: LiveFarm, farm_pki: FarmPki
) -> None:
    farm, context = clean, as_admin(farm_pki)
    later = datetime.now(UTC) + timedelta(hours=1)
    with farm.client("alice", groups=[GROUP]) as alice:
        running = alice.new_request({"board": "rpi4"})
        alice.acquire_worker(running.id, timeout=120)
        waiting = alice.new_request({"board": "rpi4"}, valid_after=later)
        queue = get(farm.metrics_address, "/", context)
        assert queue.status == 200
        assert f'href="/requests/{running.id}"' in queue.body
        assert f'href="/requests/{waiting.id}"' in queue.body
        assert "not valid yet" in queue.body
        # The core's pending reason, on the queue and on the request's page.
        page = get(farm.metrics_address, f"/requests/{waiting.id}", context)
        assert "not valid yet: it is matched from its valid_after on (until " in page.body
        busy = alice.get_request(running.id).job
        assert busy is not None
        assert f"on {busy.worker_uuid}" in queue.body
        boards = get(farm.metrics_address, "/boards", context)
        assert boards.status == 200
        for uuid in BOARDS:
            assert uuid in boards.body
        assert f'href="/requests/{running.id}"' in boards.body
        assert "RUNNING" in boards.body
        # One of the group's two boards runs a job: the chart's legend says so.
        poll_page(
            farm.metrics_address,
            "/utilisation",
            context,
            lambda body: GROUP in body and "1 of 2" in body and "<polyline" in body,
            "one busy board of the group",
        )
        alice.close_request(running.id)
        timeline = get(farm.metrics_address, f"/requests/{running.id}", context)
        assert timeline.status == 200
        assert "created with priority" in timeline.body
        assert f"started on board {busy.worker_uuid}" in timeline.body
        assert "ended DONE" in timeline.body
        # An admin reads the audit log too: who took the access and who closed it.
        assert "AcquireWorker by alice" in timeline.body
        assert "CloseRequest by alice" in timeline.body
        alice.close_request(waiting.id)


def test_a_user_sees_only_what_the_api_shows_them(clean: LiveFarm, farm_pki: FarmPki) -> None:
    farm = clean
    context = https(str(farm_pki.dir / "ca.pem"))
    with farm.admin() as admin:
        issued = admin.issue_token("bob", groups=[GROUP], description="dashboard test")
    later = datetime.now(UTC) + timedelta(hours=1)
    with (
        farm.client("alice", groups=[GROUP]) as alice,
        Client(farm.address, tls=farm_pki.user("bob", GROUP)) as bob,
    ):
        hers = alice.new_request({"board": "rpi4"}, valid_after=later)
        his = bob.new_request({"board": "rpi4"}, valid_after=later)
        queue = get(farm.metrics_address, "/", context, bearer(issued.secret))
        assert queue.status == 200
        assert "bob (user)" in queue.body
        assert f'href="/requests/{his.id}"' in queue.body
        assert f'href="/requests/{hers.id}"' not in queue.body
        mine = get(farm.metrics_address, f"/requests/{his.id}", context, bearer(issued.secret))
        assert mine.status == 200
        denied = get(farm.metrics_address, f"/requests/{hers.id}", context, bearer(issued.secret))
        assert denied.status == 403
        # Boards are everyone's to see, as ListWorkers shows them to every user.
        boards = get(farm.metrics_address, "/boards", context, bearer(issued.secret))
        assert boards.status == 200 and all(uuid in boards.body for uuid in BOARDS)
        alice.close_request(hers.id)
        bob.close_request(his.id)


def test_a_dryad_certificate_reads_nothing(farm: LiveFarm, farm_pki: FarmPki) -> None:
    dryad = https(str(farm_pki.dir / "ca.pem"), farm_pki.dryad("lab-pc", *BOARDS))
    reply = get(farm.metrics_address, "/", dryad)
    assert reply.status == 403
    assert "only users and admins may list requests" in reply.body


def test_what_users_write_is_escaped(clean: LiveFarm, farm_pki: FarmPki) -> None:
    farm, context = clean, as_admin(farm_pki)
    script = "<script>alert(1)</script>"
    with farm.client("alice", groups=[GROUP]) as alice:
        request = alice.new_request({"note": script}, accept_unsatisfiable=True)
        for path in ("/", f"/requests/{request.id}"):
            reply = get(farm.metrics_address, path, context)
            assert reply.status == 200, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.body, path
            assert script not in reply.body, path
            # The only scripts are the page's own file: nothing inline.
            for tag in re.findall(r"<script[^>]*>", reply.body):
                assert 'src="/static/dashboard.js"' in tag, tag
            policy = reply.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        alice.close_request(request.id)


def test_the_event_stream_tells_of_a_new_request(clean: LiveFarm, farm_pki: FarmPki) -> None:
    farm, context = clean, as_admin(farm_pki)
    later = datetime.now(UTC) + timedelta(hours=1)
    with (
        event_stream(farm.metrics_address, context) as stream,
        farm.client("alice", groups=[GROUP]) as alice,
    ):
        request = alice.new_request({"board": "rpi4"}, valid_after=later)
        stream.wait_for(
            lambda kind, data: kind == "request" and data == {"id": request.id, "state": "WAITING"},
            f"request {request.id}",
        )
        alice.close_request(request.id)
        stream.wait_for(
            lambda kind, data: (
                kind == "request" and data == {"id": request.id, "state": "CANCELLED"}
            ),
            f"request {request.id} closed",
        )


def test_a_user_stream_hears_only_their_own_requests(clean: LiveFarm, farm_pki: FarmPki) -> None:
    farm = clean
    context = https(str(farm_pki.dir / "ca.pem"), farm_pki.user("bob", GROUP))
    later = datetime.now(UTC) + timedelta(hours=1)
    with (
        event_stream(farm.metrics_address, context) as stream,
        farm.client("alice", groups=[GROUP]) as alice,
        Client(farm.address, tls=farm_pki.user("bob", GROUP)) as bob,
    ):
        hers = alice.new_request({"board": "rpi4"}, valid_after=later)
        his = bob.new_request({"board": "rpi4"}, valid_after=later)
        heard = []
        for kind, data in stream.events():
            if kind == "request":
                heard.append(data["id"])
                if data["id"] == his.id:
                    break
        # Changes are published in commit order: had alice's been sent, it came first.
        assert hers.id not in heard
        alice.close_request(hers.id)
        bob.close_request(his.id)


def test_a_token_logs_a_browser_in_with_a_strict_cookie(farm: LiveFarm, farm_pki: FarmPki) -> None:
    context = https(str(farm_pki.dir / "ca.pem"))
    with farm.admin() as admin:
        issued = admin.issue_token("carol", admin=True, description="dashboard login test")
    login = get(farm.metrics_address, "/login", context, form={"token": issued.secret})
    assert login.status == 303 and login.headers["Location"] == "/"
    cookie = login.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert attribute in cookie, cookie
    pair = cookie.split(";")[0]
    page = get(farm.metrics_address, "/", context, {"Cookie": pair})
    assert page.status == 200 and "carol (admin)" in page.body
    wrong = get(farm.metrics_address, "/login", context, form={"token": "wrong"})
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    elsewhere = get(
        farm.metrics_address,
        "/login",
        context,
        {"Origin": "https://elsewhere.example"},
        form={"token": issued.secret},
    )
    assert elsewhere.status == 403
    # The cookie holds the token: revoking it logs the browser out.
    with farm.admin() as admin:
        admin.revoke_token(issued.token.id)
    assert get(farm.metrics_address, "/", context, {"Cookie": pair}).status == 401


def report_failed(farm: LiveFarm, farm_pki: FarmPki, uuid: str, reason: str) -> None:
    """SetFail for a board, as its dryad would call it (with a dryad certificate naming it)."""
    credentials = channel_credentials(farm_pki.dryad("lab-pc", uuid))
    with grpc.secure_channel(farm.address, credentials) as channel:
        superviser_pb2_grpc.SuperviserStub(channel).SetFail(
            superviser_pb2.SetFailRequest(worker_uuid=uuid, reason=reason), timeout=60
        )


def test_a_browser_logs_in_and_sees_the_farm_live(
    clean: LiveFarm, farm_pki: FarmPki, tmp_path: Path
) -> None:
    """Real headless Chromium: refused without a token, logs in through the form over
    HTTPS, shows the boards with their latest failures, and shows a new request without a
    reload. Screenshots go to
    $BORUTA_SCREENSHOTS (or the test's temporary directory)."""
    chromium_binary, driver = require_chromium()
    farm = clean
    shots = Path(os.environ.get("BORUTA_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    site = f"https://{farm.metrics_address}"
    with farm.admin() as admin:
        issued = admin.issue_token("ann", admin=True, description="browser test")
    later = datetime.now(UTC) + timedelta(hours=1)
    with chromium(chromium_binary, driver, tmp_path / "chromium") as browser:
        # Refused: the browser gets the login form instead of the page.
        browser.open(f"{site}/boards")
        browser.wait_for(lambda text: "Bearer token" in text and "Boards" not in text, "login")
        browser.type_into("#token", issued.secret)
        browser.click("button[type=submit]")
        browser.wait_for(lambda text: "ann (admin)" in text and "Queue" in text, "the queue")
        failing = sorted(BOARDS)[0]
        report_failed(farm, farm_pki, failing, "camera unplugged")
        browser.open(f"{site}/boards")
        browser.wait_for(lambda text: all(uuid in text for uuid in BOARDS), "every board")
        browser.wait_for(
            lambda text: "(reported by its dryad): camera unplugged" in text, "the failure"
        )
        browser.screenshot(shots / "boards.png")
        with farm.admin() as admin:
            admin.set_worker_state(failing, WorkerState.IDLE, "camera back")
        farm.wait_idle()
        browser.open(f"{site}/")
        browser.wait_for(lambda text: "· live" in text, "the event stream open")
        with farm.client("alice", groups=[GROUP]) as alice:
            request = alice.new_request(
                {"board": "rpi4", "camera": "yes"}, valid_after=later, accept_unsatisfiable=True
            )
            # No reload: the event stream tells the page, which fetches its live part.
            browser.wait_for(
                lambda text: re.search(rf"^{request.id}\s+WAITING", text, re.M) is not None,
                f"request {request.id} on the queue",
            )
            browser.screenshot(shots / "queue.png")
            browser.open(f"{site}/utilisation")
            browser.wait_for(lambda text: "busy now" in text, "the chart's legend")
            browser.screenshot(shots / "utilisation.png")
            browser.open(f"{site}/")
            alice.close_request(request.id)
        browser.wait_for(
            lambda text: f"\n{request.id}\t" not in text and "No live requests" in text,
            "the closed request gone",
        )


def test_a_request_for_two_boards_shows_both(clean: LiveFarm, farm_pki: FarmPki) -> None:
    farm, context = clean, as_admin(farm_pki)
    with farm.client("alice", groups=[GROUP]) as alice:
        pair = alice.new_request(profiles={"dut": {"board": "rpi4"}, "peer": {"board": "rpi4"}})
        alice.acquire_worker(pair.id, timeout=120)
        queue = get(farm.metrics_address, "/", context)
        assert queue.status == 200
        assert "<b>dut</b>: <span>board=rpi4</span>" in queue.body
        assert "<b>peer</b>: <span>board=rpi4</span>" in queue.body
        row = queue.body.split(f'href="/requests/{pair.id}"')[1].split("</tr>")[0]
        assert all(uuid in row for uuid in BOARDS), row
        timeline = get(farm.metrics_address, f"/requests/{pair.id}", context)
        for uuid in BOARDS:
            assert f"started on board {uuid}" in timeline.body
        alice.close_request(pair.id)


def test_a_stacks_collateral_shows_whose_it_is(clean: LiveFarm, farm_pki: FarmPki) -> None:
    farm, context = clean, as_admin(farm_pki)
    with farm.admin() as admin, farm.client("alice", groups=[GROUP]) as alice:
        admin.create_stack("bench1", list(BOARDS))
        running = alice.new_request({"board": "rpi4"})
        held = next(w for w in admin.list_workers(uuids=list(BOARDS)) if w.collateral_of)
        assert held.collateral_of == running.id
        boards = get(farm.metrics_address, "/boards", context)
        assert boards.status == 200
        row = boards.body.split(held.uuid)[1].split("</tr>")[0]
        assert f'collateral of <a href="/requests/{running.id}">' in row, row
        assert "stack bench1" in row
        alice.close_request(running.id)
        admin.delete_stack("bench1")


def test_a_draining_board_is_marked_with_the_reason_it_will_get(
    clean: LiveFarm, farm_pki: FarmPki
) -> None:
    farm, context = clean, as_admin(farm_pki)
    with farm.client("alice", groups=[GROUP]) as alice, farm.admin() as admin:
        running = alice.new_request({"board": "rpi4"})
        alice.acquire_worker(running.id, timeout=120)
        board = alice.get_request(running.id).job
        assert board is not None
        try:
            admin.set_worker_state(
                board.worker_uuid, WorkerState.MAINTENANCE, "new relay", after_job=True
            )
            page = get(farm.metrics_address, "/boards", context).body
            row = page.split(board.worker_uuid, 1)[1].split("</tr>", 1)[0]
            assert 'class="draining">draining<' in row and "new relay" in row, row
        finally:
            # Called off, so that the board comes back IDLE for the next tests.
            admin.set_worker_state(board.worker_uuid, WorkerState.IDLE, "not now")
            alice.close_request(running.id)
    farm.wait_idle()


def test_a_quarantined_board_is_marked_and_an_admin_brings_it_back(
    clean: LiveFarm, farm_pki: FarmPki
) -> None:
    """Three failures within the scheduler's default window (3 in 1 h) quarantine a board:
    the boards page marks it beside its reason; setting it IDLE clears the mark."""
    farm, context = clean, as_admin(farm_pki)
    board = sorted(BOARDS)[-1]

    def back_in_service(why: str) -> None:
        with farm.admin() as admin:
            admin.set_worker_state(board, WorkerState.IDLE, why)
        farm.wait_idle()

    def row_of(body: str) -> str:
        return body.split(board, 1)[1].split("</tr>", 1)[0]

    try:
        for n in range(3):
            if n:
                back_in_service("try again")
            report_failed(farm, farm_pki, board, f"relay stuck {n}")
        with farm.admin() as admin:
            (worker,) = admin.list_workers(uuids=[board])
        assert worker.state is WorkerState.MAINTENANCE and worker.quarantined, worker
        assert worker.reason.startswith("quarantined: "), worker.reason
        page = get(farm.metrics_address, "/boards", context)
        assert page.status == 200
        row = row_of(page.body)
        assert 'class="quarantined">quarantined<' in row and "relay stuck 2" in row, row
    finally:
        back_in_service("relay replaced")  # also when the test failed: the next tests need it
    assert 'class="quarantined"' not in row_of(get(farm.metrics_address, "/boards", context).body)
