"""Several schedulers on one PostgreSQL store (design rule 10), through real processes: one
leads, the others refuse calls naming it; kill -9 the leader and a standby takes over with
everything acknowledged; a leader paused past its lease commits nothing and steps down."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from boruta.tls import channel_credentials
from boruta.v1 import requests_pb2, requests_pb2_grpc, types_pb2
from farm_kit import Client, Farm, SchedulerProcess, Schedulers, board
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pki_kit import FarmPki
from test_crash_restart import snapshot

S = types_pb2
# Dryads heartbeat to the scheduler they were started with; the new leader must not fail
# their boards for the silence while this test looks at it (following the leader is the
# dryad's own business).
OPTIONS = ("--heartbeat-interval", "0.2s", "--heartbeat-timeout", "120s")
EXIT_STEPPED_DOWN = 75
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def schedulers(
    tmp_path: Path, postgres_url: str
) -> AsyncIterator[Callable[[str], SchedulerProcess]]:
    """Makes scheduler processes on one fresh PostgreSQL database; stops them all after."""
    made = Schedulers(tmp_path, *OPTIONS, "--store", postgres_url)
    yield made
    made.stop_all()


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return int(reply.status)


async def refusal(client: Client) -> tuple[grpc.StatusCode, str]:
    """A standby's answer to NewRequest: its status and the leader it names."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.new({"board": "x"})
    trailing = dict(caught.value.trailing_metadata() or ())
    return caught.value.code(), str(trailing["boruta-leader"])


async def test_standby_refuses_then_takes_over_a_kill_9_with_everything(
    schedulers: Callable[[str], SchedulerProcess],
) -> None:
    first, second = schedulers("first"), schedulers("second")
    leader = first.start()
    assert await asyncio.to_thread(first.wait_leading) == 1
    standby = second.start()
    farm = Farm(leader)
    await farm.add_dryad([board("w1", board="x"), board("w2", board="x")])
    alice, bob = farm.client("alice"), farm.client("bob")
    run1 = await alice.new({"board": "x"}, priority=5)
    run2 = await bob.new({"board": "x"}, priority=5)
    wait_hi = await bob.new({"board": "x"}, priority=2)
    wait_lo = await alice.new({"board": "x"}, priority=9)
    await alice.wait_request(run1.id, S.REQUEST_STATE_IN_PROGRESS)
    await bob.wait_request(run2.id, S.REQUEST_STATE_IN_PROGRESS)
    access_before = await alice.acquire(run1.id)
    before = await snapshot(farm.admin)

    # The standby names the leader, and says it does not serve; the leader serves.
    other = Farm(standby)
    assert await refusal(other.client("carol")) == (grpc.StatusCode.UNAVAILABLE, leader)
    carol = other.client("carol")
    with pytest.raises(grpc.aio.AioRpcError) as watch:  # a stream is refused alike
        async for _ in carol.requests.WatchRequests(
            requests_pb2.WatchRequestsRequest(), metadata=carol.metadata
        ):
            pass
    assert watch.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(watch.value.trailing_metadata() or ())["boruta-leader"] == leader
    assert await health(standby) == NOT_SERVING
    assert await health(leader) == SERVING

    killed = time.monotonic()
    first.kill()
    assert await asyncio.to_thread(second.wait_leading) == 2
    after = await snapshot(other.admin)
    took = time.monotonic() - killed
    print(f"takeover: {took:.3f} s from kill -9 to the first successful call")
    assert after == before
    assert await health(standby) == SERVING

    alice, bob = other.client("alice"), other.client("bob")
    # The job's access survived, identical, and waiting requests still match in order once
    # a board frees: the new leader calls the dryad itself.
    assert await alice.acquire(run1.id) == access_before
    await alice.close(run1.id)
    assert (await bob.wait_request(wait_hi.id, S.REQUEST_STATE_IN_PROGRESS)).job.worker_uuid == "w1"
    await bob.close(run2.id)
    await alice.wait_request(wait_lo.id, S.REQUEST_STATE_IN_PROGRESS)
    # Ids go on from the highest stored one.
    assert (await alice.new({"board": "x"})).id == wait_lo.id + 1
    await farm.close()
    await other.close()
    assert second.stop() == 0


async def test_a_leader_paused_past_its_lease_commits_nothing_and_steps_down(
    schedulers: Callable[[str], SchedulerProcess],
) -> None:
    first, second = schedulers("first"), schedulers("second")
    old = first.start()
    await asyncio.to_thread(first.wait_leading)
    new = second.start()
    old_farm, new_farm = Farm(old), Farm(new)
    alice = old_farm.client("alice")
    kept = await alice.new({"board": "x"}, accept_unsatisfiable=True)

    assert first.proc is not None
    first.proc.send_signal(signal.SIGSTOP)  # past its lease: the standby takes over
    assert await asyncio.to_thread(second.wait_leading) == 2
    alice_new = new_farm.client("alice")
    await alice_new.close(kept.id)
    made = await alice_new.new({"board": "y"}, accept_unsatisfiable=True)

    first.proc.send_signal(signal.SIGCONT)
    # Whatever the old leader is doing when it wakes, it can no longer commit: a write fails
    # (fenced: UNAVAILABLE; or cut, CANCELLED, if it meets the server stopping), and it
    # exits to come back as a standby. The listing below shows nothing of it was kept.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await alice.new({"board": "z"}, accept_unsatisfiable=True)
    assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert await asyncio.to_thread(first.proc.wait) == EXIT_STEPPED_DOWN
    assert "stepping down" in first.log_path.read_text()

    reply = await alice_new.requests.ListRequests(
        requests_pb2.ListRequestsRequest(page_size=100), metadata=alice_new.metadata
    )
    states = {r.id: r.state for r in reply.requests}
    assert states == {kept.id: S.REQUEST_STATE_CANCELLED, made.id: S.REQUEST_STATE_WAITING}

    # Restarted (as systemd would), it is a standby that names the new leader.
    first.start()
    assert await refusal(Farm(first.address).client("carol")) == (
        grpc.StatusCode.UNAVAILABLE,
        new,
    )
    await old_farm.close()
    await new_farm.close()


