"""Co-location over real gRPC on loopback, against a scheduler on SQLite: a group of boards
on one host (one dryad process) or in one stack, the groups echoed and kept across a
restart, bad groups and impossible sets refused at once, BUSY with no_wait, and the
Python client's together= (async and blocking)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from boruta.v1 import audit_pb2, audit_pb2_grpc, requests_pb2, types_pb2, workers_pb2
from boruta_client import AsyncClient, Client, Colocation, Placement
from conftest import farm_on
from farm_kit import Client as FarmClient
from farm_kit import Farm, board
from test_requests_grpc import expect_error

S = types_pb2
WAITING, IN_PROGRESS = S.REQUEST_STATE_WAITING, S.REQUEST_STATE_IN_PROGRESS
PAIR = [
    S.Profile(name="dut", caps={"board": "phone"}),
    S.Profile(name="relay", caps={"board": "relay"}),
]
ON_HOST = [S.Colocation(placement=S.PLACEMENT_HOST)]


async def new(
    client: FarmClient,
    together: list[types_pb2.Colocation],
    profiles: list[types_pb2.Profile] = PAIR,
    **fields: object,
) -> S.RequestInfo:
    reply = await client.requests.NewRequest(
        requests_pb2.NewRequestRequest(profiles=profiles, together=together, **fields),  # type: ignore[arg-type]
        metadata=client.metadata,
    )
    return reply.request


async def test_a_pair_on_one_host_skips_a_lone_phone(farm: Farm) -> None:
    # The lone phone is the least capable; only the second dryad serves both boards.
    await farm.add_dryad([board("p1", board="phone")])
    await farm.add_dryad(
        [board("p2", board="phone", camera="yes"), board("r2", board="relay", usb="3")]
    )
    alice = farm.client("alice")
    created = await new(alice, ON_HOST)
    assert created.state == IN_PROGRESS
    assert [j.worker_uuid for j in created.jobs] == ["p2", "r2"]
    assert [(list(c.profiles), c.placement) for c in created.together] == [([], S.PLACEMENT_HOST)]
    assert list((await alice.info(created.id)).together) == list(created.together)
    admin = farm.admin
    events = await audit_pb2_grpc.AuditStub(admin.channel).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=100), metadata=admin.metadata
    )
    (made,) = [e for e in events.events if e.action == "NewRequest"]
    assert "together all on one host" in made.detail, made.detail


async def test_bad_groups_and_impossible_sets_are_refused_saying_what_to_fix(farm: Farm) -> None:
    await farm.add_dryad([board("p1", board="phone")])
    await farm.add_dryad([board("r1", board="relay")])
    alice = farm.client("alice")
    bad = [S.Colocation(profiles=["dut", "nope"], placement=S.PLACEMENT_HOST)]
    await expect_error(new(alice, bad), grpc.StatusCode.INVALID_ARGUMENT, "'nope'")
    unset = [S.Colocation(profiles=["dut", "relay"])]
    await expect_error(new(alice, unset), grpc.StatusCode.INVALID_ARGUMENT, "PLACEMENT_HOST")
    twice = [
        S.Colocation(profiles=["dut", "relay"], placement=S.PLACEMENT_HOST),
        S.Colocation(placement=S.PLACEMENT_STACK),
    ]
    await expect_error(new(alice, twice), grpc.StatusCode.INVALID_ARGUMENT, "one group at most")
    # The phone and the relay are on two hosts: never together, refused at once.
    await expect_error(new(alice, ON_HOST), grpc.StatusCode.FAILED_PRECONDITION, "one host")
    stacked = [S.Colocation(placement=S.PLACEMENT_STACK)]
    await expect_error(new(alice, stacked), grpc.StatusCode.FAILED_PRECONDITION, "one stack")
    assert not (
        await alice.requests.ListRequests(
            requests_pb2.ListRequestsRequest(), metadata=alice.metadata
        )
    ).requests


async def bench_farm(farm: Farm) -> None:
    """Three dryads: p1 and psu on one, r1 on the next, the stack "bench" of p1, r1 and psu
    across them; p2 and r2 together on the third."""
    await farm.add_dryad([board("p1", board="phone"), board("psu", board="psu")])
    await farm.add_dryad([board("r1", board="relay")])
    await farm.add_dryad([board("p2", board="phone"), board("r2", board="relay")])
    await farm.admin.workers.CreateStack(
        workers_pb2.CreateStackRequest(name="bench", worker_uuids=["p1", "r1", "psu"]),
        metadata=farm.admin.metadata,
    )


async def test_a_stack_group_holds_the_rest_of_the_stack_and_no_wait_is_busy(farm: Farm) -> None:
    await bench_farm(farm)
    admin = farm.admin
    alice, bob = farm.client("alice"), farm.client("bob")
    stacked = [S.Colocation(placement=S.PLACEMENT_STACK)]
    first = await new(alice, stacked)
    assert [j.worker_uuid for j in first.jobs] == ["p1", "r1"]
    assert (await admin.worker("psu")).collateral_of == first.id
    # A second stack group has no stack left: no_wait is BUSY, nothing is queued.
    await expect_error(new(bob, stacked, no_wait=True), grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
    # On one host it is served at once by the third dryad.
    other = await new(bob, ON_HOST, no_wait=True)
    assert [j.worker_uuid for j in other.jobs] == ["p2", "r2"]
    # Admins see what each running request holds; users may not ask.
    reply = await admin.workers.ListAllocations(
        workers_pb2.ListAllocationsRequest(), metadata=admin.metadata
    )
    held = {a.request_id: a for a in reply.allocations}
    assert sorted(held) == [first.id, other.id]
    assert [(b.profile, b.worker_uuid, b.stack) for b in held[first.id].boards] == [
        ("dut", "p1", "bench"),
        ("relay", "r1", "bench"),
    ]
    assert list(held[first.id].collateral) == ["psu"] and held[first.id].owner == "alice"
    pair = held[other.id].boards
    assert pair[0].dryad_address == pair[1].dryad_address != held[first.id].boards[1].dryad_address
    await expect_error(
        bob.workers.ListAllocations(workers_pb2.ListAllocationsRequest(), metadata=bob.metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        "only admins may list allocations",
    )
    await alice.close(first.id)
    await bob.close(other.id)


async def test_groups_survive_a_restart(tmp_path: Path) -> None:
    async with farm_on(tmp_path) as farm:
        await farm.add_dryad([board("p1", board="phone")])
        await farm.add_dryad([board("r1", board="relay")])
        alice = farm.client("alice")
        partial = [S.Colocation(profiles=["relay", "dut"], placement=S.PLACEMENT_HOST)]
        waiting = await new(alice, partial, accept_unsatisfiable=True)
        assert waiting.state == WAITING
    async with farm_on(tmp_path) as farm:
        alice = farm.client("alice")
        restored = await alice.info(waiting.id)
        assert restored.state == WAITING
        assert [(list(c.profiles), c.placement) for c in restored.together] == [
            (["relay", "dut"], S.PLACEMENT_HOST)
        ]
        assert "co-located" in restored.pending_reason.message
        # A dryad serving both comes: the request runs there.
        await farm.add_dryad([board("p9", board="phone"), board("r9", board="relay")], idle=False)
        for uuid in ("p9", "r9"):
            await farm.admin.set_state(uuid, S.WORKER_STATE_IDLE)
        started = await alice.wait_request(waiting.id, IN_PROGRESS)
        assert [j.worker_uuid for j in started.jobs] == ["p9", "r9"]


async def test_the_client_asks_for_boards_together(farm: Farm) -> None:
    """client.lease([...], together="host"), async and blocking, and new_request with
    groups of named profiles."""
    await farm.add_dryad([board("p1", board="phone")])
    await farm.add_dryad([board("p2", board="phone"), board("r2", board="relay")])
    async with AsyncClient(farm.address, user="alice") as client:
        async with client.lease(
            [{"board": "phone"}, {"board": "relay"}], together="host"
        ) as boards:
            assert [b.worker_uuid for b in boards] == ["p2", "r2"]
            request = boards[0].request
            assert request.together == (Colocation((), Placement.HOST),)
        made = await client.new_request(
            profiles={"dut": {"board": "phone"}, "relay": {"board": "relay"}},
            together=[Colocation(("dut", "relay"), Placement.HOST)],
        )
        assert made.together == (Colocation(("dut", "relay"), Placement.HOST),)
        # The boards may still be preparing after the lease: it runs once they are back.
        acquired = await client.acquire_worker(made.id, timeout=60)
        assert [b.job.worker_uuid for b in acquired.boards] == ["p2", "r2"]
        await client.close_request(made.id)

    def blocking() -> list[str]:
        pair = [{"board": "phone"}, {"board": "relay"}]
        with (
            Client(farm.address, user="alice") as client,
            client.lease(pair, together="host") as boards,
        ):
            assert boards[0].request.together == (Colocation((), Placement.HOST),)
            return [b.worker_uuid for b in boards]

    assert await asyncio.to_thread(blocking) == ["p2", "r2"]
