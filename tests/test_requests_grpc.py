"""The Requests service over real gRPC on loopback, against a scheduler on SQLite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from boruta.v1 import requests_pb2, types_pb2, workers_pb2
from boruta_scheduler.core import Policy
from boruta_scheduler.errors import PermissionDenied, RequestNotFound
from boruta_scheduler.types import Identity, PendingCode
from conftest import start_scheduler
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from farm_kit import Client, Farm, board
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

S = types_pb2
WAITING, IN_PROGRESS = S.REQUEST_STATE_WAITING, S.REQUEST_STATE_IN_PROGRESS


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


async def all_requests(client: Client) -> list[types_pb2.RequestInfo]:
    reply = await client.requests.ListRequests(
        requests_pb2.ListRequestsRequest(page_size=1000), metadata=client.metadata
    )
    return list(reply.requests)


async def expect_error(call: object, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() is code, info.value.details()
    details = info.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    return details


async def fake_sshd() -> asyncio.Server:
    """Stands in for a board's SSH server: sends a banner to whoever connects."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-board\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    return await asyncio.start_server(greet, "127.0.0.1", 0)


async def test_full_cycle_hands_out_a_real_key_and_a_tunnel(farm: Farm) -> None:
    sshd = await fake_sshd()
    ssh_port = sshd.sockets[0].getsockname()[1]
    dryad = await farm.add_dryad([board("w1", board="rpi4")], ssh_address=f"127.0.0.1:{ssh_port}")
    alice = farm.client("alice", ["lab"])
    created = await alice.new({"board": "rpi4"}, priority=4)
    assert created.state == IN_PROGRESS
    assert (created.owner, list(created.owner_groups), created.priority) == ("alice", ["lab"], 4)
    acquired = await alice.acquire(created.id)
    key = serialization.load_pem_private_key(acquired.access.private_key_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert acquired.access.username == dryad.boards["w1"].last_username
    assert acquired.access.host == "127.0.0.1"
    assert acquired.access.port not in (0, ssh_port)
    assert acquired.job.worker_uuid == "w1"
    # The tunnel leads to the board's SSH server.
    reader, writer = await asyncio.open_connection("127.0.0.1", acquired.access.port)
    assert await reader.readline() == b"SSH-2.0-board\r\n"
    done = await alice.close(created.id)
    # Closing the job cut the open connection and the tunnel refuses new ones.
    assert await reader.read() == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", acquired.access.port)
    sshd.close()
    assert done.state == S.REQUEST_STATE_DONE
    await farm.admin.wait_worker("w1", S.WORKER_STATE_IDLE)
    assert dryad.boards["w1"].prepared == 2
    second = await alice.new({"board": "rpi4"})
    again = await alice.acquire(second.id)
    assert again.access.private_key_pem != acquired.access.private_key_pem


async def test_access_hands_out_the_boards_host_keys_and_the_asked_job_timeout(
    farm: Farm,
) -> None:
    host_keys = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfW1", "ssh-rsa AAAAB3NzaC1yc2E")
    w1 = board("w1", board="rpi4")
    w1.ssh_host_keys = host_keys
    await farm.add_dryad([w1])
    alice = farm.client("alice")
    before = time.time()
    created = await alice.new({"board": "rpi4"}, job_timeout=Duration(seconds=90))
    assert created.job_timeout.ToSeconds() == 90
    assert (await alice.info(created.id)).job_timeout.ToSeconds() == 90
    acquired = await alice.acquire(created.id)
    assert tuple(acquired.access.ssh_host_keys) == host_keys
    started = acquired.job.started_at.ToNanoseconds() / 1e9
    assert before - 1 < started and acquired.job.timeout_at.ToNanoseconds() / 1e9 == (
        pytest.approx(started + 90)
    )
    await alice.close(created.id)
    # Without one, the scheduler's job timeout applies and RequestInfo says none was asked.
    plain = await alice.new({"board": "rpi4"})
    assert not plain.HasField("job_timeout")


async def test_acquire_blocks_until_a_worker_frees(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    alice, bob = farm.client("alice"), farm.client("bob")
    first = await alice.new()
    second = await bob.new()
    assert second.state == WAITING
    # The caller's deadline bounds the wait.
    await expect_error(bob.acquire(second.id, timeout=0.3), grpc.StatusCode.DEADLINE_EXCEEDED)
    waiting = asyncio.ensure_future(bob.acquire(second.id))
    assert (await bob.info(second.id)).state == WAITING
    assert not waiting.done()
    await alice.close(first.id)
    acquired = await asyncio.wait_for(waiting, 30)
    assert acquired.job.worker_uuid == "w1"
    assert (await bob.info(second.id)).state == IN_PROGRESS


async def test_many_blocked_acquirers_each_get_their_own_worker(farm: Farm) -> None:
    await farm.add_dryad([board(f"w{i}") for i in range(3)], idle=False)
    client = farm.client("ci")
    requests = [await client.new() for _ in range(3)]
    waiters = [asyncio.ensure_future(client.acquire(r.id)) for r in requests]
    for i in range(3):
        await farm.admin.set_state(f"w{i}", S.WORKER_STATE_IDLE)
    results = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    assert sorted(r.job.worker_uuid for r in results) == ["w0", "w1", "w2"]


async def test_acquire_on_terminal_request_names_the_state(farm: Farm) -> None:
    await farm.add_dryad([board("w1")], idle=False)
    alice = farm.client()
    r = await alice.new()
    waiting = asyncio.ensure_future(alice.acquire(r.id))
    assert (await alice.info(r.id)).state == WAITING
    await alice.close(r.id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await waiting
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "CANCELLED" in (info.value.details() or "")
    await expect_error(alice.acquire(r.id), grpc.StatusCode.FAILED_PRECONDITION, "CANCELLED")


async def test_priority_and_fifo_over_grpc(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    c = farm.client()
    running = await c.new()
    low = await c.new(priority=10)
    high1 = await c.new(priority=2)
    high2 = await c.new(priority=2)
    order = []
    current = running.id
    for _ in range(3):
        await c.close(current)
        # The freed worker is prepared again (PREPARE), then takes the best waiting request.
        worker = await farm.admin.wait_worker("w1", S.WORKER_STATE_RUNNING)
        current = worker.request_id
        order.append(current)
    assert order == [high1.id, high2.id, low.id]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"priority": 17}, "priority must be between 1"),
        ({"deadline": ts(time.time() - 60)}, "deadline is in the past"),
        (
            {"valid_after": ts(time.time() + 7200), "deadline": ts(time.time() + 3600)},
            "valid_after is after the deadline",
        ),
        # The default deadline (a day later) would be a time no Timestamp can hold: every
        # client that read the request back (a user's, an admin's list) would fail on it.
        ({"valid_after": Timestamp(seconds=253_402_300_799)}, "give a deadline"),
        ({"caps": {f"k{i}": "v" for i in range(40)}}, "at most 32"),
        ({"caps": {"k" * 100: "v"}}, "key"),
        ({"caps": {"board": "x" * 300}}, "value"),
        ({"caps": {"bad key": "v"}}, "key"),
        ({"job_timeout": Duration(seconds=2)}, "job_timeout must be at least 10 s"),
        ({"job_timeout": Duration(seconds=-60)}, "job_timeout must be at least 10 s"),
        ({"job_timeout": Duration(seconds=5, nanos=-1)}, "job_timeout is not a valid duration"),
    ],
)
async def test_bad_new_request_is_invalid_argument_and_changes_nothing(
    farm: Farm, fields: dict[str, object], fragment: str
) -> None:
    await farm.add_dryad([board("w1")], idle=False)
    c = farm.client()
    before = await all_requests(c)
    caps = fields.pop("caps", {})
    await expect_error(c.new(caps, **fields), grpc.StatusCode.INVALID_ARGUMENT, fragment)  # type: ignore[arg-type]
    assert await all_requests(c) == before


