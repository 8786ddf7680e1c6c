"""TLS on the scheduler: identities come from client certificates only; a foreign CA, an
expired certificate, no certificate and plaintext are refused; a dryad speaks only for
the workers its certificate names; plaintext is allowed only when asked and on loopback."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from boruta import pki
from boruta.tls import TlsFiles, channel_credentials
from boruta.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    requests_pb2,
    requests_pb2_grpc,
    superviser_pb2,
    superviser_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)
from boruta_scheduler.config import SchedulerConfig, ServerConfig
from boruta_scheduler.listing import RequestQuery
from boruta_scheduler.rpc.server import Scheduler, transport_security
from pki_kit import FarmPki
from test_engine import FillingStore

ALL = RequestQuery()
SPOOF = (("x-boruta-user", "mallory"), ("x-boruta-role", "admin"))


@pytest.fixture
def farm_pki(tmp_path: Path) -> FarmPki:
    return FarmPki(tmp_path / "pki")


def tls_config(tmp_path: Path, farm_pki: FarmPki) -> SchedulerConfig:
    """A scheduler on loopback with TLS and a token port, both on ports of its choosing."""
    files = farm_pki.scheduler()
    return SchedulerConfig(
        server=ServerConfig(
            listen="127.0.0.1:0",
            data_dir=str(tmp_path / "state"),
            tls_ca=files.ca,
            tls_cert=files.cert,
            tls_key=files.key,
            listen_tokens="127.0.0.1:0",
        )
    )


@pytest.fixture
async def scheduler(tmp_path: Path, farm_pki: FarmPki) -> AsyncIterator[Scheduler]:
    running = Scheduler(tls_config(tmp_path, farm_pki))
    await running.start()
    yield running
    await running.stop()


def channel(scheduler: Scheduler, files: TlsFiles | None) -> grpc.aio.Channel:
    address = f"127.0.0.1:{scheduler.port}"
    if files is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, channel_credentials(files))


def token_channel(scheduler: Scheduler, farm_pki: FarmPki, token: str | None) -> grpc.aio.Channel:
    """A channel to the token port that presents token (or no token)."""
    ca = Path(farm_pki.scheduler().ca).read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    if token is not None:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return grpc.aio.secure_channel(f"127.0.0.1:{scheduler.token_port}", creds)


async def new_request(ch: grpc.aio.Channel) -> requests_pb2.NewRequestResponse:
    stub = requests_pb2_grpc.RequestsStub(ch)
    message = requests_pb2.NewRequestRequest(caps={"board": "x"}, accept_unsatisfiable=True)
    return await stub.NewRequest(message, metadata=SPOOF, timeout=10)


async def test_identity_comes_from_the_certificate_not_the_metadata(
    scheduler: Scheduler, farm_pki: FarmPki
) -> None:
    async with channel(scheduler, farm_pki.user("alice", "lab")) as ch:
        reply = await new_request(ch)
    assert reply.request.owner == "alice"
    assert list(reply.request.owner_groups) == ["lab"]


@pytest.mark.parametrize("who", ["foreign CA", "expired", "no certificate", "plaintext"])
async def test_bad_credentials_are_refused(
    scheduler: Scheduler, farm_pki: FarmPki, who: str
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    ca = Path(farm_pki.scheduler().ca).read_bytes()
    if who == "plaintext":
        ch = grpc.aio.insecure_channel(address)
    elif who == "no certificate":
        ch = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca))
    else:
        # The client trusts the farm's CA; only its own certificate is bad.
        files = farm_pki.files(
            "eve", pki.Role.ADMIN, foreign=who == "foreign CA", expired=who == "expired"
        )
        ch = channel(scheduler, TlsFiles(files.ca, files.cert, files.key))
    async with ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await new_request(ch)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    async with channel(scheduler, farm_pki.user("alice")) as good:
        assert (await new_request(good)).request.owner == "alice"
    assert [r.owner for r in scheduler.store.list_requests(ALL).items] == ["alice"]


async def test_a_dryad_speaks_only_for_its_own_workers(
    scheduler: Scheduler, farm_pki: FarmPki, caplog: pytest.LogCaptureFixture
) -> None:
    def register(uuid: str) -> superviser_pb2.RegisterRequest:
        return superviser_pb2.RegisterRequest(
            caps={"UUID": uuid},
            dryad_address="127.0.0.1:7175",
            ssh_address="127.0.0.1:22",
            instance_id="i1",
        )

    async with channel(scheduler, farm_pki.dryad("lab-pc", "w1")) as ch:
        stub = superviser_pb2_grpc.SuperviserStub(ch)
        reply = await stub.Register(register("w1"), timeout=10)
        assert reply.worker.uuid == "w1"
        for call in (
            stub.Register(register("w2"), timeout=10),
            stub.Heartbeat(superviser_pb2.HeartbeatRequest(worker_uuid="w2"), timeout=10),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "may not speak for worker 'w2'" in (info.value.details() or "")
    async with channel(scheduler, farm_pki.dryad("pc-2", "w3", host="10.1.2.3")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            # Its certificate names 10.1.2.3; it may not aim tunnels at 127.0.0.1.
            await superviser_pb2_grpc.SuperviserStub(ch).Register(register("w3"), timeout=10)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "is not on a host the dryad's certificate names" in (info.value.details() or "")
    async with channel(scheduler, farm_pki.user("alice")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await superviser_pb2_grpc.SuperviserStub(ch).Register(register("w1"), timeout=10)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    refusals = [
        (r.call, r.caller)
        for r in caplog.records
        if r.getMessage() == "call refused"  # type: ignore[attr-defined]
    ]
    assert ("boruta.v1.Superviser.Register", "lab-pc") in refusals
    assert ("boruta.v1.Superviser.Register", "alice") in refusals


async def test_scheduler_certificate_cannot_call_the_scheduler(
    scheduler: Scheduler, farm_pki: FarmPki
) -> None:
    async with channel(scheduler, farm_pki.scheduler()) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await new_request(ch)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_plaintext_only_when_asked_and_only_on_loopback(farm_pki: FarmPki) -> None:
    files = farm_pki.scheduler()
    with pytest.raises(ValueError, match="no TLS"):
        transport_security(ServerConfig(listen="127.0.0.1:0"))
    with pytest.raises(ValueError, match="only allowed on loopback; listen is 0"):
        transport_security(ServerConfig(listen="0.0.0.0:50051", plaintext=True))
    with pytest.raises(ValueError, match="set all of tls_ca, tls_cert and tls_key"):
        transport_security(ServerConfig(tls_ca=files.ca))
    with pytest.raises(ValueError, match="choose one"):
        transport_security(
            ServerConfig(tls_ca=files.ca, tls_cert=files.cert, tls_key=files.key, plaintext=True)
        )
    assert transport_security(ServerConfig(listen="[::1]:0", plaintext=True)) is None
    assert (
        transport_security(ServerConfig(tls_ca=files.ca, tls_cert=files.cert, tls_key=files.key))
        == files
    )


async def test_bearer_tokens_on_the_token_port(scheduler: Scheduler, farm_pki: FarmPki) -> None:
    async with channel(scheduler, farm_pki.admin()) as admin_ch:
        tokens = tokens_pb2_grpc.TokensStub(admin_ch)
        issued = await tokens.IssueToken(
            tokens_pb2.IssueTokenRequest(user="ci-bot", groups=["lab"], description="nightly"),
            timeout=10,
        )
    secret = issued.secret
    assert secret.startswith(f"{issued.token.id}.")

    async with token_channel(scheduler, farm_pki, secret) as ch:
        reply = await new_request(ch)
        assert (reply.request.owner, list(reply.request.owner_groups)) == ("ci-bot", ["lab"])
    watcher = token_channel(scheduler, farm_pki, secret)
    watch = requests_pb2_grpc.RequestsStub(watcher).WatchRequests(
        requests_pb2.WatchRequestsRequest()
    )
    await watch.initial_metadata()
    async with token_channel(scheduler, farm_pki, secret) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await tokens_pb2_grpc.TokensStub(ch).ListTokens(tokens_pb2.ListTokensRequest())
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    for bad, why in (
        (None, "needs a bearer token"),
        (secret[:-2] + "xx", "not valid"),
        ("42.nope", "not valid"),
    ):
        async with token_channel(scheduler, farm_pki, bad) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await new_request(ch)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert why in (info.value.details() or "")
    async with channel(scheduler, farm_pki.admin()) as admin_ch:
        tokens = tokens_pb2_grpc.TokensStub(admin_ch)
        await tokens.RevokeToken(tokens_pb2.RevokeTokenRequest(token_id=issued.token.id))
        listed = await tokens.ListTokens(tokens_pb2.ListTokensRequest())
        assert listed.tokens[0].HasField("revoked_at")
        assert all(secret not in str(t) for t in listed.tokens)
    # The watch opened before the revocation ends at its next event: a new request of
    # ci-bot's (made with a certificate of the same name) is one.
    async with channel(scheduler, farm_pki.user("ci-bot", "lab")) as same_user:
        await new_request(same_user)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in watch:
            pass
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    await watcher.close()
    async with token_channel(scheduler, farm_pki, secret) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await new_request(ch)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "was revoked" in (info.value.details() or "")


async def test_a_token_the_store_refused_is_unavailable_and_never_usable(
    tmp_path: Path, farm_pki: FarmPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FillingStore()
    store.gate.set()
    running = Scheduler(tls_config(tmp_path, farm_pki), store=store)
    await running.start()
    try:
        async with channel(running, farm_pki.admin()) as admin_ch:
            tokens = tokens_pb2_grpc.TokensStub(admin_ch)
            store.full = True
            # The secret the refused token would have had, so that the test can present it.
            monkeypatch.setattr("secrets.token_urlsafe", lambda n: "refused")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await tokens.IssueToken(tokens_pb2.IssueTokenRequest(user="ci-bot"), timeout=10)
            monkeypatch.undo()
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "disk full" in (info.value.details() or "")
            assert not (await tokens.ListTokens(tokens_pb2.ListTokensRequest())).tokens
            async with token_channel(running, farm_pki, "1.refused") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await new_request(ch)
                assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            store.full = False
            while True:  # the scheduler retries by itself
                try:
                    issued = await tokens.IssueToken(
                        tokens_pb2.IssueTokenRequest(user="ci-bot"), timeout=10
                    )
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
                    await asyncio.sleep(0.05)
        assert issued.token.id == 1  # the refused token's id was never acknowledged
        async with token_channel(running, farm_pki, issued.secret) as ch:
            assert (await new_request(ch)).request.owner == "ci-bot"
        async with token_channel(running, farm_pki, "1.refused") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await new_request(ch)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop()
    assert [t.user for t in store.load().tokens] == ["ci-bot"]


async def test_unauthenticated_callers_share_one_bounded_run_of_log_lines(
    scheduler: Scheduler, farm_pki: FarmPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="boruta_scheduler.rpc.calls")
    calls = 600  # ten times the default rate, each with a token of its own
    async with token_channel(scheduler, farm_pki, None) as ch:
        stub = requests_pb2_grpc.RequestsStub(ch)

        async def refused(n: int) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.NewRequest(
                    requests_pb2.NewRequestRequest(caps={"board": "x"}),
                    metadata=(("authorization", f"Bearer {n}.forged-{uuid.uuid4().hex}"),),
                    timeout=10,
                )
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED

        started = time.monotonic()
        for first in range(0, calls, 100):
            await asyncio.gather(*(refused(n) for n in range(first, first + 100)))
        took = time.monotonic() - started
    assert scheduler.refusal_log is not None
    scheduler.refusal_log.close()  # what stopping does: log the counts still pending
    lines = [r for r in caplog.records if r.getMessage() == "call refused"]
    left_out = [r for r in caplog.records if r.getMessage() == "refused calls not logged"]
    assert 60 <= len(lines) <= 60 + math.ceil(took), (len(lines), took)
    assert [r.caller for r in left_out] == ["(unauthenticated)"]  # type: ignore[attr-defined]
    assert len(lines) + left_out[0].count == calls  # type: ignore[attr-defined]


async def test_the_audit_log_says_who_did_what(scheduler: Scheduler, farm_pki: FarmPki) -> None:
    async with channel(scheduler, farm_pki.user("alice")) as alice_ch:
        made = await new_request(alice_ch)
        await requests_pb2_grpc.RequestsStub(alice_ch).CloseRequest(
            requests_pb2.CloseRequestRequest(request_id=made.request.id)
        )
    async with channel(scheduler, farm_pki.user("bob")) as bob_ch:
        with pytest.raises(grpc.aio.AioRpcError):
            await requests_pb2_grpc.RequestsStub(bob_ch).GetRequestInfo(
                requests_pb2.GetRequestInfoRequest(request_id=made.request.id)
            )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await audit_pb2_grpc.AuditStub(bob_ch).ListAuditEvents(
                audit_pb2.ListAuditEventsRequest()
            )
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    async with channel(scheduler, farm_pki.admin()) as admin_ch:
        audit = audit_pb2_grpc.AuditStub(admin_ch)
        events = (await audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest())).events
        seen = [(e.actor, e.action, e.target) for e in reversed(events)]
        rid = f"request {made.request.id}"
        assert seen[0] == ("alice", "NewRequest", rid)
        assert ("alice", "CloseRequest", rid) in seen
        assert ("bob", "refused", "GetRequestInfo") in seen
        assert ("bob", "refused", "ListAuditEvents") in seen
        first = await audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=2))
        rest = await audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_token=first.next_page_token)
        )
        assert [e.id for e in [*first.events, *rest.events]] == [e.id for e in events]
