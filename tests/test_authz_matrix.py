"""Every RPC of the scheduler, called as anonymous, a user, another user, an admin, the
dryad of the worker and a dryad of another worker, over TLS: each cell is allowed or
refused, and audited, exactly as the table in app/authz.py says; the API has no RPC the
table misses, and docs/security.md shows the table as it is."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
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
    types_pb2,
    workers_pb2,
    workers_pb2_grpc,
)
from boruta_scheduler.app.authz import (
    RULES,
    SERVED_ELSEWHERE,
    Caller,
    Recorded,
    Refusal,
    allows,
    role_table,
)
from boruta_scheduler.config import SchedulerConfig, ServerConfig
from boruta_scheduler.rpc.server import Scheduler
from google.protobuf.timestamp_pb2 import Timestamp
from pki_kit import FarmPki

ROOT = Path(__file__).resolve().parents[1]
# Who each caller is, by the names on their certificates.
NAMES = {
    Caller.ANONYMOUS: "anonymous",
    Caller.OWNER: "alice",
    Caller.OTHER_USER: "bob",
    Caller.ADMIN: "root",
    Caller.DRYAD: "lab-pc",
    Caller.OTHER_DRYAD: "other-pc",
}
DENIED = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNAVAILABLE,  # no certificate: refused at the handshake
}


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.requests = requests_pb2_grpc.RequestsStub(channel)
        self.workers = workers_pb2_grpc.WorkersStub(channel)
        self.superviser = superviser_pb2_grpc.SuperviserStub(channel)
        self.tokens = tokens_pb2_grpc.TokensStub(channel)
        self.audit = audit_pb2_grpc.AuditStub(channel)


Call = Callable[[Stubs, int], Awaitable[Any]]


async def first_of(stream: Any) -> Any:
    async for item in stream:
        stream.cancel()
        return item
    return None


def register(uuid: str) -> superviser_pb2.RegisterRequest:
    return superviser_pb2.RegisterRequest(
        caps={"UUID": uuid, "board": "rpi4"},
        dryad_address="127.0.0.1:7175",
        ssh_address="127.0.0.1:22",
        instance_id="i1",
    )


AU = audit_pb2
R = requests_pb2
T = tokens_pb2
W = workers_pb2
# How to make each call, given the id of a fresh WAITING request of alice's (the user);
# the worker is w1, the board of "the board's dryad". In this order.
CALLS: dict[str, Call] = {
    "Requests.NewRequest": lambda s, r: s.requests.NewRequest(
        R.NewRequestRequest(caps={"board": "rpi4"})
    ),
    "Requests.GetRequestInfo": lambda s, r: s.requests.GetRequestInfo(
        R.GetRequestInfoRequest(request_id=r)
    ),
    "Requests.ListRequests": lambda s, r: s.requests.ListRequests(
        R.ListRequestsRequest(filter=R.RequestFilter(owners=["alice"]))
    ),
    "Requests.UpdateRequest": lambda s, r: s.requests.UpdateRequest(
        R.UpdateRequestRequest(request_id=r, priority=9)
    ),
    "Requests.ProlongAccess": lambda s, r: s.requests.ProlongAccess(
        R.ProlongAccessRequest(request_id=r)
    ),
    "Requests.AcquireWorker": lambda s, r: s.requests.AcquireWorker(
        R.AcquireWorkerRequest(request_id=r), timeout=0.3
    ),
    "Requests.WatchRequests": lambda s, r: first_of(
        s.requests.WatchRequests(
            R.WatchRequestsRequest(filter=R.RequestFilter(owners=["alice"]), include_current=True)
        )
    ),
    "Requests.GetUsage": lambda s, r: s.requests.GetUsage(
        R.GetUsageRequest(since=Timestamp(seconds=1), owner="alice")
    ),
    "Requests.CloseRequest": lambda s, r: s.requests.CloseRequest(
        R.CloseRequestRequest(request_id=r)
    ),
    "Workers.ListWorkers": lambda s, r: s.workers.ListWorkers(W.ListWorkersRequest()),
    "Workers.GetWorkerInfo": lambda s, r: s.workers.GetWorkerInfo(
        W.GetWorkerInfoRequest(worker_uuid="w1")
    ),
    "Workers.ListWorkerHistory": lambda s, r: s.workers.ListWorkerHistory(
        W.ListWorkerHistoryRequest(worker_uuid="w1")
    ),
    "Workers.WatchWorkers": lambda s, r: first_of(
        s.workers.WatchWorkers(W.WatchWorkersRequest(include_current=True))
    ),
    "Workers.WhoAmI": lambda s, r: s.workers.WhoAmI(W.WhoAmIRequest()),
    "Workers.SetGroups": lambda s, r: s.workers.SetGroups(W.SetGroupsRequest(worker_uuid="w1")),
    "Workers.SetState": lambda s, r: s.workers.SetState(
        W.SetStateRequest(worker_uuid="w1", state=types_pb2.WORKER_STATE_MAINTENANCE)
    ),
    "Workers.Deregister": lambda s, r: s.workers.Deregister(
        W.DeregisterRequest(worker_uuid="no-such-worker")
    ),
    "Workers.CreateStack": lambda s, r: s.workers.CreateStack(
        W.CreateStackRequest(name="bench", worker_uuids=["w1", "no-such-worker"])
    ),
    "Workers.ListStacks": lambda s, r: s.workers.ListStacks(W.ListStacksRequest()),
    "Workers.ListAllocations": lambda s, r: s.workers.ListAllocations(W.ListAllocationsRequest()),
    "Workers.DeleteStack": lambda s, r: s.workers.DeleteStack(
        W.DeleteStackRequest(name="no-such-stack")
    ),
    "Tokens.IssueToken": lambda s, r: s.tokens.IssueToken(T.IssueTokenRequest(user="ci")),
    "Tokens.ListTokens": lambda s, r: s.tokens.ListTokens(T.ListTokensRequest()),
    "Tokens.RevokeToken": lambda s, r: s.tokens.RevokeToken(T.RevokeTokenRequest(token_id=99)),
    "Audit.ListAuditEvents": lambda s, r: s.audit.ListAuditEvents(AU.ListAuditEventsRequest()),
    "Superviser.Register": lambda s, r: s.superviser.Register(register("w1")),
    "Superviser.Heartbeat": lambda s, r: s.superviser.Heartbeat(
        superviser_pb2.HeartbeatRequest(worker_uuid="w1")
    ),
    "Superviser.SetFail": lambda s, r: s.superviser.SetFail(
        superviser_pb2.SetFailRequest(worker_uuid="w1", reason="test")
    ),
}
RULE = {
    f"{service.rpartition('.')[2]}.{method}": rule
    for service, methods in RULES.items()
    for method, rule in methods.items()
}


def api_methods() -> dict[str, set[str]]:
    """Every method of every service the API's proto files define, by service."""
    found: dict[str, set[str]] = {}
    for proto in sorted((ROOT / "protos" / "boruta" / "v1").glob("*.proto")):
        module = importlib.import_module(f"boruta.v1.{proto.stem}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            found[service.full_name] = {m.name for m in service.methods}
    return found


def test_every_rpc_of_the_api_has_a_rule_and_a_call_here() -> None:
    api = api_methods()
    assert "boruta.v1.Requests" in api and "boruta.v1.Dryad" in api  # the walk finds them
    served = {
        service: methods for service, methods in api.items() if service not in SERVED_ELSEWHERE
    }
    assert {s: set(m) for s, m in RULES.items()} == served
    assert set(SERVED_ELSEWHERE) <= set(api)
    assert set(CALLS) == set(RULE)


def test_security_md_shows_the_table() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    begin, end = "<!-- role table: app/authz.py role_table() -->\n", "<!-- end of role table -->"
    shown = doc[doc.index(begin) + len(begin) : doc.index(end)]
    assert shown == role_table(), f"docs/security.md's role table should read:\n{role_table()}"


@pytest.fixture
async def farm(
    tmp_path: Path,
) -> AsyncIterator[tuple[Scheduler, dict[Caller, TlsFiles | None], FarmPki]]:
    farm_pki = FarmPki(tmp_path / "pki")
    files = farm_pki.scheduler()
    scheduler = Scheduler(
        SchedulerConfig(
            server=ServerConfig(
                listen="127.0.0.1:0",
                data_dir=str(tmp_path / "state"),
                tls_ca=files.ca,
                tls_cert=files.cert,
                tls_key=files.key,
            )
        )
    )
    await scheduler.start()
    callers: dict[Caller, TlsFiles | None] = {
        Caller.ANONYMOUS: None,
        Caller.OWNER: farm_pki.user(NAMES[Caller.OWNER]),
        Caller.OTHER_USER: farm_pki.user(NAMES[Caller.OTHER_USER]),
        Caller.ADMIN: farm_pki.admin(NAMES[Caller.ADMIN]),
        Caller.DRYAD: farm_pki.dryad(NAMES[Caller.DRYAD], "w1"),
        Caller.OTHER_DRYAD: farm_pki.dryad(NAMES[Caller.OTHER_DRYAD], "w2"),
    }
    yield scheduler, callers, farm_pki
    await scheduler.stop()


def open_channel(port: int, files: TlsFiles | None, ca: str) -> grpc.aio.Channel:
    address = f"127.0.0.1:{port}"
    if files is None:  # TLS that trusts the farm, but shows no certificate
        return grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        )
    return grpc.aio.secure_channel(address, channel_credentials(files))


