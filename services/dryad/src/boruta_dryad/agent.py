"""The dryad's side of the Superviser service: register each board, then keep it alive.

If the scheduler is down or restarts, the link retries with backoff and registers again;
it never gives up. Given several scheduler addresses it follows the leader: after an
UNAVAILABLE answer it goes to the address a standby names (boruta.schedulers), else to the
next one. Each reply may carry the scheduler's verdict on the board's job users;
the link has users it no longer counts on removed (e.g. after the dryad was cut off long
enough for the scheduler to fail the board and its job).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import grpc
from boruta.schedulers import CHANNEL_OPTIONS, Backoff, SchedulerList, leader_of
from boruta.v1 import superviser_pb2, superviser_pb2_grpc, types_pb2

if TYPE_CHECKING:
    from boruta.v1.superviser_pb2_grpc import SuperviserAsyncStub

log = logging.getLogger(__name__)

# The default heartbeat interval: a scheduler back after a long outage counts silence from its
# restart (30 s by default), so the dryad must try again well within that, or its boards fail
# just before they would have registered again.
MAX_BACKOFF = 10.0
# Boards that register together (a dryad's, or a whole farm's after the scheduler restarts)
# would heartbeat together from then on: a burst of every board's call once an interval,
# stalling everyone else's calls meanwhile. The first heartbeat after a registration comes
# after a random part of the interval, and each later one up to this share of it early (or
# again after a random part, if its reply came later than that share after it was due): a
# stall that lets many heartbeats through at once does not line them up again.
HEARTBEAT_JITTER = 0.1
_RNG = random.Random()


def first_heartbeat_pause(interval: float, rng: random.Random = _RNG) -> float:
    """How long after a registration the board's first heartbeat goes: a random part of
    the interval (see HEARTBEAT_JITTER)."""
    return rng.uniform(0.0, interval)


def heartbeat_pause(interval: float, late: float, rng: random.Random = _RNG) -> float:
    """How long after a heartbeat the next one goes, given how late its reply came after
    the time the heartbeat was due: the interval, up to HEARTBEAT_JITTER of it early; after
    a reply later than that share (the scheduler, or the dryad, stalled, and the heartbeats
    due meanwhile went or were answered all at once), a random part of the interval, as
    after a registration."""
    if late > interval * HEARTBEAT_JITTER:
        return first_heartbeat_pause(interval, rng)
    return interval * rng.uniform(1.0 - HEARTBEAT_JITTER, 1.0)


IN_SERVICE = frozenset(
    (types_pb2.WORKER_STATE_IDLE, types_pb2.WORKER_STATE_PREPARE, types_pb2.WORKER_STATE_RUNNING)
)


@dataclass(frozen=True)
class BoardRegistration:
    """What the scheduler learns about one board."""

    uuid: str
    caps: Mapping[str, str]
    ssh_address: str


class JobUserKeeper(Protocol):
    """The job users of one board, as the link sees them."""

    def snapshot(self) -> frozenset[tuple[str, int]]: ...

    async def keep_only(
        self, before: frozenset[tuple[str, int]], live: Collection[str]
    ) -> list[str]: ...


class SchedulerLink:
    """Registers boards with the scheduler and sends their heartbeats; scheduler_address
    may name several schedulers, separated by commas."""

    def __init__(
        self,
        scheduler_address: str,
        dryad_address: str,
        boards: Sequence[BoardRegistration],
        *,
        instance_id: str,
        version: str,
        host_status: Callable[[], types_pb2.HostStatus] | None = None,
        metadata: Sequence[tuple[str, str]] = (("x-boruta-role", "dryad"),),
        silent: Callable[[str], bool] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        keepers: Mapping[str, JobUserKeeper] | None = None,
    ) -> None:
        self._credentials = credentials
        self._keepers = dict(keepers or {})
        self.scheduler_address = scheduler_address
        self.dryad_address = dryad_address
        self.boards = {b.uuid: b for b in boards}
        self.instance_id = instance_id
        self.version = version
        self._host_status = host_status
        self._metadata = tuple(metadata)
        self._silent = silent or (lambda uuid: False)
        self.registered: set[str] = set()
        self.heartbeats: dict[str, int] = dict.fromkeys(self.boards, 0)
        # Each board's worker state as the scheduler last told it (UNSPECIFIED: not known).
        self.states: dict[str, int] = dict.fromkeys(self.boards, types_pb2.WORKER_STATE_UNSPECIFIED)
        # Moves on whenever a round of the dryad's own checks begun before would be stale:
        # the board entered or left service, or a Prepare or Healthcheck ran its checks.
        self._check_epochs: dict[str, int] = dict.fromkeys(self.boards, 0)
        self._changed = asyncio.Event()
        self._schedulers = SchedulerList(scheduler_address.split(","))
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def scheduler(self) -> str:
        """The address of the scheduler the link calls now (the leader, as far as known)."""
        return self._schedulers.current

    def _stub(self) -> SuperviserAsyncStub:
        address = self._schedulers.current
        channel = self._channels.get(address)
        if channel is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(
                    address, self._credentials, options=CHANNEL_OPTIONS
                )
            self._channels[address] = channel
        stub: SuperviserAsyncStub = superviser_pb2_grpc.SuperviserStub(channel)
        return stub

    def start(self) -> None:
        for board in self.boards.values():
            self._tasks.append(asyncio.create_task(self._keep_alive(board)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()

    async def _wait_until(self, done: Callable[[], bool], timeout: float) -> None:
        async def loop() -> None:
            while not done():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_registered(self, timeout: float = 30.0) -> None:
        """Return once every board is registered."""
        await self._wait_until(lambda: len(self.registered) == len(self.boards), timeout)

    async def wait_heartbeats(self, uuid: str, count: int, timeout: float = 30.0) -> None:
        """Return once the scheduler has acknowledged count heartbeats of the board."""
        await self._wait_until(lambda: self.heartbeats[uuid] >= count, timeout)

    def told(self, uuid: str, state: int) -> None:
        """The scheduler said the board is in this state (a reply, or no scheduler: UNSPECIFIED)."""
        if (state in IN_SERVICE) != (self.states[uuid] in IN_SERVICE):
            self._check_epochs[uuid] += 1
        self.states[uuid] = state

    def left_service(self, uuid: str) -> None:
        """The scheduler is taking the board out of service (PutInMaintenance came)."""
        self.told(uuid, types_pb2.WORKER_STATE_BUSY)

    def checks_ran(self, uuid: str) -> None:
        """A Prepare or Healthcheck is running the board's checks: they decide now, and a
        round of the dryad's own begun earlier is stale."""
        self._check_epochs[uuid] += 1

    def check_epoch(self, uuid: str) -> int:
        """Changes whenever a round of checks begun before would be stale (see checks_ran)."""
        return self._check_epochs[uuid]

    def in_service(self, uuid: str) -> bool:
        """Whether the scheduler last said the board is in service (IDLE, PREPARE, RUNNING)."""
        return self.states[uuid] in IN_SERVICE

    async def set_fail(self, uuid: str, reason: str) -> None:
        """Tell the scheduler the board's own checks failed."""
        await self._stub().SetFail(
            superviser_pb2.SetFailRequest(worker_uuid=uuid, reason=reason, local_checks=True),
            metadata=self._metadata,
            timeout=10,
        )

    async def _keep_alive(self, board: BoardRegistration) -> None:
        backoff = Backoff(0.05, MAX_BACKOFF)
        interval = 10.0
        loop = asyncio.get_running_loop()
        due = loop.time()  # when the next call was meant to go
        while True:
            pause = interval
            keeper = self._keepers.get(board.uuid)
            address = self._schedulers.current
            stub = self._stub()
            try:
                # Taken before the call: the verdict in its reply is about these users
                # only, never about one a Prepare makes meanwhile.
                before = keeper.snapshot() if keeper is not None else frozenset()
                if board.uuid not in self.registered:
                    reply = await stub.Register(
                        superviser_pb2.RegisterRequest(
                            caps=dict(board.caps),
                            dryad_address=self.dryad_address,
                            ssh_address=board.ssh_address,
                            instance_id=self.instance_id,
                            dryad_version=self.version,
                        ),
                        metadata=self._metadata,
                        timeout=10,
                    )
                    interval = reply.heartbeat_interval.ToNanoseconds() / 1e9 or interval
                    pause = first_heartbeat_pause(interval)
                    self.told(board.uuid, reply.worker.state)
                    self.registered.add(board.uuid)
                    self._changed.set()
                    backoff.reset()
                    log.info("registered", extra={"worker": board.uuid})
                    if reply.HasField("live_job_users"):
                        await _reconcile(board.uuid, keeper, before, reply.live_job_users)
                elif not self._silent(board.uuid):
                    status = self._host_status() if self._host_status else None
                    reply_hb = await stub.Heartbeat(
                        superviser_pb2.HeartbeatRequest(worker_uuid=board.uuid, host_status=status),
                        metadata=self._metadata,
                        timeout=10,
                    )
                    interval = reply_hb.heartbeat_interval.ToNanoseconds() / 1e9 or interval
                    # Late by its own call, or by this loop's (a dryad busy with many
                    # Prepares wakes its boards late, and together).
                    pause = heartbeat_pause(interval, loop.time() - due)
                    self.told(board.uuid, reply_hb.worker_state)
                    if reply_hb.HasField("live_job_users"):
                        await _reconcile(board.uuid, keeper, before, reply_hb.live_job_users)
                    self.heartbeats[board.uuid] += 1
                    self._changed.set()
                due = loop.time() + pause
                await asyncio.sleep(pause)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    # The scheduler forgot the worker (e.g. it was deregistered): register again.
                    log.warning(
                        "the scheduler does not know this board (deregistered?); registering "
                        "it again: stop this dryad, or remove the board from its config, to "
                        "retire it",
                        extra={"worker": board.uuid, "scheduler": address},
                    )
                    self.registered.discard(board.uuid)
                    continue
                # A standby names the leader: go there at once; else try the next scheduler.
                named = self._schedulers.failed(address, leader_of(exc.trailing_metadata()))
                if board.uuid in self.registered:
                    log.warning(
                        "scheduler unreachable; will register again",
                        extra={
                            "worker": board.uuid,
                            "code": exc.code().name,
                            "scheduler": address,
                            "next": self._schedulers.current,
                        },
                    )
                self.registered.discard(board.uuid)
                self.told(board.uuid, types_pb2.WORKER_STATE_UNSPECIFIED)
                self._changed.set()
                if not named:
                    await asyncio.sleep(backoff.next())


async def _reconcile(
    uuid: str,
    keeper: JobUserKeeper | None,
    before: frozenset[tuple[str, int]],
    live: superviser_pb2.LiveJobUsers,
) -> None:
    """Remove the board's job users the scheduler no longer counts on; a failure is
    logged and tried again with the next heartbeat (the user is still in the snapshot)."""
    if keeper is None:
        return
    try:
        removed = await keeper.keep_only(before, set(live.usernames))
    except Exception as exc:
        log.error(
            "cannot remove job users the scheduler no longer counts on",
            extra={"worker": uuid, "error": str(exc)},
        )
        return
    if removed:
        log.warning(
            "removed job users the scheduler no longer counts on",
            extra={"worker": uuid, "users": ",".join(removed)},
        )
