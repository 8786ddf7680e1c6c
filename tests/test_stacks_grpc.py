"""Stacks and collateral over real gRPC on loopback, against a scheduler on SQLite: admins
make, list and delete stacks; a stack's collateral is refused to a second user until the
holder ends; stacks survive a restart, and so does the collateral."""

from __future__ import annotations

from pathlib import Path

import grpc
from boruta.v1 import audit_pb2, audit_pb2_grpc, requests_pb2, types_pb2, workers_pb2
from conftest import farm_on
from farm_kit import Client, Farm, board
from test_requests_grpc import expect_error

S = types_pb2
WAITING, IN_PROGRESS = S.REQUEST_STATE_WAITING, S.REQUEST_STATE_IN_PROGRESS


async def create(admin: Client, name: str, *uuids: str) -> workers_pb2.StackInfo:
    reply = await admin.workers.CreateStack(
        workers_pb2.CreateStackRequest(name=name, worker_uuids=list(uuids)),
        metadata=admin.metadata,
    )
    return reply.stack


async def stacks(admin: Client) -> list[workers_pb2.StackInfo]:
    reply = await admin.workers.ListStacks(workers_pb2.ListStacksRequest(), metadata=admin.metadata)
    return list(reply.stacks)


async def ask(client: Client, board_name: str, **fields: object) -> S.RequestInfo:
    reply = await client.requests.NewRequest(
        requests_pb2.NewRequestRequest(caps={"board": board_name}, **fields),  # type: ignore[arg-type]
        metadata=client.metadata,
    )
    return reply.request


async def test_collateral_is_refused_to_a_second_user_until_the_holder_ends(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone"), board("r1", board="relay")])
    admin = farm.admin
    made = await create(admin, "bench1", "p1", "r1")
    assert (made.name, list(made.worker_uuids), made.holder) == ("bench1", ["p1", "r1"], 0)
    alice, bob = farm.client("alice"), farm.client("bob")
    first = await ask(alice, "phone")
    assert first.state == IN_PROGRESS
    relay = await admin.worker("r1")
    assert relay.state == S.WORKER_STATE_IDLE
    assert (relay.stack, relay.collateral_of) == ("bench1", first.id)
    assert [s.holder for s in await stacks(admin)] == [first.id]
    # Bob's relay is IDLE but collateral: no_wait is BUSY, and a queued request waits.
    await expect_error(ask(bob, "relay", no_wait=True), grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
    waiting = await ask(bob, "relay")
    assert waiting.state == WAITING
    await alice.close(first.id)
    started = await bob.wait_request(waiting.id, IN_PROGRESS)
    assert started.job.worker_uuid == "r1"

    events = await audit_pb2_grpc.AuditStub(admin.channel).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=100), metadata=admin.metadata
    )
    assert any(
        e.action == "CreateStack" and e.target == "stack bench1" and "p1,r1" in e.detail
        for e in events.events
    )


async def test_stack_refusals_say_what_to_fix(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone"), board("r1", board="relay")], idle=False)
    admin = farm.admin
    await expect_error(create(admin, "bad name", "p1", "r1"), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_error(create(admin, "one", "p1"), grpc.StatusCode.INVALID_ARGUMENT, "2 to")
    await expect_error(create(admin, "ghost", "p1", "nope"), grpc.StatusCode.NOT_FOUND, "nope")
    await create(admin, "bench1", "p1", "r1")
    await expect_error(
        create(admin, "bench2", "r1", "p1"), grpc.StatusCode.FAILED_PRECONDITION, "bench1"
    )
    await expect_error(
        create(admin, "bench1", "r1", "p1"), grpc.StatusCode.ALREADY_EXISTS, "delete it first"
    )
    await expect_error(
        admin.workers.DeleteStack(
            workers_pb2.DeleteStackRequest(name="nope"), metadata=admin.metadata
        ),
        grpc.StatusCode.NOT_FOUND,
        "no stack",
    )
    user = farm.client("alice")
    await expect_error(
        user.workers.ListStacks(workers_pb2.ListStacksRequest(), metadata=user.metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        "only admins may manage stacks",
    )


async def test_deleting_a_stack_frees_its_collateral(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone"), board("r1", board="relay")])
    admin = farm.admin
    await create(admin, "bench1", "p1", "r1")
    alice, bob = farm.client("alice"), farm.client("bob")
    await ask(alice, "phone")
    waiting = await ask(bob, "relay")
    assert waiting.state == WAITING
    await admin.workers.DeleteStack(
        workers_pb2.DeleteStackRequest(name="bench1"), metadata=admin.metadata
    )
    assert (await bob.wait_request(waiting.id, IN_PROGRESS)).job.worker_uuid == "r1"
    assert await stacks(admin) == []


async def test_stacks_and_collateral_survive_a_restart(tmp_path: Path) -> None:
    boards = [board("p1", board="phone"), board("r1", board="relay")]
    async with farm_on(tmp_path) as farm:
        dryad = await farm.add_dryad(boards)
        await create(farm.admin, "bench1", "p1", "r1")
        running = await ask(farm.client("alice"), "phone")
        waiting = await ask(farm.client("bob"), "relay")
        assert waiting.state == WAITING
    async with farm_on(tmp_path) as farm:
        admin = farm.admin
        await farm.add_dryad(boards, idle=False, instance_id=dryad.instance_id)
        assert [(s.name, s.holder) for s in await stacks(admin)] == [("bench1", running.id)]
        assert (await admin.worker("r1")).collateral_of == running.id
        bob = farm.client("bob")
        assert (await bob.info(waiting.id)).state == WAITING
        await farm.client("alice").close(running.id)
        assert (await bob.wait_request(waiting.id, IN_PROGRESS)).job.worker_uuid == "r1"
