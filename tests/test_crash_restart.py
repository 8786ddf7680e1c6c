"""kill -9 the scheduler process and start it again: nothing acknowledged is lost, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from boruta.v1 import requests_pb2, types_pb2, workers_pb2
from farm_kit import Client, Farm, SchedulerProcess, board
from google.protobuf.timestamp_pb2 import Timestamp
from test_together_grpc import PAIR, bench_farm

S = types_pb2
OPTIONS = ("--heartbeat-interval", "0.2s", "--heartbeat-timeout", "5s")


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


@pytest.fixture(params=["sqlite", "postgresql"])
async def process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SchedulerProcess]:
    """A scheduler process on the default SQLite store, or on a fresh PostgreSQL database."""
    store = []
    if request.param == "postgresql":
        store = ["--store", request.getfixturevalue("postgres_url")]
    proc = SchedulerProcess(tmp_path / "state", *OPTIONS, *store)
    yield proc
    proc.stop()


async def snapshot(client: Client) -> tuple[list[object], list[object], dict[str, list[object]]]:
    requests = await client.requests.ListRequests(
        requests_pb2.ListRequestsRequest(page_size=1000), metadata=client.metadata
    )
    workers = await client.workers.ListWorkers(
        workers_pb2.ListWorkersRequest(page_size=1000), metadata=client.metadata
    )
    histories = {}
    for w in workers.workers:
        reply = await client.workers.ListWorkerHistory(
            workers_pb2.ListWorkerHistoryRequest(worker_uuid=w.uuid, page_size=1000),
            metadata=client.metadata,
        )
        histories[w.uuid] = list(reply.entries)
    # last_seen moves with every heartbeat and host_status is not durable; compare the rest.
    stable = []
    for w in workers.workers:
        w.ClearField("last_seen")
        w.ClearField("host_status")
        stable.append(w)
    return list(requests.requests), stable, histories


async def test_kill_9_loses_nothing_and_farm_carries_on(process: SchedulerProcess) -> None:
    address = process.start()
    farm = Farm(address)
    dryad = await farm.add_dryad([board("w1", board="x"), board("w2", board="x")])
    await farm.add_dryad([board("spare", board="y")], idle=False)
    admin = farm.admin
    await admin.workers.SetGroups(
        workers_pb2.SetGroupsRequest(worker_uuid="spare", groups=["lab"]), metadata=admin.metadata
    )
    alice, bob = farm.client("alice"), farm.client("bob", ["lab"])
    run1 = await alice.new({"board": "x"}, priority=5)
    run2 = await bob.new({"board": "x"}, priority=5)
    wait_hi = await bob.new({"board": "x"}, priority=2)
    wait_lo = await alice.new({"board": "x"}, priority=9)
    expiring = await alice.new({"board": "x"}, priority=16, deadline=ts(time.time() + 4))
    cancelled = await alice.new({"board": "x"})
    await alice.close(cancelled.id)
    later = await bob.new({"board": "y"}, valid_after=ts(time.time() + 3600))
    access_before = await alice.acquire(run1.id)
    before = await snapshot(admin)

    process.kill()
    await farm.channel.close()
    process.start(listen=address)  # same port, so the dryads find it again by themselves
    farm.channel = grpc.aio.insecure_channel(address)
    admin = farm.admin
    alice, bob = farm.client("alice"), farm.client("bob", ["lab"])

    after = await snapshot(admin)
    # The expiring request's deadline may pass while the scheduler is down or restarting
    # on a loaded machine: it is then TIMEOUT already (the restore applies stored
    # deadlines), else unchanged. Everything else must be exactly as before.
    expired = [r for r in after[0] if r.id == expiring.id]
    assert [r.state for r in expired] in (
        [S.REQUEST_STATE_WAITING],
        [S.REQUEST_STATE_TIMEOUT],
    ), expired
    if expired[0].state == S.REQUEST_STATE_WAITING:
        assert after == before
    else:
        assert after[1:] == before[1:]
        assert [r for r in after[0] if r.id != expiring.id] == [
            r for r in before[0] if r.id != expiring.id
        ]
    # The job's access survived, identical.
    assert await alice.acquire(run1.id) == access_before
    assert (await bob.info(later.id)).state == S.REQUEST_STATE_WAITING
    # Waiting requests still match, in priority order, when a worker frees.
    await alice.close(run1.id)
    assert (await bob.wait_request(wait_hi.id, S.REQUEST_STATE_IN_PROGRESS)).job.worker_uuid == "w1"
    await bob.close(run2.id)
    await alice.wait_request(wait_lo.id, S.REQUEST_STATE_IN_PROGRESS)
    # The deadline timer resumed from the stored time.
    timed_out = await alice.wait_request(expiring.id, S.REQUEST_STATE_TIMEOUT)
    assert timed_out.reason == "deadline passed while waiting"
    # The dryads came back by themselves and kept their state (same dryad instance).
    await dryad.wait_heartbeats("w1", dryad.heartbeats("w1") + 2)
    assert (await admin.worker("spare")).state == S.WORKER_STATE_MAINTENANCE
    await farm.close()


async def test_a_drain_survives_a_kill_9(process: SchedulerProcess) -> None:
    """A board asked to go into maintenance after its job is still draining after a kill -9
    and restart, and goes when the job ends."""
    address = process.start()
    farm = Farm(address)
    dryad = await farm.add_dryad([board("w1")])
    alice = farm.client("alice")
    running = await alice.new()
    admin = farm.admin
    await admin.set_state("w1", S.WORKER_STATE_MAINTENANCE, "new camera", after_job=True)

    process.kill()
    await farm.channel.close()
    process.start(listen=address)
    farm.channel = grpc.aio.insecure_channel(address)
    admin, alice = farm.admin, farm.client("alice")

    info = await admin.worker("w1")
    assert (info.state, info.drain_reason) == (S.WORKER_STATE_RUNNING, "new camera")
    assert (await alice.info(running.id)).state == S.REQUEST_STATE_IN_PROGRESS
    await alice.close(running.id)
    info = await admin.wait_worker("w1", S.WORKER_STATE_MAINTENANCE)
    assert (info.reason, info.drain_reason) == ("new camera", "")
    assert dryad.boards["w1"].maintenance_messages == ["new camera"]
    await farm.close()


async def test_every_acknowledged_request_survives_a_kill_during_a_burst(
    process: SchedulerProcess,
) -> None:
    address = process.start()
    farm = Farm(address)
    await farm.add_dryad([board("w1")], idle=False)
    client = farm.client("ci")
    acknowledged: list[int] = []
    enough = asyncio.Event()

    async def submit() -> None:
        while True:
            try:
                reply = await client.new()
            except grpc.aio.AioRpcError:
                return
            acknowledged.append(reply.id)
            if len(acknowledged) >= 300:
                enough.set()

    tasks = [asyncio.ensure_future(submit()) for _ in range(16)]
    await asyncio.wait_for(enough.wait(), 60)
    process.kill()  # while the 16 clients are still sending
    await asyncio.gather(*tasks)
    await farm.close()

    process.start(listen=address)
    farm = Farm(address)
    client = farm.client("ci")
    reply = await client.requests.ListRequests(
        requests_pb2.ListRequestsRequest(page_size=1000), metadata=client.metadata
    )
    stored = {r.id for r in reply.requests}
    assert set(acknowledged) <= stored
    assert all(r.state == S.REQUEST_STATE_WAITING for r in reply.requests)
    # Ids go on from the highest stored one.
    assert (await client.new()).id == max(stored) + 1
    await farm.close()


async def test_co_located_sets_and_their_collateral_survive_a_kill_9(
    process: SchedulerProcess,
) -> None:
    """A stack group running with its stack's other board held, a host group running on
    one host and one waiting for a host: after kill -9 the same boards are held, the
    waiting group still waits for one host and gets one, and the collateral goes free when
    its request ends."""
    address = process.start()
    farm = Farm(address)
    await bench_farm(farm)
    in_stack = [S.Colocation(placement=S.PLACEMENT_STACK)]
    on_host = [S.Colocation(profiles=["relay", "dut"], placement=S.PLACEMENT_HOST)]
    alice, bob, carol = farm.client("alice"), farm.client("bob"), farm.client("carol")
    stacked = await alice.new(profiles=PAIR, together=in_stack)
    hosted = await bob.new(profiles=PAIR, together=on_host)
    waiting = await carol.new(profiles=PAIR, together=on_host)
    assert [j.worker_uuid for j in stacked.jobs] == ["p1", "r1"]
    assert [j.worker_uuid for j in hosted.jobs] == ["p2", "r2"]
    assert waiting.state == S.REQUEST_STATE_WAITING

    async def allocations() -> list[workers_pb2.Allocation]:
        reply = await farm.admin.workers.ListAllocations(
            workers_pb2.ListAllocationsRequest(), metadata=farm.admin.metadata
        )
        return list(reply.allocations)

    before = await allocations()
    assert [list(a.collateral) for a in before] == [["psu"], []]

    process.kill()
    await farm.channel.close()
    process.start(listen=address)
    farm.channel = grpc.aio.insecure_channel(address)
    admin = farm.admin
    alice, bob, carol = farm.client("alice"), farm.client("bob"), farm.client("carol")

    assert await allocations() == before
    restored = await carol.info(waiting.id)
    assert restored.state == S.REQUEST_STATE_WAITING
    assert list(restored.together) == on_host
    # The host group that waited gets the freed host, both boards of it.
    await bob.close(hosted.id)
    started = await carol.wait_request(waiting.id, S.REQUEST_STATE_IN_PROGRESS)
    assert [j.worker_uuid for j in started.jobs] == ["p2", "r2"]
    # The stack's collateral goes free with the request that held it.
    await alice.close(stacked.id)
    assert (await admin.worker("psu")).collateral_of == 0
    assert [a.request_id for a in await allocations()] == [waiting.id]
    await carol.close(waiting.id)
    await farm.close()