async def test_over_tls_a_standby_names_the_leaders_port_of_the_same_kind(
    tmp_path: Path, postgres_url: str
) -> None:
    farm_pki = FarmPki(tmp_path / "pki")
    files = farm_pki.scheduler()
    options = ["--tls-ca", files.ca, "--tls-cert", files.cert, "--tls-key", files.key]
    options += ["--listen-tokens", "127.0.0.1:0", "--store", postgres_url, *OPTIONS]
    first = SchedulerProcess(tmp_path / "first", *options)
    second = SchedulerProcess(tmp_path / "second", *options)
    try:
        first.start()
        await asyncio.to_thread(first.wait_leading)
        second.start()
        user = channel_credentials(farm_pki.user("alice"))
        server_only = grpc.ssl_channel_credentials(root_certificates=Path(files.ca).read_bytes())
        for address, credentials, leader in (
            (second.address, user, first.address),
            (second.token_address, server_only, first.token_address),
        ):
            async with grpc.aio.secure_channel(address, credentials) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await requests_pb2_grpc.RequestsStub(channel).ListRequests(
                        requests_pb2.ListRequestsRequest()
                    )
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert dict(caught.value.trailing_metadata() or ())["boruta-leader"] == leader
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest())
                assert reply.status == NOT_SERVING
    finally:
        first.stop()
        second.stop()


async def wait_for_line(path: Path, text: str, timeout: float = 60) -> str:
    """The first line of the log at path that holds text, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        for line in path.read_text().splitlines():
            if text in line:
                return line
        assert time.monotonic() < deadline, f"{text!r} not in {path}:\n{path.read_text()}"
        await asyncio.sleep(0.05)


async def test_a_standby_takes_over_from_its_warm_copy_with_the_queue_as_it_was(
    schedulers: Callable[[str], SchedulerProcess],
) -> None:
    """The standby loads its copy, then follows the leader's commits; after kill -9 the new
    leader's core comes from that copy plus the rows changed since its last read, and is
    the core a cold load would give: the same requests, states, jobs and queue positions."""
    first, second = schedulers("first"), schedulers("second")
    leader = first.start()
    await asyncio.to_thread(first.wait_leading)
    farm = Farm(leader)
    await farm.add_dryad([board("w1", board="x"), board("w2", board="x")])
    alice, bob = farm.client("alice"), farm.client("bob")

    async def queue(count: int) -> list[types_pb2.RequestInfo]:
        made = []
        for n in range(count):
            client = alice if n % 2 else bob
            caps = {"board": "x" if n % 3 else "y"}  # no board y: those wait for good
            made.append(await client.new(caps, priority=1 + n % 7, accept_unsatisfiable=True))
        return made

    running = [await alice.new({"board": "x"}, priority=5), await bob.new({"board": "x"})]
    # Handed out: their tunnels are open and stored, so their rows change no more.
    await alice.acquire(running[0].id)
    await bob.acquire(running[1].id)
    waiting = await queue(20)
    standby = second.start()
    loaded = await wait_for_line(second.log_path, "warm copy loaded")
    assert "live_requests=22" in loaded, loaded
    # What the standby follows rather than loads.
    waiting += await queue(20)
    closed = await alice.new({"board": "y"}, accept_unsatisfiable=True)
    await alice.close(closed.id)
    ids = [r.id for r in [*running, *waiting, closed]]
    # GetRequestInfo answers from the core: states, jobs and queue positions as it has them.
    before = [await farm.admin.info(i) for i in ids]

    first.kill()
    assert await asyncio.to_thread(second.wait_leading) == 2
    other = Farm(standby)
    assert [await other.admin.info(i) for i in ids] == before
    took = await wait_for_line(second.log_path, "taking over from the warm copy")
    restored = await wait_for_line(second.log_path, "state restored")
    assert "source='warm copy'" in restored and "live_requests=42" in restored, restored
    # At most what changed after the copy was loaded (21 requests, 2 workers), however
    # many reads of it the standby made meanwhile: never every live request.
    rows_read = int(took.split("rows_read=")[1].split()[0])
    assert rows_read <= 23, took
    # The new leader's core goes on: a board frees, the most important waiting request
    # it can serve runs.
    await other.client("alice").close(running[0].id)
    first_in_line = min(
        (r for r in waiting if r.caps["board"] == "x"), key=lambda r: (r.priority, r.id)
    )
    await other.admin.wait_request(first_in_line.id, S.REQUEST_STATE_IN_PROGRESS)
    await farm.close()
    await other.close()