async def test_authorization_matrix(
    farm: tuple[Scheduler, dict[Caller, TlsFiles | None], FarmPki],
) -> None:
    scheduler, callers, farm_pki = farm
    ca = farm_pki.scheduler().ca
    channels = {who: open_channel(scheduler.port, files, ca) for who, files in callers.items()}
    stubs = {who: Stubs(ch) for who, ch in channels.items()}
    await stubs[Caller.DRYAD].superviser.Register(register("w1"), timeout=10)
    seen: dict[tuple[str, Caller], bool] = {}
    succeeded: set[str] = set()
    for name, call in CALLS.items():
        for who in Caller:
            fresh = await stubs[Caller.OWNER].requests.NewRequest(
                R.NewRequestRequest(caps={"board": "rpi4"}), timeout=10
            )
            try:
                await call(stubs[who], fresh.request.id)
                seen[name, who] = True
                succeeded.add(name)
            except grpc.aio.AioRpcError as error:
                seen[name, who] = error.code() not in DENIED
    events = await all_events(stubs[Caller.ADMIN])
    for ch in channels.values():
        await ch.close()
    expected = {(name, who): allows(RULE[name], who) for name in CALLS for who in Caller}
    wrong = {cell: seen[cell] for cell in expected if seen[cell] != expected[cell]}
    assert wrong == {}, f"cells that differ from the table (got): {wrong}"
    assert len(seen) == len(RULE) * len(Caller)

    # Refusals of callers who proved who they are are recorded where the table says.
    refused = {(e.actor, e.target) for e in events if e.action == "refused"}
    expected_refused = {
        (NAMES[who], name.partition(".")[2])
        for (name, who), allowed in expected.items()
        if not allowed and who is not Caller.ANONYMOUS
        if RULE[name].refusal is Refusal.RECORDED
    }
    assert refused == expected_refused
    # A call that succeeded leaves an event of its own exactly where the table says.
    actions = {e.action for e in events}
    recorded = {n for n in succeeded if RULE[n].recorded is not Recorded.NOTHING}
    assert {n for n in succeeded if n.partition(".")[2] in actions} == recorded
    assert {"Requests.NewRequest", "Workers.SetState", "Tokens.IssueToken"} <= recorded


async def all_events(admin: Stubs) -> list[audit_pb2.AuditEvent]:
    events: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await admin.audit.ListAuditEvents(
            AU.ListAuditEventsRequest(page_size=1000, page_token=token), timeout=10
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events