async def test_unsatisfiable_request_is_refused_at_once_unless_accepted(farm: Farm) -> None:
    await farm.add_dryad([board("w1", board="rpi4")])
    c = farm.client()
    await expect_error(
        c.new({"board": "rpi5"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no registered worker has caps board=rpi5",
    )
    assert await all_requests(c) == []
    queued = await c.new({"board": "rpi5"}, accept_unsatisfiable=True)
    assert queued.state == WAITING


def reason_of(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("boruta-error-reason", "")  # type: ignore[arg-type]


async def test_errors_carry_a_stable_reason(farm: Farm) -> None:
    await farm.add_dryad([board("w1", board="rpi4")])
    c = farm.client()
    for call, reason in [
        (c.new({"board": "rpi5"}), "NO_CAPABLE_WORKER"),
        (c.info(999), "REQUEST_NOT_FOUND"),
        (c.new({"board": "rpi4"}, priority=99), "INVALID_ARGUMENT"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert reason_of(info.value) == reason, info.value.details()


async def test_no_wait_is_busy_when_no_worker_is_free(farm: Farm) -> None:
    await farm.add_dryad([board("w1", board="rpi4")])
    c = farm.client()
    running = await c.new({"board": "rpi4"}, no_wait=True)
    assert running.state == IN_PROGRESS
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await c.new({"board": "rpi4"}, no_wait=True)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(info.value) == "BUSY"
    assert "busy" in (info.value.details() or "")
    assert [r.id for r in await all_requests(c)] == [running.id]


async def test_get_request_info_tells_the_queue_position(farm: Farm) -> None:
    await farm.add_dryad([board("w1", board="rpi4")])
    c = farm.client()
    running = await c.new({"board": "rpi4"})
    low = await c.new({"board": "rpi4"}, priority=9)
    high = await c.new({"board": "rpi4"}, priority=2)

    async def position(request_id: int) -> int | None:
        reply = await c.requests.GetRequestInfo(
            requests_pb2.GetRequestInfoRequest(request_id=request_id), metadata=c.metadata
        )
        return reply.queue_position if reply.HasField("queue_position") else None

    assert [await position(r.id) for r in (running, low, high)] == [None, 1, 0]


def test_pending_reason_codes_are_the_core_s() -> None:
    for code in PendingCode:
        assert S.PendingReasonCode.Value(f"PENDING_REASON_CODE_{code.name}") == code.value
    assert len(S.PendingReasonCode.keys()) == len(PendingCode) + 1  # and UNSPECIFIED


async def test_get_request_info_and_list_requests_say_why_requests_wait(farm: Farm) -> None:
    await farm.add_dryad([board("w1", board="rpi4"), board("w2", board="x86")], idle=False)
    admin = farm.admin
    await admin.workers.SetState(
        workers_pb2.SetStateRequest(worker_uuid="w1", state=S.WORKER_STATE_IDLE),
        metadata=admin.metadata,
    )
    c = farm.client()
    running = await c.new({"board": "rpi4"})
    for _ in range(200):  # preparing w1 takes a dryad call
        if (await c.info(running.id)).state == IN_PROGRESS:
            break
        await asyncio.sleep(0.05)
    first = await c.new({"board": "rpi4"})
    second = await c.new({"board": "rpi4"})
    x86 = await c.new({"board": "x86"})  # w2 stays in MAINTENANCE
    later = await c.new({"board": "rpi4"}, valid_after=ts(time.time() + 3600))
    nothing = await c.new({"board": "riscv"}, accept_unsatisfiable=True)
    job = (await c.info(running.id)).job
    expected = {
        first.id: (S.PENDING_REASON_CODE_BOARDS_BUSY, 0),
        second.id: (S.PENDING_REASON_CODE_HIGHER_PRIORITY, 1),
        x86.id: (S.PENDING_REASON_CODE_BOARDS_UNAVAILABLE, 0),
        later.id: (S.PENDING_REASON_CODE_NOT_VALID_YET, 2),
        nothing.id: (S.PENDING_REASON_CODE_NO_MATCHING_BOARD, 0),
    }
    for request_id, (code, ahead) in expected.items():
        reply = await c.requests.GetRequestInfo(
            requests_pb2.GetRequestInfoRequest(request_id=request_id), metadata=c.metadata
        )
        why = reply.request.pending_reason
        assert (why.code, why.requests_ahead, reply.queue_position) == (code, ahead, ahead)
        assert why.message
    busy = (await c.info(first.id)).pending_reason
    assert busy.expected_start == job.timeout_at and busy.latest_start == job.max_timeout_at
    assert [(b.uuid, b.state, b.held_by) for b in busy.boards] == [
        ("w1", S.WORKER_STATE_RUNNING, running.id)
    ]
    assert busy.boards[0].frees_at == job.timeout_at and busy.boards_total == 1
    unavailable = (await c.info(x86.id)).pending_reason
    assert [(b.uuid, b.state) for b in unavailable.boards] == [("w2", S.WORKER_STATE_MAINTENANCE)]
    assert not unavailable.HasField("expected_start")
    # ListRequests gives the same reasons, and none for the running request.
    listed = {r.id: r for r in await all_requests(c)}
    assert not listed[running.id].HasField("pending_reason")
    for request_id, (code, ahead) in expected.items():
        why = listed[request_id].pending_reason
        assert (why.code, why.requests_ahead) == (code, ahead)
    # Other answers (CloseRequest here) carry none.
    closed = await c.close(first.id)
    assert not closed.HasField("pending_reason")


async def test_a_request_no_board_of_whose_groups_has_its_caps_says_so(farm: Farm) -> None:
    await farm.add_dryad([board("w1", board="rpi4")])
    admin = farm.admin
    await admin.workers.SetGroups(
        workers_pb2.SetGroupsRequest(worker_uuid="w1", groups=["lab-a"]), metadata=admin.metadata
    )
    outsider = farm.client("bob", groups=["lab-b"])
    waiting = await outsider.new({"board": "rpi4"}, accept_unsatisfiable=True)
    why = (await outsider.info(waiting.id)).pending_reason
    assert why.code == S.PENDING_REASON_CODE_NO_BOARD_IN_GROUPS, why
    assert "group" in why.message and not why.HasField("expected_start")
    # A member of the board's group is served at once.
    member = await farm.client("carol", groups=["lab-a"]).new({"board": "rpi4"})
    assert member.state == IN_PROGRESS


async def test_deregistering_last_worker_makes_waiting_request_invalid(farm: Farm) -> None:
    dryad = await farm.add_dryad([board("w1", board="rpi4")], idle=False)
    assert dryad.link is not None
    await dryad.link.stop()  # a live dryad would register w1 again at its next heartbeat
    c = farm.client()
    r = await c.new({"board": "rpi4"})
    admin = farm.admin
    await admin.workers.Deregister(
        workers_pb2.DeregisterRequest(worker_uuid="w1"), metadata=admin.metadata
    )
    info = await c.info(r.id)
    assert info.state == S.REQUEST_STATE_INVALID
    assert "w1 was deregistered" in info.reason


async def test_close_update_prolong_errors(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    c = farm.client()
    running = await c.new()
    waiting = await c.new()
    not_found = grpc.StatusCode.NOT_FOUND
    precondition = grpc.StatusCode.FAILED_PRECONDITION
    await expect_error(c.close(999), not_found, "request 999 does not exist")
    await expect_error(c.info(999), not_found)
    await expect_error(c.acquire(999), not_found)
    await expect_error(
        c.requests.UpdateRequest(
            requests_pb2.UpdateRequestRequest(request_id=running.id, priority=3),
            metadata=c.metadata,
        ),
        precondition,
        "IN_PROGRESS",
        "only WAITING",
    )
    await expect_error(
        c.requests.ProlongAccess(
            requests_pb2.ProlongAccessRequest(request_id=waiting.id), metadata=c.metadata
        ),
        precondition,
        "WAITING",
    )
    await expect_error(
        c.requests.UpdateRequest(
            requests_pb2.UpdateRequestRequest(request_id=waiting.id, deadline=ts(time.time() - 5)),
            metadata=c.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "deadline is in the past",
    )
    await c.close(waiting.id)
    await expect_error(c.close(waiting.id), precondition, "CANCELLED")
    await expect_error(
        c.requests.UpdateRequest(
            requests_pb2.UpdateRequestRequest(request_id=waiting.id, priority=3),
            metadata=c.metadata,
        ),
        precondition,
        "CANCELLED",
    )


async def test_update_takes_effect_in_next_match(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    c = farm.client()
    running = await c.new()
    first = await c.new(priority=8)
    second = await c.new(priority=8)
    updated = await c.requests.UpdateRequest(
        requests_pb2.UpdateRequestRequest(request_id=second.id, priority=1),
        metadata=c.metadata,
    )
    assert updated.request.priority == 1
    await c.close(running.id)
    await c.wait_request(second.id, IN_PROGRESS)
    assert (await c.info(first.id)).state == WAITING


async def test_watches_per_user_are_limited_and_freed_when_a_client_leaves(
    tmp_path: Path,
) -> None:
    scheduler = await start_scheduler(tmp_path, max_watches_per_user=2)
    farm = Farm(f"127.0.0.1:{scheduler.port}")
    try:
        ann = farm.client("ann")

        def watch() -> object:
            return ann.requests.WatchRequests(
                requests_pb2.WatchRequestsRequest(), metadata=ann.metadata
            )

        first, second = watch(), watch()
        for call in (first, second):
            await call.initial_metadata()  # type: ignore[attr-defined]
        third = watch()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await third.read()  # type: ignore[attr-defined]
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "ann already has 2 watches open" in (info.value.details() or "")
        bob = farm.client("bob")
        other = bob.requests.WatchRequests(
            requests_pb2.WatchRequestsRequest(), metadata=bob.metadata
        )
        await other.initial_metadata()
        first.cancel()  # type: ignore[attr-defined]
        for _ in range(100):  # the server notices the cancel asynchronously
            if scheduler.hub.open_of("ann") < 2:
                break
            await asyncio.sleep(0.02)
        again = watch()
        await again.initial_metadata()  # type: ignore[attr-defined]
        assert scheduler.hub.open_of("ann") == 2
        for call in (second, again, other):
            call.cancel()  # type: ignore[attr-defined]
    finally:
        await farm.channel.close()
        await scheduler.stop()


async def test_users_see_and_change_only_their_own_requests(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    ann, bob, admin = farm.client("ann"), farm.client("bob"), farm.admin
    running = await ann.new()
    waiting = await ann.new()
    bobs = await bob.new()
    for call in (
        bob.info(running.id),
        bob.close(waiting.id),
        bob.acquire(running.id),
        bob.requests.ProlongAccess(
            requests_pb2.ProlongAccessRequest(request_id=running.id), metadata=bob.metadata
        ),
        bob.requests.UpdateRequest(
            requests_pb2.UpdateRequestRequest(request_id=waiting.id, priority=1),
            metadata=bob.metadata,
        ),
        bob.requests.ListRequests(
            requests_pb2.ListRequestsRequest(filter=requests_pb2.RequestFilter(owners=["ann"])),
            metadata=bob.metadata,
        ),
    ):
        await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, "only")
    assert [r.id for r in await all_requests(bob)] == [bobs.id]
    assert [r.id for r in await all_requests(ann)] == [running.id, waiting.id]
    assert (await admin.info(waiting.id)).state == WAITING
    closed = await admin.close(waiting.id)
    assert closed.state == S.REQUEST_STATE_CANCELLED
    # A finished request of someone else is no business of bob's either.
    await expect_error(bob.close(waiting.id), grpc.StatusCode.PERMISSION_DENIED, "not yours")
    await expect_error(ann.close(waiting.id), grpc.StatusCode.FAILED_PRECONDITION, "CANCELLED")


async def test_no_race_lets_a_user_act_on_a_request_created_in_the_same_batch(
    farm: Farm,
) -> None:
    """bob guesses the id alice's request is about to get and calls at the same moment:
    the owner check runs in order with the creation, so it always sees alice's request."""
    await farm.add_dryad([board("w1")])
    service = farm.scheduler.service  # type: ignore[attr-defined]
    alice, bob = Identity("alice"), Identity("bob")
    for round_ in range(20):
        known = await service.new_request(alice, {}, accept_unsatisfiable=True)
        guess = known.id + 1
        attempts = [
            lambda guess=guess: service.close_request(bob, guess),
            lambda guess=guess: service.prolong_access(bob, guess),
            lambda guess=guess: service.update_request(bob, guess, priority=3),
            lambda guess=guess: service.acquire_worker(bob, guess, 0.2),
        ]
        created, bobs = await asyncio.gather(
            service.new_request(alice, {}), attempts[round_ % 4](), return_exceptions=True
        )
        assert not isinstance(created, BaseException) and created.id == guess
        assert isinstance(bobs, PermissionDenied | RequestNotFound), bobs
        view = await service.get_request(alice, guess)
        assert view.owner == "alice" and view.state.name in ("WAITING", "IN_PROGRESS")
        await service.close_request(alice, guess)
        await service.close_request(alice, known.id)


async def test_list_filters_sorts_and_pages(farm: Farm) -> None:
    await farm.add_dryad([board("w1")], idle=False)
    ann, bob = farm.client("ann"), farm.client("bob")
    made = []
    for i in range(7):
        made.append(await (ann if i % 2 else bob).new(priority=1 + i % 3))
    await ann.close(made[1].id)

    admin = farm.admin  # admins list everyone's requests

    async def listing(**fields: object) -> list[int]:
        ids: list[int] = []
        token = ""
        while True:
            reply = await admin.requests.ListRequests(
                requests_pb2.ListRequestsRequest(page_size=2, page_token=token, **fields),  # type: ignore[arg-type]
                metadata=admin.metadata,
            )
            ids.extend(r.id for r in reply.requests)
            token = reply.next_page_token
            if not token:
                return ids

    assert await listing() == [r.id for r in made]
    assert await listing(descending=True) == [r.id for r in reversed(made)]
    by_priority = await listing(sort_by=requests_pb2.REQUEST_SORT_FIELD_PRIORITY)
    assert by_priority == [r.id for r in sorted(made, key=lambda r: (r.priority, r.id))]
    assert await listing(filter=requests_pb2.RequestFilter(owners=["ann"])) == [
        made[1].id,
        made[3].id,
        made[5].id,
    ]
    assert await listing(filter=requests_pb2.RequestFilter(states=[S.REQUEST_STATE_CANCELLED])) == [
        made[1].id
    ]
    assert await listing(filter=requests_pb2.RequestFilter(priorities=[1])) == [
        made[0].id,
        made[3].id,
        made[6].id,
    ]
    first_page = await ann.requests.ListRequests(
        requests_pb2.ListRequestsRequest(page_size=2), metadata=ann.metadata
    )
    await expect_error(
        ann.requests.ListRequests(
            requests_pb2.ListRequestsRequest(
                page_size=2, page_token=first_page.next_page_token, descending=True
            ),
            metadata=ann.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "another filter or order",
    )
    await expect_error(
        ann.requests.ListRequests(
            requests_pb2.ListRequestsRequest(page_token="garbage!"), metadata=ann.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token is malformed",
    )
    await expect_error(
        ann.requests.ListRequests(
            requests_pb2.ListRequestsRequest(filter=requests_pb2.RequestFilter(states=[42])),  # type: ignore[list-item]
            metadata=ann.metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown value 42",
    )


async def test_watch_requests_streams_changes_in_order(farm: Farm) -> None:
    await farm.add_dryad([board("w1")])
    c = farm.client()
    stream = c.requests.WatchRequests(requests_pb2.WatchRequestsRequest(), metadata=c.metadata)
    seen: list[tuple[int, int]] = []

    async def collect() -> None:
        async for event in stream:
            seen.append((event.request.id, event.request.state))
            if event.request.state == S.REQUEST_STATE_DONE:
                return

    await stream.initial_metadata()  # the watch is in place
    collector = asyncio.ensure_future(collect())
    r1 = await c.new()
    r2 = await c.new()
    await c.close(r2.id)
    await c.close(r1.id)
    await asyncio.wait_for(collector, 30)
    stream.cancel()

    def states(request_id: int) -> list[int]:
        # Every change is streamed (the job's tunnel opening too); states come in order.
        result: list[int] = []
        for rid, state in seen:
            if rid == request_id and (not result or result[-1] != state):
                result.append(state)
        return result

    assert states(r1.id) == [IN_PROGRESS, S.REQUEST_STATE_DONE]
    assert states(r2.id) == [WAITING, S.REQUEST_STATE_CANCELLED]
    assert seen.index((r2.id, S.REQUEST_STATE_CANCELLED)) < seen.index(
        (r1.id, S.REQUEST_STATE_DONE)
    )


class TestJobLimits:
    @pytest.fixture
    def policy(self) -> Policy:
        return Policy(job_timeout=1.0, prolong_step=1.0, max_prolongs=2, max_job_duration=10)

    async def test_job_timeout_ends_job_and_worker_is_prepared_again(self, farm: Farm) -> None:
        dryad = await farm.add_dryad([board("w1")])
        c = farm.client()
        r = await c.new()
        done = await c.wait_request(r.id, S.REQUEST_STATE_DONE)
        assert done.reason == "job timed out"
        await farm.admin.wait_worker("w1", S.WORKER_STATE_IDLE)
        assert dryad.boards["w1"].prepared == 2

    async def test_prolong_limit_is_failed_precondition(self, farm: Farm) -> None:
        await farm.add_dryad([board("w1")])
        c = farm.client()
        r = await c.new()
        prolong = requests_pb2.ProlongAccessRequest(request_id=r.id)
        for count in (1, 2):
            reply = await c.requests.ProlongAccess(prolong, metadata=c.metadata)
            assert reply.job.prolong_count == count
        await expect_error(
            c.requests.ProlongAccess(prolong, metadata=c.metadata),
            grpc.StatusCode.FAILED_PRECONDITION,
            "prolonged 2 times",
        )
