"""The Workers and Superviser services over real gRPC, with stub dryads on loopback."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from boruta.v1 import audit_pb2, audit_pb2_grpc, superviser_pb2, types_pb2, workers_pb2
from boruta_dryad.backends import BackendError
from boruta_dryad.stub import StubDryad
from boruta_dryad.users import UserError
from boruta_scheduler.core import Policy
from farm_kit import Client, Farm, board
from test_requests_grpc import expect_error

S = types_pb2
W = workers_pb2


async def history(client: Client, uuid: str) -> list[tuple[int, int, str]]:
    entries: list[tuple[int, int, str]] = []
    token = ""
    while True:
        reply = await client.workers.ListWorkerHistory(
            W.ListWorkerHistoryRequest(worker_uuid=uuid, page_size=3, page_token=token),
            metadata=client.metadata,
        )
        entries.extend((e.from_state, e.to_state, e.reason) for e in reply.entries)
        token = reply.next_page_token
        if not token:
            return entries


async def list_uuids(client: Client, **fields: object) -> list[str]:
    uuids: list[str] = []
    token = ""
    while True:
        reply = await client.workers.ListWorkers(
            W.ListWorkersRequest(page_size=2, page_token=token, **fields),  # type: ignore[arg-type]
            metadata=client.metadata,
        )
        uuids.extend(w.uuid for w in reply.workers)
        token = reply.next_page_token
        if not token:
            return uuids


async def test_new_worker_registers_into_maintenance_and_is_put_into_service(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1", board="rpi4")], idle=False)
    admin = farm.admin
    info = await admin.worker("w1")
    assert info.state == S.WORKER_STATE_MAINTENANCE
    assert dict(info.caps) == {"board": "rpi4", "UUID": "w1"}
    assert info.dryad_address == dryad.address and info.ssh_address == "127.0.0.1:22"
    assert info.dryad_version == "stub"
    started = await admin.set_state("w1", S.WORKER_STATE_IDLE, "racked")
    assert started.state in (S.WORKER_STATE_PREPARE, S.WORKER_STATE_IDLE)
    await admin.wait_worker("w1", S.WORKER_STATE_IDLE)
    assert await history(admin, "w1") == [
        (S.WORKER_STATE_PREPARE, S.WORKER_STATE_IDLE, "prepared"),
        (S.WORKER_STATE_MAINTENANCE, S.WORKER_STATE_PREPARE, "racked"),
        (S.WORKER_STATE_UNSPECIFIED, S.WORKER_STATE_MAINTENANCE, "registered"),
    ]


async def test_failed_prepare_fails_the_worker_with_the_reason(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1")], idle=False)
    dryad.boards["w1"].fail_prepare = UserError("useradd: disk full")
    admin = farm.admin
    await admin.set_state("w1", S.WORKER_STATE_IDLE)
    failed = await admin.wait_worker("w1", S.WORKER_STATE_FAILED)
    assert failed.reason.startswith("Prepare failed: INTERNAL")
    assert "useradd: disk full" in failed.reason
    assert failed.failures == 1


async def test_stub_boards_fail_with_the_real_dryads_status_codes(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1")])
    dryad.boards["w1"].fail_maintenance = BackendError("STM does not answer")
    admin = farm.admin
    await admin.set_state("w1", S.WORKER_STATE_MAINTENANCE, "reflash")
    failed = await admin.wait_worker("w1", S.WORKER_STATE_FAILED)
    # The dryad's one table: a backend that refuses is FAILED_PRECONDITION, never a code
    # the stub picks for itself.
    assert failed.reason.startswith("PutInMaintenance failed: FAILED_PRECONDITION")
    assert "STM does not answer" in failed.reason


async def test_maintenance_reaches_the_board_and_fails_the_running_request(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1")])
    c = farm.client()
    r = await c.new()
    admin = farm.admin
    await admin.set_state("w1", S.WORKER_STATE_MAINTENANCE, "reflashing the DUT")
    await admin.wait_worker("w1", S.WORKER_STATE_MAINTENANCE)
    assert dryad.boards["w1"].maintenance_messages == ["reflashing the DUT"]
    info = await c.info(r.id)
    assert info.state == S.REQUEST_STATE_FAILED
    assert "put into maintenance: reflashing the DUT" in info.reason


async def test_maintenance_after_the_job_waits_for_the_request_to_end(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1")])
    c = farm.client()
    r = await c.new()
    admin = farm.admin
    worker = await admin.set_state("w1", S.WORKER_STATE_MAINTENANCE, "new camera", after_job=True)
    assert (worker.state, worker.drain_reason) == (S.WORKER_STATE_RUNNING, "new camera")
    assert (await c.info(r.id)).state == S.REQUEST_STATE_IN_PROGRESS
    assert dryad.boards["w1"].maintenance_messages == []
    # IDLE calls the drain off; asked again, it drains again.
    assert (await admin.set_state("w1", S.WORKER_STATE_IDLE)).drain_reason == ""
    await admin.set_state("w1", S.WORKER_STATE_MAINTENANCE, "new camera", after_job=True)
    assert (await c.close(r.id)).state == S.REQUEST_STATE_DONE
    info = await admin.wait_worker("w1", S.WORKER_STATE_MAINTENANCE)
    assert (info.reason, info.drain_reason) == ("new camera", "")
    assert dryad.boards["w1"].maintenance_messages == ["new camera"]
    events = await audit_pb2_grpc.AuditStub(admin.channel).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=100), metadata=admin.metadata
    )
    details = [e.detail for e in events.events if e.action == "SetState"]
    assert "MAINTENANCE after its job: new camera" in details


async def test_set_state_errors(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    c = farm.client()
    await c.new()
    admin = farm.admin
    precondition = grpc.StatusCode.FAILED_PRECONDITION
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_error(admin.set_state("w1", S.WORKER_STATE_IDLE), precondition, "RUNNING")
    await expect_error(
        admin.set_state("w1", S.WORKER_STATE_RUNNING), invalid, "IDLE or MAINTENANCE"
    )
    await expect_error(admin.set_state("w1", 99), invalid, "got 99")
    await expect_error(
        admin.set_state("nope", S.WORKER_STATE_IDLE),
        grpc.StatusCode.NOT_FOUND,
        "'nope' is not registered",
    )
    await expect_error(
        admin.workers.Deregister(W.DeregisterRequest(worker_uuid="w1"), metadata=admin.metadata),
        precondition,
        "MAINTENANCE",
    )
    await expect_error(
        admin.workers.SetGroups(
            W.SetGroupsRequest(worker_uuid="w1", groups=["bad group"]), metadata=admin.metadata
        ),
        invalid,
        "group",
    )
    assert (await admin.worker("w1")).state == S.WORKER_STATE_RUNNING


async def test_groups_decide_who_gets_a_worker(farm: Farm) -> None:
    await farm.add_dryad([board("w1", board="x")])
    admin = farm.admin
    reply = await admin.workers.SetGroups(
        W.SetGroupsRequest(worker_uuid="w1", groups=["team-a"]), metadata=admin.metadata
    )
    assert list(reply.worker.groups) == ["team-a"]
    await expect_error(
        farm.client("bob", ["team-b"]).new({"board": "x"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "team-b",
    )
    r = await farm.client("ann", ["team-a"]).new({"board": "x"})
    assert r.state == S.REQUEST_STATE_IN_PROGRESS


async def test_deregister_and_watch_sees_the_removal(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1")], idle=False)
    assert dryad.link is not None
    await dryad.link.stop()  # a live dryad would register w1 again at its next heartbeat
    admin = farm.admin
    stream = admin.workers.WatchWorkers(W.WatchWorkersRequest(), metadata=admin.metadata)
    await stream.initial_metadata()
    await admin.workers.Deregister(W.DeregisterRequest(worker_uuid="w1"), metadata=admin.metadata)
    event = await asyncio.wait_for(stream.read(), 30)
    stream.cancel()
    assert event.removed and event.worker.uuid == "w1"
    await expect_error(admin.worker("w1"), grpc.StatusCode.NOT_FOUND)


async def test_list_workers_filters_and_pages(farm: Farm) -> None:
    await farm.add_dryad(
        [
            board("a1", board="rpi4", cam="yes"),
            board("a2", board="rpi4"),
            board("b1", board="odroid"),
            board("b2", board="odroid", cam="yes"),
        ],
        idle=False,
    )
    admin = farm.admin
    await admin.set_state("a2", S.WORKER_STATE_IDLE)
    await admin.wait_worker("a2", S.WORKER_STATE_IDLE)
    await admin.workers.SetGroups(
        W.SetGroupsRequest(worker_uuid="b2", groups=["lab"]), metadata=admin.metadata
    )
    assert await list_uuids(admin) == ["a1", "a2", "b1", "b2"]
    assert await list_uuids(admin, descending=True) == ["b2", "b1", "a2", "a1"]
    assert await list_uuids(admin, filter=W.WorkerFilter(caps={"cam": "yes"})) == ["a1", "b2"]
    assert await list_uuids(admin, filter=W.WorkerFilter(groups=["lab"])) == ["b2"]
    assert await list_uuids(admin, filter=W.WorkerFilter(states=[S.WORKER_STATE_IDLE])) == ["a2"]
    by_state = await list_uuids(admin, sort_by=W.WORKER_SORT_FIELD_STATE)
    assert by_state == ["a1", "b1", "b2", "a2"]  # MAINTENANCE (1) before IDLE (2)


async def test_superviser_errors(farm: Farm) -> None:
    dryad_client = farm.client("dryad", role="dryad")
    sup = dryad_client.superviser
    meta = dryad_client.metadata
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_error(
        sup.Register(
            superviser_pb2.RegisterRequest(
                caps={"board": "x"}, dryad_address="h:1", ssh_address="h:22"
            ),
            metadata=meta,
        ),
        invalid,
        "UUID",
    )
    await expect_error(
        sup.Register(
            superviser_pb2.RegisterRequest(
                caps={"UUID": "w9"}, dryad_address="0.0.0.0:7175", ssh_address="h:22"
            ),
            metadata=meta,
        ),
        invalid,
        "wildcard",
    )
    await expect_error(
        sup.Heartbeat(superviser_pb2.HeartbeatRequest(worker_uuid="ghost"), metadata=meta),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(farm.admin.worker("w9"), grpc.StatusCode.NOT_FOUND)


async def test_set_fail_keeps_the_reason_and_fails_the_job(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    c = farm.client()
    r = await c.new()
    sup = farm.client("dryad", role="dryad")
    await sup.superviser.SetFail(
        superviser_pb2.SetFailRequest(worker_uuid="w1", reason="DUT does not boot"),
        metadata=sup.metadata,
    )
    info = await farm.admin.worker("w1")
    assert (info.state, info.reason, info.failures) == (
        S.WORKER_STATE_FAILED,
        "DUT does not boot",
        1,
    )
    assert (await c.info(r.id)).state == S.REQUEST_STATE_FAILED


async def test_reregister_after_dryad_restart_fails_the_job(farm: Farm) -> None:
    first = await farm.add_dryad([board("w1")])
    c = farm.client()
    r = await c.new()
    await first.stop()
    restarted = StubDryad(farm.address, [board("w1")], instance_id="after-restart")
    await restarted.start()
    farm.dryads.append(restarted)
    failed = await c.wait_request(r.id, S.REQUEST_STATE_FAILED)
    assert "restarted" in failed.reason
    await farm.admin.wait_worker("w1", S.WORKER_STATE_IDLE)


async def test_heartbeat_and_register_replies_name_the_job_users_to_keep(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1")])
    sup = farm.client("dryad", role="dryad")
    c = farm.client()
    r = await c.new()
    access = (await c.acquire(r.id)).access

    async def verdict() -> superviser_pb2.HeartbeatResponse:
        return await sup.superviser.Heartbeat(
            superviser_pb2.HeartbeatRequest(worker_uuid="w1"), metadata=sup.metadata
        )

    running = await verdict()
    assert running.HasField("live_job_users")
    assert list(running.live_job_users.usernames) == [access.username]
    await sup.superviser.SetFail(
        superviser_pb2.SetFailRequest(worker_uuid="w1", reason="cable"), metadata=sup.metadata
    )
    failed = await verdict()
    assert failed.HasField("live_job_users") and not failed.live_job_users.usernames
    worker = await farm.admin.worker("w1")
    again = await sup.superviser.Register(
        superviser_pb2.RegisterRequest(
            caps=dict(worker.caps),
            dryad_address=worker.dryad_address,
            ssh_address=worker.ssh_address,
            instance_id=dryad.instance_id,
        ),
        metadata=sup.metadata,
    )
    assert again.HasField("live_job_users") and not again.live_job_users.usernames


async def test_heartbeat_carries_host_status(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1")], idle=False)
    await dryad.wait_heartbeats("w1", 1)
    info = await farm.admin.worker("w1")
    assert info.host_status.load_1m == pytest.approx(0.1)
    assert info.last_seen.ToNanoseconds() > info.registered_at.ToNanoseconds()


class TestHeartbeats:
    @pytest.fixture
    def policy(self) -> Policy:
        return Policy(heartbeat_timeout=1.0)

    async def test_silent_worker_fails_with_heartbeat_lost_and_its_job_fails(
        self, farm: Farm
    ) -> None:
        dryad = await farm.add_dryad([board("w1"), board("w2")])
        c = farm.client()
        r = await c.new({"UUID": "w1"})
        dryad.boards["w1"].silent = True
        failed = await farm.admin.wait_worker("w1", S.WORKER_STATE_FAILED)
        assert failed.reason.startswith("heartbeat lost")
        request = await c.info(r.id)
        assert request.state == S.REQUEST_STATE_FAILED
        assert "heartbeat lost" in request.reason
        assert (await farm.admin.worker("w2")).state == S.WORKER_STATE_IDLE
