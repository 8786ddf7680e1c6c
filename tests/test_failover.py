"""The failover test of issue 11, through real processes: two schedulers on one PostgreSQL
database, a boruta-relay, a stub dryad process with simulated boards, a real dryad behind
OpenSSH sshd, 20 clients running full cycles, 200 requests waiting, and an SSH session open
through a relay tunnel. The leader is killed (-9) five times in a row, each time started
again as the standby (as its systemd unit would); after each kill nothing acknowledged is
lost, no request is made twice, no board is ever in two jobs, the waiting requests are kept
and matched later, the SSH session still answers, and the time from the kill to the first
call the new leader answers is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
import paramiko
from access_kit import DryadProcess, Login, dryad_toml, running_sshd
from boruta.v1 import requests_pb2, requests_pb2_grpc
from boruta_client import AsyncClient, AsyncWatch, Request, RequestState, WorkerState
from farm_kit import SchedulerProcess, identity, stop_process
from relay_kit import RelayProcess
from system_kit import remove_users, unique_prefix, unique_uuid

KILLS = 5
CYCLERS = 20
WAITING = 200
# Drained (matched, then closed) in each round, while the leader is killed mid-way; the
# rest after the last kill.
DRAINED_PER_ROUND = 30
CYCLE_BOARDS, WAITING_BOARDS = 8, 2
# Dryads follow the leader themselves; heartbeat silence during a takeover on a loaded
# machine must not fail their boards.
OPTIONS = ("--heartbeat-interval", "0.3s", "--heartbeat-timeout", "60s")
# Generous: how long clients keep retrying across a takeover, and how long the test waits
# for a condition, on a loaded machine. Not a measure of anything.
FAILOVER = 120.0
PATIENCE = 180.0
STUB_READY = "boruta-stub-dryad listening on "
STUB_REGISTERED = "boruta-stub-dryad registered "


class StubDryadProcess:
    """boruta-stub-dryad: simulated boards in a process of their own, following the leader
    among the scheduler addresses it is given."""

    def __init__(self, log: Path, schedulers: str, *options: str) -> None:
        self.log = log
        self.command = [
            sys.executable,
            "-m",
            "boruta_dryad.stub",
            "--scheduler",
            schedulers,
            *options,
        ]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=open(self.log, "a"),  # noqa: SIM115 - lives as long as the process
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        for expected in (STUB_READY, STUB_REGISTERED):
            line = self.proc.stdout.readline()
            if not line.startswith(expected):
                self.proc.kill()
                raise RuntimeError(f"stub dryad: {line!r}\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class Background:
    """The test's client tasks; waiting for a condition also fails as soon as one of them
    failed, with its error (a client error that reached user code)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, work: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    def check(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()

    async def until(self, what: str, condition: Callable[[], bool]) -> None:
        give_up = time.monotonic() + PATIENCE
        while not condition():
            self.check()
            assert time.monotonic() < give_up, f"still not so after {PATIENCE:g} s: {what}"
            await asyncio.sleep(0.02)

    async def finish(self) -> None:
        for task in self.tasks:
            await task
        self.tasks.clear()

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class Cycler:
    """A user running full cycles: NewRequest (with a key of its own), AcquireWorker,
    ProlongAccess (a tiny action on the job), CloseRequest; it notes every key it sent and
    every answer it was given."""

    user: str
    client: AsyncClient
    keys_sent: list[str] = field(default_factory=list)
    made: dict[int, str] = field(default_factory=dict)  # request id -> its key
    acquired_on: dict[int, str] = field(default_factory=dict)  # request id -> board
    closed: set[int] = field(default_factory=set)
    cycles: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            key = str(uuid.uuid4())
            self.keys_sent.append(key)
            request = await self.client.new_request({"board": "x"}, idempotency_key=key)
            self.made[request.id] = key
            acquired = await self.client.acquire_worker(request.id)
            self.acquired_on[request.id] = acquired.job.worker_uuid
            await self.client.prolong_access(request.id)
            closed = await self.client.close_request(request.id)
            assert closed.state is RequestState.DONE, closed
            self.closed.add(request.id)
            self.cycles += 1


@dataclass
class Drainer:
    """The owner of the waiting requests: closes each once it runs, as far as the test has
    allowed (allow()), so that many of them are still waiting at every kill."""

    client: AsyncClient
    made: dict[int, str] = field(default_factory=dict)  # request id -> its key
    budget: int = 0
    started: set[int] = field(default_factory=set)
    closed: set[int] = field(default_factory=set)
    _running: list[int] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def user(self) -> str:
        return self.client.identity.user

    def allow(self, budget: int) -> None:
        """Let it close this many requests in all."""
        self.budget = budget
        self._changed.set()

    async def follow(self, watch: AsyncWatch[Request]) -> None:
        """Note each request as it starts running; the watch carries on across takeovers,
        so none may be missed (or that request is never closed)."""
        async for request in watch:
            if request.state is RequestState.IN_PROGRESS and request.id not in self.started:
                self.started.add(request.id)
                self._running.append(request.id)
                self._changed.set()

    async def drain(self) -> None:
        """Close the running requests in the order they started, within the budget."""
        while len(self.closed) < WAITING:
            await self._changed.wait()
            self._changed.clear()
            while self._running and len(self.closed) < self.budget:
                request_id = self._running.pop(0)
                await self.client.acquire_worker(request_id)
                closed = await self.client.close_request(request_id)
                assert closed.state is RequestState.DONE, closed
                self.closed.add(request_id)


async def first_answer(address: str) -> float:
    """Poll address until it answers a call (a standby refuses); the monotonic time then."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = requests_pb2_grpc.RequestsStub(channel)
        give_up = time.monotonic() + PATIENCE
        while True:
            try:
                await stub.ListRequests(
                    requests_pb2.ListRequestsRequest(page_size=1),
                    metadata=identity("root", role="admin"),
                    timeout=1,
                )
                return time.monotonic()
            except grpc.aio.AioRpcError:
                assert time.monotonic() < give_up, f"{address} never answered"
                await asyncio.sleep(0.005)


def overlapping_jobs(requests: Iterable[Request], *, at_rest: bool) -> list[tuple[int, int]]:
    """Pairs of requests whose jobs overlap in time on one board: a job runs from its start
    to the request's last change once it ended. A job listed as running may have ended
    since its page was read, unless at_rest (nothing changes meanwhile)."""
    jobs: dict[str, list[tuple[datetime, datetime | None, int]]] = defaultdict(list)
    for r in requests:
        if r.job is not None:
            ended = None if r.state.live else r.updated_at
            jobs[r.job.worker_uuid].append((r.job.started_at, ended, r.id))
    found = []
    for on_board in jobs.values():
        on_board.sort(key=lambda job: job[0])
        for (_, ended, first), (started, _, second) in itertools.pairwise(on_board):
            if (ended is None and at_rest) or (ended is not None and started < ended):
                found.append((first, second))
    return found


async def listing_checked(
    admin: AsyncClient, cyclers: list[Cycler], drainer: Drainer, *, at_rest: bool
) -> list[Request]:
    """Every request, listed, and what the listing must show of what clients were told;
    at_rest: no client call is in flight."""
    told = {c.user: (set(c.made), set(c.closed)) for c in cyclers}
    stored = await admin.list_requests()
    by_id = {r.id: r for r in stored}
    for cycler in cyclers:
        made, closed = told[cycler.user]
        mine = {r.id for r in stored if r.owner == cycler.user}
        # What the client was told before the listing: there, and closed if it was.
        lost = {i: by_id.get(i) for i in made - mine}
        assert not lost, f"{cycler.user} lost requests (id: what is stored there): {lost}"
        for request_id in closed:
            assert by_id[request_id].state is RequestState.DONE, by_id[request_id]
        # Made twice: a request no answer named (up to now). A client has one NewRequest
        # in flight at most, whose request may be stored before its answer arrives.
        unanswered = mine - set(cycler.made)
        assert len(unanswered) <= (0 if at_rest else 1), (cycler.user, unanswered)
        if at_rest:
            assert len(mine) == len(cycler.keys_sent) == len(set(cycler.keys_sent))
    waiting = {r.id: r for r in stored if r.owner == drainer.user}
    assert set(waiting) == set(drainer.made)
    # Kept: none of them ended but by its owner's close after it ran.
    for request in waiting.values():
        if not request.state.live:
            assert request.state is RequestState.DONE and request.job is not None, request
            assert request.id in drainer.closed or not at_rest, request
    assert overlapping_jobs(stored, at_rest=at_rest) == []
    return stored


@dataclass
class Session:
    """An SSH session through the relay's tunnel to the real dryad's board."""

    client: AsyncClient
    request_id: int
    login: Login
    ssh: paramiko.SSHClient

    async def answers(self, word: str) -> bool:
        def run() -> str:
            _, out, _ = self.ssh.exec_command(f"echo {word}", timeout=30)
            return str(out.read().decode()).strip()

        return await asyncio.to_thread(run) == word

    async def handed_out_again(self) -> bool:
        """Whether AcquireWorker (on the leader now) hands out the tunnel it is open on."""
        a = (await self.client.acquire_worker(self.request_id)).access
        return (a.host, a.port, a.username) == (
            self.login.host,
            self.login.port,
            self.login.username,
        )

    async def close(self) -> None:
        self.ssh.close()
        await self.client.close_request(self.request_id)


async def open_session(client: AsyncClient, board_uuid: str) -> Session:
    request = await client.new_request({"board": "ssh"})
    acquired = await client.acquire_worker(request.id)
    assert acquired.job.worker_uuid == board_uuid
    a = acquired.access
    login = Login(a.host, a.port, a.username, a.private_key_pem, a.host_keys)
    return Session(client, request.id, login, await asyncio.to_thread(login.client))


async def until_idle(admin: AsyncClient, boards: set[str]) -> None:
    give_up = time.monotonic() + PATIENCE
    while True:
        workers = await admin.list_workers()
        if {w.uuid for w in workers if w.state is WorkerState.IDLE} >= boards:
            return
        registered = {w.uuid for w in workers if w.state is WorkerState.MAINTENANCE}
        for uuid_ in registered & boards:
            await admin.set_worker_state(uuid_, WorkerState.IDLE, "failover test")
        assert time.monotonic() < give_up, f"boards not IDLE: {workers}"
        await asyncio.sleep(0.05)


async def test_five_kill_9s_of_the_leader_lose_nothing(tmp_path: Path, postgres_url: str) -> None:
    with running_sshd(tmp_path / "sshd") as sshd:
        prefix = unique_prefix()
        relay = RelayProcess(tmp_path / "relay")
        shared = ("--store", postgres_url, "--relay", relay.socket)
        schedulers = [SchedulerProcess(tmp_path / n, *OPTIONS, *shared) for n in ("a", "b")]
        stub: StubDryadProcess | None = None
        dryad: DryadProcess | None = None
        background = Background()
        clients: list[AsyncClient] = []
        try:
            relay.start()
            schedulers[0].start()
            await asyncio.to_thread(schedulers[0].wait_leading)
            schedulers[1].start()
            addresses = [s.address for s in schedulers]
            listed = ",".join(addresses)

            board_prefix = f"{uuid.uuid4().hex[:12]}-"
            boards = CYCLE_BOARDS + WAITING_BOARDS
            pools = ",".join(["x"] * (CYCLE_BOARDS // WAITING_BOARDS) + ["y"])
            stub = StubDryadProcess(
                tmp_path / "stub-dryad.log",
                listed,
                *("--boards", str(boards), "--prefix", board_prefix),
                *("--round-robin", f"board={pools}"),
                # Keys are not what this test looks at: a small pool spares the CPU.
                *("--key-pool", "4"),
            )
            stub.start()
            ssh_board = unique_uuid("ssh")
            config = tmp_path / "dryad.toml"
            config.write_text(
                dryad_toml(
                    listed,
                    sshd.address,
                    tmp_path / "dryad",
                    prefix,
                    host_keys=sshd.host_key_public,
                    caps='board = "ssh"',
                    uuid=ssh_board,
                )
            )
            dryad = DryadProcess(config)
            dryad.start()

            def client(user: str, admin: bool = False) -> AsyncClient:
                made = AsyncClient(addresses, user=user, admin=admin, failover_timeout=FAILOVER)
                clients.append(made)
                return made

            admin = client("root", admin=True)
            await until_idle(admin, {f"{board_prefix}{i}" for i in range(boards)} | {ssh_board})
            session = await open_session(client("ssh-user"), ssh_board)
            assert await session.answers("before")

            drainer = Drainer(client("waiting-user"))
            watch = await drainer.client.watch_requests(owners=[drainer.user])
            background.start(drainer.follow(watch))
            background.start(drainer.drain())

            async def make_waiting(n: int) -> None:
                for _ in range(n):
                    key = str(uuid.uuid4())
                    made = await drainer.client.new_request({"board": "y"}, idempotency_key=key)
                    drainer.made[made.id] = key

            await asyncio.gather(*(make_waiting(WAITING // 10) for _ in range(10)))
            stop = asyncio.Event()
            cyclers = [Cycler(f"cycler-{i}", client(f"cycler-{i}")) for i in range(CYCLERS)]
            for cycler in cyclers:
                background.start(cycler.run(stop))

            takeovers: list[float] = []
            leader, standby = 0, 1
            for kill in range(1, KILLS + 1):
                # Each client completes full cycles on this leader, and the waiting
                # requests are being matched and closed when it dies.
                before = [c.cycles for c in cyclers]

                def cycled(before: list[int] = before) -> bool:
                    return all(c.cycles > n for c, n in zip(cyclers, before, strict=True))

                drainer.allow(kill * DRAINED_PER_ROUND)
                await background.until("each cycler completes a cycle", cycled)
                await background.until(
                    "the waiting requests are being drained",
                    lambda: len(drainer.closed) >= drainer.budget - DRAINED_PER_ROUND // 2,
                )
                # Most of the waiting requests are still waiting as the leader dies.
                still_waiting = WAITING - len(drainer.started)
                assert still_waiting >= WAITING - drainer.budget - WAITING_BOARDS

                killed = time.monotonic()
                schedulers[leader].kill()
                answered = await first_answer(schedulers[standby].address)
                takeovers.append(answered - killed)
                print(
                    f"kill {kill}: {takeovers[-1]:.3f} s to the first call the new leader answered"
                )
                await asyncio.to_thread(schedulers[standby].wait_leading)
                # Back as the standby on its port, as its unit would start it.
                schedulers[leader].start(listen=schedulers[leader].address)
                leader, standby = standby, leader

                assert await session.answers(f"after-kill-{kill}")
                assert await session.handed_out_again()
                await listing_checked(admin, cyclers, drainer, at_rest=False)

            # The rest of the waiting requests are matched, then the clients stop.
            drainer.allow(WAITING)
            await background.until(
                "every waiting request ran", lambda: len(drainer.closed) == WAITING
            )
            watch.close()
            stop.set()
            await background.finish()
            stored = await listing_checked(admin, cyclers, drainer, at_rest=True)
            by_id = {r.id: r for r in stored}
            for cycler in cyclers:
                for request_id, board in cycler.acquired_on.items():
                    job = by_id[request_id].job
                    assert job is not None and job.worker_uuid == board
            assert {by_id[i].state for i in drainer.made} == {RequestState.DONE}
            assert await session.answers("at-the-end")
            assert by_id[session.request_id].state is RequestState.IN_PROGRESS
            await session.close()

            assert len(takeovers) == KILLS and all(math.isfinite(t) for t in takeovers)
            cycles = sum(c.cycles for c in cyclers)
            took = " ".join(f"{t:.2f}" for t in takeovers)
            print(f"{cycles} full cycles, {len(stored)} requests; takeovers: {took} s")
        finally:
            await background.cancel()
            for made in clients:
                await made.close()
            with contextlib.ExitStack() as teardown:
                teardown.callback(remove_users, prefix)
                teardown.callback(relay.remove)
                for scheduler in schedulers:
                    if scheduler.proc is not None:
                        teardown.callback(scheduler.stop)
                if stub is not None:
                    teardown.callback(stub.stop)
                if dryad is not None:
                    teardown.callback(dryad.stop)
