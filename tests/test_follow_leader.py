"""Clients, schedctl and dryads that know several scheduler addresses follow the one that
serves: a scheduler killed (-9) and started again on another port, and a standby (a real
gRPC server here) that answers every call UNAVAILABLE naming the leader in boruta-leader.
A lease, a blocked AcquireWorker and an open watch carry on; a NewRequest retried across
the change makes no second request."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from boruta.schedulers import LEADER_KEY
from boruta.v1 import types_pb2
from boruta_client import (
    AsyncClient,
    AsyncWatch,
    IdempotencyKeyReused,
    Request,
    RequestState,
    WrongRequestState,
)
from boruta_dryad.stub import StubDryad
from boruta_scheduler.config import ServerConfig
from boruta_scheduler.rpc.standby import Standby as RealStandby
from farm_kit import SHARED_KEYS, Farm, SchedulerProcess, board, schedctl_env
from schedctl import exits
from test_schedctl_e2e import as_json, schedctl

OPTIONS = ("--heartbeat-interval", "0.2s", "--heartbeat-timeout", "30s")
# Generous: a loaded machine may take a while to start a scheduler process.
FAILOVER = 120.0


def unused_port() -> int:
    """A port nobody listens on now, for the scheduler to be started on later."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Standby:
    """A real gRPC server that answers every call as a standby scheduler does: UNAVAILABLE,
    with the leader's address (or "") in the trailing metadata key boruta-leader."""

    def __init__(self, leader: str) -> None:
        self.leader = leader
        self.calls: list[str] = []
        self.address = ""
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((_Refuse(self),))

    async def start(self) -> str:
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        await self._server.stop(0)


class _Refuse(grpc.GenericRpcHandler):
    def __init__(self, standby: Standby) -> None:
        self._standby = standby

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        standby = self._standby
        method = str(details.method)

        async def refuse(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            standby.calls.append(method)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "this scheduler is a standby",
                trailing_metadata=((LEADER_KEY, standby.leader),),
            )

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture(params=["sqlite", "postgresql"])
async def scheduler(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SchedulerProcess]:
    """A scheduler process on SQLite in its data directory, or on a fresh PostgreSQL
    database (where a standby would share it)."""
    store = []
    if request.param == "postgresql":
        store = ["--store", request.getfixturevalue("postgres_url")]
    process = SchedulerProcess(tmp_path / "state", *OPTIONS, *store)
    yield process
    process.stop()


async def collect(
    watch: AsyncWatch[Request], into: list[Request], until: Callable[[], bool]
) -> None:
    async for item in watch:
        into.append(item)
        if until():
            return


def assert_each_change_once(seen: list[Request]) -> None:
    """No change delivered twice, and each request's changes in the order they happened."""
    by_id: dict[int, list[Request]] = {}
    for item in seen:
        by_id.setdefault(item.id, []).append(item)
    for changes in by_id.values():
        assert all(a != b for i, a in enumerate(changes) for b in changes[i + 1 :]), changes
        times = [c.updated_at for c in changes]
        assert times == sorted(times), changes


