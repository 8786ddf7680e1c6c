"""Every RPC of the scheduler, called as anonymous, a user, another user, an admin, the
dryad of the worker and a dryad of another worker, over TLS: each cell is allowed or
refused exactly as docs/security.md says."""

from __future__ import annotations

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
from boruta_scheduler.config import SchedulerConfig, ServerConfig
from boruta_scheduler.rpc.server import Scheduler
from pki_kit import FarmPki

CALLERS = ["anonymous", "alice", "bob", "admin", "dryad", "other dryad"]
DENIED = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNAVAILABLE,  # no certificate: refused at the handshake
}
A = "allowed"
D = "denied"
PEOPLE = {"anonymous": D, "alice": A, "bob": A, "admin": A, "dryad": D, "other dryad": D}
OWNER = {"anonymous": D, "alice": A, "bob": D, "admin": A, "dryad": D, "other dryad": D}
ADMIN = {"anonymous": D, "alice": D, "bob": D, "admin": A, "dryad": D, "other dryad": D}
DRYAD = {"anonymous": D, "alice": D, "bob": D, "admin": D, "dryad": A, "other dryad": D}


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
# (name, expected per caller, call with the id of a fresh WAITING request of alice's)
MATRIX: list[tuple[str, dict[str, str], Call]] = [
    (
        "NewRequest",
        PEOPLE,
        lambda s, r: s.requests.NewRequest(R.NewRequestRequest(caps={"board": "rpi4"})),
    ),
    (
        "GetRequestInfo",
        OWNER,
        lambda s, r: s.requests.GetRequestInfo(R.GetRequestInfoRequest(request_id=r)),
    ),
    (
        "ListRequests",
        OWNER,
        lambda s, r: s.requests.ListRequests(
            R.ListRequestsRequest(filter=R.RequestFilter(owners=["alice"]))
        ),
    ),
    (
        "UpdateRequest",
        OWNER,
        lambda s, r: s.requests.UpdateRequest(R.UpdateRequestRequest(request_id=r, priority=9)),
    ),
    (
        "ProlongAccess",
        OWNER,
        lambda s, r: s.requests.ProlongAccess(R.ProlongAccessRequest(request_id=r)),
    ),
    (
        "AcquireWorker",
        OWNER,
        lambda s, r: s.requests.AcquireWorker(R.AcquireWorkerRequest(request_id=r), timeout=0.3),
    ),
    (
        "WatchRequests",
        OWNER,
        lambda s, r: first_of(
            s.requests.WatchRequests(
                R.WatchRequestsRequest(
                    filter=R.RequestFilter(owners=["alice"]), include_current=True
                )
            )
        ),
    ),
    (
        "CloseRequest",
        OWNER,
        lambda s, r: s.requests.CloseRequest(R.CloseRequestRequest(request_id=r)),
    ),
    ("ListWorkers", PEOPLE, lambda s, r: s.workers.ListWorkers(W.ListWorkersRequest())),
    (
        "GetWorkerInfo",
        PEOPLE,
        lambda s, r: s.workers.GetWorkerInfo(W.GetWorkerInfoRequest(worker_uuid="w1")),
    ),
    (
        "ListWorkerHistory",
        PEOPLE,
        lambda s, r: s.workers.ListWorkerHistory(W.ListWorkerHistoryRequest(worker_uuid="w1")),
    ),
    (
        "WatchWorkers",
        PEOPLE,
        lambda s, r: first_of(s.workers.WatchWorkers(W.WatchWorkersRequest(include_current=True))),
    ),
    ("SetGroups", ADMIN, lambda s, r: s.workers.SetGroups(W.SetGroupsRequest(worker_uuid="w1"))),
    (
        "SetState",
        ADMIN,
        lambda s, r: s.workers.SetState(
            W.SetStateRequest(worker_uuid="w1", state=types_pb2.WORKER_STATE_MAINTENANCE)
        ),
    ),
    (
        "Deregister",
        ADMIN,
        lambda s, r: s.workers.Deregister(W.DeregisterRequest(worker_uuid="no-such-worker")),
    ),
    ("IssueToken", ADMIN, lambda s, r: s.tokens.IssueToken(T.IssueTokenRequest(user="ci"))),
    ("ListTokens", ADMIN, lambda s, r: s.tokens.ListTokens(T.ListTokensRequest())),
    ("RevokeToken", ADMIN, lambda s, r: s.tokens.RevokeToken(T.RevokeTokenRequest(token_id=99))),
    ("ListAuditEvents", ADMIN, lambda s, r: s.audit.ListAuditEvents(AU.ListAuditEventsRequest())),
    ("Register", DRYAD, lambda s, r: s.superviser.Register(register("w1"))),
    (
        "Heartbeat",
        DRYAD,
        lambda s, r: s.superviser.Heartbeat(superviser_pb2.HeartbeatRequest(worker_uuid="w1")),
    ),
    (
        "SetFail",
        DRYAD,
        lambda s, r: s.superviser.SetFail(
            superviser_pb2.SetFailRequest(worker_uuid="w1", reason="test")
        ),
    ),
]


@pytest.fixture
async def farm(
    tmp_path: Path,
) -> AsyncIterator[tuple[Scheduler, dict[str, TlsFiles | None], FarmPki]]:
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
    callers: dict[str, TlsFiles | None] = {
        "anonymous": None,
        "alice": farm_pki.user("alice"),
        "bob": farm_pki.user("bob"),
        "admin": farm_pki.admin(),
        "dryad": farm_pki.dryad("lab-pc", "w1"),
        "other dryad": farm_pki.dryad("other-pc", "w2"),
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
    farm: tuple[Scheduler, dict[str, TlsFiles | None], FarmPki],
) -> None:
    scheduler, callers, farm_pki = farm
    ca = farm_pki.scheduler().ca
    channels = {who: open_channel(scheduler.port, files, ca) for who, files in callers.items()}
    stubs = {who: Stubs(ch) for who, ch in channels.items()}
    await stubs["dryad"].superviser.Register(register("w1"), timeout=10)
    seen: dict[tuple[str, str], str] = {}
    expected: dict[tuple[str, str], str] = {}
    for name, rule, call in MATRIX:
        for who in CALLERS:
            fresh = await stubs["alice"].requests.NewRequest(
                R.NewRequestRequest(caps={"board": "rpi4"}), timeout=10
            )
            expected[name, who] = rule[who]
            try:
                await call(stubs[who], fresh.request.id)
                seen[name, who] = A
            except grpc.aio.AioRpcError as error:
                seen[name, who] = D if error.code() in DENIED else A
    for ch in channels.values():
        await ch.close()
    wrong = {cell: seen[cell] for cell in expected if seen[cell] != expected[cell]}
    assert wrong == {}, f"cells that differ from the rules (got): {wrong}"
    assert len(seen) == len(MATRIX) * len(CALLERS) == 22 * 6
