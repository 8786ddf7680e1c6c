"""Requests of several boards (profiles) over real gRPC on loopback, against a scheduler on
SQLite with its tunnels: all boards at once, one access each, close and failure of the
whole set, refusals, invalidation and a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from boruta.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    requests_pb2,
    superviser_pb2,
    types_pb2,
    workers_pb2,
)
from conftest import farm_on
from farm_kit import Client, Farm, board
from test_requests_grpc import all_requests, expect_error, fake_sshd, reason_of

S = types_pb2
WAITING, IN_PROGRESS = S.REQUEST_STATE_WAITING, S.REQUEST_STATE_IN_PROGRESS
PHONE_AND_RELAY = [
    S.Profile(name="dut", caps={"board": "phone"}),
    S.Profile(name="relay", caps={"board": "relay"}),
]


async def new(client: Client, profiles: list[types_pb2.Profile], **fields: object) -> S.RequestInfo:
    reply = await client.requests.NewRequest(
        requests_pb2.NewRequestRequest(profiles=profiles, **fields),  # type: ignore[arg-type]
        metadata=client.metadata,
    )
    return reply.request


async def test_two_boards_each_with_their_own_access_and_tunnel(farm: Farm) -> None:
    sshd = await fake_sshd()
    ssh = f"127.0.0.1:{sshd.sockets[0].getsockname()[1]}"
    phones = await farm.add_dryad([board("p1", board="phone")], ssh_address=ssh)
    relays = await farm.add_dryad([board("r1", board="relay")], ssh_address=ssh)
    alice = farm.client("alice")
    created = await new(alice, PHONE_AND_RELAY)
    assert created.state == IN_PROGRESS
    assert [(p.name, dict(p.caps)) for p in created.profiles] == [
        ("dut", {"board": "phone"}),
        ("relay", {"board": "relay"}),
    ]
    assert [j.worker_uuid for j in created.jobs] == ["p1", "r1"]
    assert created.job == created.jobs[0] and dict(created.caps) == {"board": "phone"}

    acquired = await alice.acquire(created.id)
    assert [b.name for b in acquired.boards] == ["dut", "relay"]
    assert [b.job.worker_uuid for b in acquired.boards] == ["p1", "r1"]
    # An old client reads the first board from the single access field.
    assert acquired.access == acquired.boards[0].access
    dut, relay = (b.access for b in acquired.boards)
    assert dut.username == phones.boards["p1"].last_username
    assert relay.username == relays.boards["r1"].last_username
    assert dut.private_key_pem != relay.private_key_pem
    assert dut.port != relay.port and 0 not in (dut.port, relay.port)
    connections = []
    for access in (dut, relay):
        reader, writer = await asyncio.open_connection(access.host, access.port)
        assert await reader.readline() == b"SSH-2.0-board\r\n"
        connections.append((reader, writer))

    # ProlongAccess moves both jobs; CloseRequest ends both and cuts both tunnels.
    prolonged = await alice.requests.ProlongAccess(
        requests_pb2.ProlongAccessRequest(request_id=created.id), metadata=alice.metadata
    )
    info = await alice.info(created.id)
    assert [j.timeout_at for j in info.jobs] == [prolonged.job.timeout_at] * 2
    assert [j.prolong_count for j in info.jobs] == [1, 1]
    done = await alice.close(created.id)
    assert done.state == S.REQUEST_STATE_DONE and len(done.jobs) == 2
    admin = farm.admin
    events = await audit_pb2_grpc.AuditStub(admin.channel).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=100), metadata=admin.metadata
    )
    details = {e.action: e.detail for e in events.events if e.target == f"request {created.id}"}
    assert details["NewRequest"].startswith("profiles dut: board=phone; relay: board=relay")
    assert details["AcquireWorker"] == (
        f"access to worker p1 as {dut.username}, worker r1 as {relay.username}"
    )
    for reader, writer in connections:
        assert await reader.read() == b""
        writer.close()
    sshd.close()
    for uuid in ("p1", "r1"):
        await farm.admin.wait_worker(uuid, S.WORKER_STATE_IDLE)


async def test_one_failed_board_fails_the_request_and_frees_the_other(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone"), board("r1", board="relay")])
    alice = farm.client("alice")
    created = await new(alice, PHONE_AND_RELAY)
    assert created.state == IN_PROGRESS
    sup = farm.client("dryad", role="dryad")
    await sup.superviser.SetFail(
        superviser_pb2.SetFailRequest(worker_uuid="r1", reason="relay stuck"),
        metadata=sup.metadata,
    )
    failed = await alice.wait_request(created.id, S.REQUEST_STATE_FAILED)
    assert "r1 failed: relay stuck" in failed.reason
    await expect_error(alice.acquire(created.id), grpc.StatusCode.FAILED_PRECONDITION, "FAILED")
    # The phone is released: prepared again and free for the next request.
    await farm.admin.wait_worker("p1", S.WORKER_STATE_IDLE)
    assert (await farm.admin.worker("r1")).state == S.WORKER_STATE_FAILED
    assert (await alice.new({"board": "phone"})).job.worker_uuid == "p1"


async def test_a_waiting_set_says_which_boards_are_reserved_for_it(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone"), board("r1", board="relay")])
    alice = farm.client("alice")
    relay = await alice.new({"board": "relay"})
    assert relay.state == IN_PROGRESS
    pair = await new(alice, PHONE_AND_RELAY, priority=5)
    why = (await alice.info(pair.id)).pending_reason
    assert why.code == S.PENDING_REASON_CODE_WAITING_FOR_SET
    assert list(why.reserved) == ["p1"] and why.requests_ahead == 0
    assert "1 of them reserved for it" in why.message
    job = relay.job
    assert why.expected_start == job.timeout_at and why.latest_start == job.max_timeout_at
    boards = {b.uuid: (b.state, b.held_by, b.reserved_for) for b in why.boards}
    assert boards == {
        "p1": (S.WORKER_STATE_IDLE, 0, pair.id),
        "r1": (S.WORKER_STATE_RUNNING, relay.id, 0),
    }
    listed = {r.id: r for r in await all_requests(alice)}
    assert listed[pair.id].pending_reason == why
    await alice.close(relay.id)
    assert not (await alice.wait_request(pair.id, IN_PROGRESS)).HasField("pending_reason")


async def test_impossible_sets_are_refused_at_once_and_busy_ones_with_no_wait(
    farm: Farm,
) -> None:
    await farm.add_dryad([board("p1", board="phone"), board("r1", board="relay")])
    alice = farm.client("alice")
    two_phones = [S.Profile(caps={"board": "phone"}), S.Profile(caps={"board": "phone"})]
    try:
        await new(alice, two_phones)
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "NO_CAPABLE_WORKER"
        assert "a different one for each of the 2 profiles" in (error.details() or "")
    else:
        raise AssertionError("two phones from a farm of one were not refused")
    assert await all_requests(alice) == []
    running = await alice.new({"board": "relay"})
    try:
        await new(alice, PHONE_AND_RELAY, no_wait=True)
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(error) == "BUSY"
    else:
        raise AssertionError("no_wait was not refused while the relay is taken")
    assert [r.id for r in await all_requests(alice)] == [running.id]
    # Queued instead, it waits holding nothing, and gets both once the relay is free.
    waiting = await new(alice, PHONE_AND_RELAY)
    assert waiting.state == WAITING and not waiting.jobs
    assert (await farm.admin.worker("p1")).state == S.WORKER_STATE_IDLE
    await alice.close(running.id)
    started = await alice.wait_request(waiting.id, IN_PROGRESS)
    assert [j.worker_uuid for j in started.jobs] == ["p1", "r1"]


async def test_bad_profiles_are_invalid_argument(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone")])
    alice = farm.client("alice")
    for fields, fragment in [
        ({"caps": {"board": "phone"}, "profiles": PHONE_AND_RELAY}, "not both"),
        ({"profiles": [S.Profile(name="a"), S.Profile(name="a")]}, "given twice"),
        ({"profiles": [S.Profile(name="bad name")]}, "letters, digits"),
        ({"profiles": [S.Profile()] * 17}, "1 to 16 boards"),
    ]:
        call = alice.requests.NewRequest(
            requests_pb2.NewRequestRequest(**fields),  # type: ignore[arg-type]
            metadata=alice.metadata,
        )
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, fragment)
    assert await all_requests(alice) == []


async def test_deregistering_the_last_possible_set_makes_the_request_invalid(
    farm: Farm,
) -> None:
    dryad = await farm.add_dryad(
        [board("p1", board="phone"), board("r1", board="relay"), board("r2", board="relay")],
        idle=False,
    )
    assert dryad.link is not None
    await dryad.link.stop()  # a live dryad would register r1 and r2 again at a heartbeat
    alice = farm.client("alice")
    waiting = await new(alice, PHONE_AND_RELAY)
    admin = farm.admin
    for uuid in ("r2", "r1"):
        await admin.workers.Deregister(
            workers_pb2.DeregisterRequest(worker_uuid=uuid), metadata=admin.metadata
        )
        if uuid == "r2":
            assert (await alice.info(waiting.id)).state == WAITING
    info = await alice.info(waiting.id)
    assert info.state == S.REQUEST_STATE_INVALID
    assert "r1 was deregistered" in info.reason


async def test_a_restart_keeps_running_and_waiting_sets(tmp_path: Path) -> None:
    boards = [board("p1", board="phone"), board("r1", board="relay")]
    async with farm_on(tmp_path) as farm:
        dryad = await farm.add_dryad(boards)
        alice = farm.client("alice")
        running = await new(alice, PHONE_AND_RELAY)
        before = await alice.acquire(running.id)
        waiting = await new(alice, PHONE_AND_RELAY)
        assert waiting.state == WAITING
    async with farm_on(tmp_path) as farm:
        alice = farm.client("alice")
        restored = await alice.info(running.id)
        assert restored.state == IN_PROGRESS
        assert [j.worker_uuid for j in restored.jobs] == ["p1", "r1"]
        # The same dryad process comes back (same instance): the jobs and keys survive.
        await farm.add_dryad(boards, idle=False, instance_id=dryad.instance_id)
        after = await alice.acquire(running.id)
        assert [b.name for b in after.boards] == ["dut", "relay"]
        assert [b.access.private_key_pem for b in after.boards] == [
            b.access.private_key_pem for b in before.boards
        ]
        assert (await alice.info(waiting.id)).state == WAITING
        await alice.close(running.id)
        started = await alice.wait_request(waiting.id, IN_PROGRESS)
        assert [j.worker_uuid for j in started.jobs] == ["p1", "r1"]


async def test_a_retried_request_of_profiles_makes_one_request(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone"), board("r1", board="relay")], idle=False)
    alice = farm.client("alice")
    first = await new(alice, PHONE_AND_RELAY, idempotency_key="ci-42")
    again = await new(alice, PHONE_AND_RELAY, idempotency_key="ci-42")
    assert again.id == first.id and [r.id for r in await all_requests(alice)] == [first.id]
    try:
        await new(alice, PHONE_AND_RELAY[::-1], idempotency_key="ci-42")
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "IDEMPOTENCY_KEY_REUSED"
    else:
        raise AssertionError("the key was taken again for other profiles")