async def carry_on_across(
    addresses: str, change: Callable[[], Awaitable[str]], setup_at: str | None = None
) -> None:
    """A dryad, a lease, a blocked AcquireWorker and a watch of a client given addresses;
    change() moves the farm to another scheduler and returns its address: all of them
    carry on there, and a keyed NewRequest (or IssueToken) retried across the change makes
    one request (token).
    setup_at is where the board is put into service (default: the first address)."""
    farm = Farm(setup_at or addresses.split(",")[0])
    dryad = StubDryad(addresses, [board("w1", board="x")], keys=SHARED_KEYS)
    await dryad.start()
    await dryad.wait_registered()
    await farm.admin.set_state("w1", types_pb2.WORKER_STATE_IDLE)
    await farm.admin.wait_worker("w1", types_pb2.WORKER_STATE_IDLE)
    await farm.channel.close()

    client = AsyncClient(addresses, user="alice", failover_timeout=FAILOVER)
    watch = await client.watch_requests(owners=["alice"])
    seen: list[Request] = []
    lease = client.lease({"board": "x"})
    board_ = await lease.__aenter__()  # runs on w1
    waiting = await client.new_request({"board": "x"})
    acquiring = asyncio.ensure_future(client.acquire_worker(waiting.id))
    admin = AsyncClient(addresses, user="root", admin=True, failover_timeout=FAILOVER)
    token_key = str(uuid.uuid4())
    issued = await admin.issue_token("ci-bot", idempotency_key=token_key)

    now_serving = await change()
    # An IssueToken retried after the change: the same token, and its secret again.
    assert await admin.issue_token("ci-bot", idempotency_key=token_key) == issued
    assert len(await admin.list_tokens()) == 1
    await admin.close()
    # A NewRequest retried after the change: one request, the same answer.
    made = await client.new_request({"board": "x"}, idempotency_key="once")
    assert await client.new_request({"board": "x"}, idempotency_key="once") == made
    with pytest.raises(IdempotencyKeyReused, match="new key for a new request"):
        await client.new_request({"board": "x"}, priority=2, idempotency_key="once")
    assert client.scheduler == now_serving
    assert [r.id for r in await client.list_requests()] == [1, 2, 3]
    # The lease's job goes on: prolonged on the new scheduler, then given back, and the
    # AcquireWorker that was blocked across the change gets the board.
    assert (await client.prolong_access(board_.request.id)).worker_uuid == "w1"
    await lease.__aexit__(None, None, None)
    acquired = await acquiring
    assert acquired.job.worker_uuid == "w1"

    def done() -> bool:
        last = {r.id: r.state for r in seen}
        return last.get(2) is RequestState.IN_PROGRESS and 3 in last

    # Read only now: the stream broke at the change with changes behind it, which the
    # watch catches up with when it opens again.
    await collect(watch, seen, done)
    watch.close()
    assert_each_change_once(seen)
    assert {r.id: r.state for r in seen} == {
        1: RequestState.DONE,
        2: RequestState.IN_PROGRESS,
        3: RequestState.WAITING,
    }
    # The dryad followed too: it heartbeats to the scheduler that serves now.
    await dryad.wait_heartbeats("w1", dryad.heartbeats("w1") + 2)
    assert dryad.link is not None and dryad.link.scheduler == now_serving
    await client.close()
    await dryad.stop()


async def test_everything_carries_on_across_a_kill_and_a_start_on_another_port(
    scheduler: SchedulerProcess,
) -> None:
    first = scheduler.start()
    second = f"127.0.0.1:{unused_port()}"

    async def restart_elsewhere() -> str:
        scheduler.kill()
        return scheduler.start(listen=second)

    await carry_on_across(f"{first},{second}", restart_elsewhere)


async def test_a_standby_sends_clients_schedctl_and_dryads_to_the_leader(
    scheduler: SchedulerProcess, tmp_path: Path
) -> None:
    leader = scheduler.start()
    standby = Standby(leader)
    await standby.start()
    lost = Standby("")  # a standby that knows no leader: the next address is tried
    await lost.start()
    try:
        # The leader is in nobody's list: the standby's answer is enough.
        dryad = StubDryad(standby.address, [board("w1", board="x")], keys=SHARED_KEYS)
        await dryad.start()
        await dryad.wait_registered()
        assert dryad.link is not None and dryad.link.scheduler == leader
        assert "/boruta.v1.Superviser/Register" in standby.calls
        client = AsyncClient([lost.address, standby.address], user="bob")
        watch = await client.watch_workers()  # a stream, opened on the leader
        made = await client.new_request({"board": "x"})
        assert client.scheduler == leader
        # Only the first call went the long way round; the client stays with the leader.
        assert lost.calls == ["/boruta.v1.Workers/WatchWorkers"]
        assert standby.calls[-1] == "/boruta.v1.Workers/WatchWorkers"
        assert (await client.get_request(made.id)).owner == "bob"
        watch.close()
        await client.close()
        env = schedctl_env(standby.address, tmp_path / "home", user="carol")
        env["BORUTA_SCHEDULERS"] = f"{lost.address},{standby.address}"
        # In a thread: the standbys answer from this test's event loop.
        made_by_schedctl = await asyncio.to_thread(as_json, env, "requests", "new", "board=x")
        assert isinstance(made_by_schedctl, dict) and made_by_schedctl["owner"] == "carol"
        assert "/boruta.v1.Requests/NewRequest" in standby.calls
        # A CI step run twice with its job's key makes one request.
        new = ("requests", "new", "board=x", "--idempotency-key", "ci-job-7")
        once = await asyncio.to_thread(as_json, env, *new)
        assert await asyncio.to_thread(as_json, env, *new) == once
        refused = await asyncio.to_thread(schedctl, env, *new, "-p", "3", check=exits.WRONG_STATE)
        assert "already used --idempotency-key 'ci-job-7' for request" in refused.stderr
        await dryad.stop()
    finally:
        await standby.stop()
        await lost.stop()


async def test_everything_carries_on_across_a_takeover(tmp_path: Path, postgres_url: str) -> None:
    """Two schedulers on one PostgreSQL database: the client and the dryad list the standby
    first, are sent to the leader, and follow the standby when it takes over a kill -9."""
    first, second = (
        SchedulerProcess(tmp_path / name, *OPTIONS, "--store", postgres_url)
        for name in ("first", "second")
    )
    try:
        leader = first.start()
        await asyncio.to_thread(first.wait_leading)
        standby = second.start()

        async def take_over() -> str:
            first.kill()
            await asyncio.to_thread(second.wait_leading)
            return standby

        await carry_on_across(f"{standby},{leader}", take_over, setup_at=leader)
    finally:
        first.stop()
        second.stop()


async def test_calls_a_standby_took_in_as_it_hands_its_ports_over_carry_on(farm: Farm) -> None:
    """A standby stops its gRPC servers when it takes over; calls they had taken in but not
    yet handled end CANCELLED (not UNAVAILABLE), and the client goes on to the next."""
    standby = RealStandby(
        ServerConfig(listen="127.0.0.1:0", plaintext=True), None, lambda tokens: farm.address
    )
    await standby.start()
    addresses = [f"127.0.0.1:{standby.port}", farm.address]
    stopped = asyncio.Event()
    made: list[Request] = []

    async def keep_calling() -> None:
        # Fresh clients, each calling the standby first, until after it stopped.
        while not stopped.is_set():
            client = AsyncClient(addresses, user="alice")
            made.append(await client.new_request({"board": "x"}, accept_unsatisfiable=True))
            await client.close()

    callers = [asyncio.ensure_future(keep_calling()) for _ in range(20)]
    while len(made) < 20:  # calls flow
        await asyncio.sleep(0.01)
    await standby.stop()
    stopped.set()
    await asyncio.gather(*callers)
    assert len({r.id for r in made}) == len(made)


class AnswerLost(grpc.GenericRpcHandler):
    """A gRPC server in front of a scheduler that passes a call on, then drops the answer
    as a connection cut (UNAVAILABLE) would: the scheduler acted, the caller never heard."""

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler
        self.passed: list[str] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = str(details.method)

        async def pass_on(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            async with grpc.aio.insecure_channel(self.scheduler) as channel:
                call = channel.unary_unary(method)
                await call(request, metadata=context.invocation_metadata())
            self.passed.append(method)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer")

        return grpc.unary_unary_rpc_method_handler(pass_on)


async def test_a_close_whose_answer_was_lost_answers_the_closed_request(farm: Farm) -> None:
    """CloseRequest retried after its answer was lost finds the request closed (by the
    first attempt) and returns it, rather than raising that it is no longer open."""
    lossy = grpc.aio.server()
    losing = AnswerLost(farm.address)
    lossy.add_generic_rpc_handlers((losing,))
    port = lossy.add_insecure_port("127.0.0.1:0")
    await lossy.start()
    try:
        direct = AsyncClient(farm.address, user="alice")
        waiting = await direct.new_request({"board": "x"}, accept_unsatisfiable=True)
        client = AsyncClient([f"127.0.0.1:{port}", farm.address], user="alice")
        closed = await client.close_request(waiting.id)
        assert losing.passed == ["/boruta.v1.Requests/CloseRequest"]
        assert (closed.id, closed.state) == (waiting.id, RequestState.CANCELLED)
        # Without a lost answer, closing a closed request is still an error.
        with pytest.raises(WrongRequestState, match="is CANCELLED"):
            await direct.close_request(waiting.id)
        await client.close()
        await direct.close()
    finally:
        await lossy.stop(0)
