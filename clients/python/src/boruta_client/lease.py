"""Leases: queue for a board (or several at once), wait, keep the jobs alive while the block
runs, give them back. The one implementation is AsyncLease; Client's Lease is a blocking
facade over it, and AsyncBoardsLease (BoardsLease) the same lease handing out every board."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypedDict, TypeVar, cast

from boruta_client.errors import (
    BorutaError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    WrongRequestState,
)
from boruta_client.ssh import BoardSSH, Sink
from boruta_client.types import (
    Access,
    Acquired,
    Job,
    Profiles,
    Request,
    RequestState,
    Together,
)

if TYPE_CHECKING:  # the client makes leases; a lease only calls it back
    from boruta_client.aio import AsyncClient

log = logging.getLogger(__name__)

# Prolong when this share of the job's first time slice is left (at most MAX_LEAD).
LEAD_SHARE = 1 / 3
MAX_LEAD = timedelta(seconds=60)
# The job timeout a lease asks for while it prolongs by itself: the board of a client that
# died (kill -9, a machine gone) comes free this long after its last prolong at the latest,
# instead of after the scheduler's job_timeout (an hour by default). The price: a live
# client that cannot reach the scheduler for longer than its prolong lead loses its board.
LEASE_JOB_TIMEOUT = timedelta(minutes=5)


def lease_job_timeout(asked: timedelta | None, auto_prolong: bool) -> timedelta | None:
    """The job timeout a lease asks for: the one given, else LEASE_JOB_TIMEOUT when it
    prolongs by itself, else the scheduler's (None), since nobody would prolong a short one."""
    if asked is not None:
        return asked
    return LEASE_JOB_TIMEOUT if auto_prolong else None


def prolong_lead(job: Job, now: datetime) -> timedelta:
    """How long before the job's timeout the lease prolongs it: a share of the time left
    now, which right after a prolong is the scheduler's prolong step, so the lead never
    outgrows the step (that would prolong again at once, and use up the prolong limit)."""
    left = job.timeout_at - now
    return max(min(left * LEAD_SHARE, MAX_LEAD), timedelta(milliseconds=200))


def next_prolong_delay(job: Job, now: datetime, lead: timedelta, moved: bool) -> float:
    """Seconds to sleep before the next ProlongAccess; 0 when it is due."""
    delay = (job.timeout_at - now - lead).total_seconds()
    if not moved:
        # The last prolong changed nothing (the scheduler allows no more yet): back off.
        delay = max(delay, lead.total_seconds() / 2)
    return max(delay, 0.0)


def should_retry_prolong(error: BorutaError) -> bool:
    """A scheduler that is unreachable or slow may answer in time; a limit reached, a job
    that ended or a refusal will not change."""
    final = (FailedPrecondition, NotFound, InvalidArgument, PermissionDenied, Unauthenticated)
    return not isinstance(error, final)


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """What a lease asks for and how it waits; see AsyncClient.lease."""

    priority: int = 0
    valid_after: datetime | None = None
    deadline: datetime | None = None
    accept_unsatisfiable: bool = False
    no_wait: bool = False
    job_timeout: timedelta | None = None
    wait_timeout: float | None = None
    on_wait: Callable[[Request], None] | None = None
    auto_prolong: bool = True


class LeaseOptions(TypedDict, total=False):
    """The keyword arguments of AsyncClient.lease and Client.lease, for their overloads."""

    priority: int
    valid_after: datetime | None
    deadline: datetime | None
    wait_timeout: float | None
    no_wait: bool
    accept_unsatisfiable: bool
    on_wait: Callable[[Request], None] | None
    auto_prolong: bool
    job_timeout: timedelta | None
    together: Together | None


P = ParamSpec("P")
R = TypeVar("R")
# Keyword arguments of BoardSSH's operations that are output sinks.
_SINKS = ("stdout", "stderr")


def _called_in(loop: asyncio.AbstractEventLoop, sink: Sink) -> Sink:
    def forward(data: bytes) -> None:
        loop.call_soon_threadsafe(sink, data)

    return forward


def _in_thread(
    operation: Callable[Concatenate[BoardSSH, P], R],
) -> Callable[Concatenate[AsyncBoardSSH, P], Awaitable[R]]:
    """A BoardSSH operation as a coroutine of AsyncBoardSSH, with the same signature and
    docs: it runs in a thread (opening the connection there on first use), and calls its
    output sinks in the event loop."""

    @functools.wraps(operation)
    async def in_thread(board: AsyncBoardSSH, /, *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        for name in _SINKS:
            sink = cast("Sink | None", kwargs.get(name))
            if sink is not None:
                kwargs[name] = _called_in(loop, sink)
        return await asyncio.to_thread(lambda: operation(board.sync, *args, **kwargs))

    return in_thread


class AsyncBoardSSH:
    """BoardSSH for asyncio: the connection opens on first use; each operation runs in a
    thread, and a command's output sinks are called in the event loop."""

    def __init__(self, access: Access) -> None:
        self.access = access
        self._ssh: BoardSSH | None = None
        self._opening = threading.Lock()

    @property
    def sync(self) -> BoardSSH:
        """The blocking connection underneath, opened on first use (blocks while it opens)."""
        with self._opening:
            if self._ssh is None:
                self._ssh = BoardSSH(self.access)
            return self._ssh

    async def __call__(self) -> AsyncBoardSSH:
        """``await board.ssh()``, as before ``board.ssh`` became a property: opens it."""
        await asyncio.to_thread(lambda: self.sync)
        return self

    run = _in_thread(BoardSSH.run)
    put = _in_thread(BoardSSH.put)
    get = _in_thread(BoardSSH.get)

    async def close(self) -> None:
        with self._opening:
            ssh, self._ssh = self._ssh, None
        if ssh is not None:
            await asyncio.to_thread(ssh.close)


class AsyncBoard:
    """A board leased for a job: its access, its current job (kept up to date by the
    lease's prolongs), a lazy SSH connection, and its profile's name and place (one board
    of a request of caps: "" and 0)."""

    request: Request
    access: Access
    job: Job
    prolong_error: BorutaError | None
    ssh: AsyncBoardSSH
    name: str
    index: int

    def __init__(
        self, request: Request, access: Access, job: Job, name: str = "", index: int = 0
    ) -> None:
        self.request = request
        self.access = access
        self.job = job
        self.prolong_error = None
        self.ssh = AsyncBoardSSH(access)
        self.name = name
        self.index = index

    @property
    def worker_uuid(self) -> str:
        return self.job.worker_uuid

    async def close(self) -> None:
        """Close the SSH connection (the next use opens a new one)."""
        await self.ssh.close()


def boards_of(request: Request, acquired: Acquired) -> tuple[AsyncBoard, ...]:
    """A board per profile, in profile order (one for a request of caps alone)."""
    if not acquired.boards:
        return (AsyncBoard(request, acquired.access, acquired.job),)
    return tuple(
        AsyncBoard(request, each.access, each.job, each.name, index)
        for index, each in enumerate(acquired.boards)
    )


class AsyncBoards:
    """The boards of a request of several profiles, in profile order: ``boards[0]`` or
    ``boards["relay"]`` (by the profile's name), and iteration in order."""

    def __init__(self, boards: tuple[AsyncBoard, ...]) -> None:
        self._boards = boards
        self._named = {board.name: board for board in boards if board.name}

    @property
    def names(self) -> tuple[str, ...]:
        """Each board's profile name ("" for an unnamed one), in profile order."""
        return tuple(board.name for board in self._boards)

    def __getitem__(self, key: int | str) -> AsyncBoard:
        if isinstance(key, str):
            found = self._named.get(key)
            if found is None:
                raise KeyError(f"no board named {key!r}; the names are {self.names}")
            return found
        return self._boards[key]

    def __iter__(self) -> Iterator[AsyncBoard]:
        return iter(self._boards)

    def __len__(self) -> int:
        return len(self._boards)


class AsyncLease:
    """``async with client.lease(caps) as board:`` queues, waits, keeps the job alive
    with ProlongAccess while the block runs, and closes the request on any way out,
    cancellation included. With profiles, board is the first profile's and boards holds
    them all."""

    request: Request | None
    board: AsyncBoard | None
    boards: tuple[AsyncBoard, ...]

    def __init__(
        self,
        client: AsyncClient,
        caps: Mapping[str, str],
        terms: LeaseTerms,
        existing: int | None = None,
        profiles: Profiles | None = None,
        together: Together | None = None,
    ) -> None:
        self._client = client
        self._caps = dict(caps)
        self._profiles = profiles
        self._together = together
        self._terms = terms
        # An existing request is attached to, not created, and left open on exit.
        self._existing = existing
        self.request = None
        self.board = None
        self.boards = ()
        self._prolonger: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncBoard:
        client, terms = self._client, self._terms
        if self._existing is not None:
            self.request = request = await client.get_request(self._existing)
        else:
            request = await self._create()
        try:
            if terms.on_wait is not None and request.state is RequestState.WAITING:
                terms.on_wait(await client.get_request(request.id))
            acquired = await client.acquire_worker(
                request.id, timeout=terms.wait_timeout, on_wait=terms.on_wait
            )
            self.boards = boards_of(request, acquired)
            self.board = board = self.boards[0]
            if terms.auto_prolong:
                self._prolonger = asyncio.create_task(self._keep_alive(board))
        except BaseException:
            await asyncio.shield(self._give_back())
            raise
        return board

    async def _create(self) -> Request:
        terms = self._terms
        # Shielded: if this task is cancelled (Ctrl-C) while NewRequest is in flight, the
        # answer is still awaited so that the request it created gets closed.
        creating = asyncio.ensure_future(
            self._client.new_request(
                self._caps,
                priority=terms.priority,
                valid_after=terms.valid_after,
                deadline=terms.deadline,
                accept_unsatisfiable=terms.accept_unsatisfiable,
                no_wait=terms.no_wait,
                job_timeout=lease_job_timeout(terms.job_timeout, terms.auto_prolong),
                profiles=self._profiles,
                together=self._together,
            )
        )
        try:
            self.request = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(BorutaError):
                self.request = await creating
                await self._give_back()
            raise
        return self.request

    async def __aexit__(self, *exc: object) -> None:
        # Shielded: a cancelled task still gives its board back.
        await asyncio.shield(self._give_back())

    async def _give_back(self) -> None:
        if self._prolonger is not None:
            self._prolonger.cancel()
            try:
                await self._prolonger
            except asyncio.CancelledError:
                pass
            except Exception:  # a dead prolonger must not keep the request open
                log.exception("prolonging failed", extra={"request": self.request})
            self._prolonger = None
        for board in self.boards:
            await board.close()
        if self.request is not None and self._existing is None:
            # It may have ended on its own (timeout, failure) or been closed elsewhere.
            with contextlib.suppress(WrongRequestState, NotFound):
                self.request = await self._client.close_request(self.request.id)

    async def _keep_alive(self, board: AsyncBoard) -> None:
        lead = prolong_lead(board.job, datetime.now(UTC))
        moved = True
        while True:
            await asyncio.sleep(next_prolong_delay(board.job, datetime.now(UTC), lead, moved))
            try:
                job = await self._client.prolong_access(
                    board.request.id, prolong_count=board.job.prolong_count
                )
            except BorutaError as error:
                if not should_retry_prolong(error):
                    board.prolong_error = error
                    log.warning(
                        "job not prolonged",
                        extra={"request": board.request.id, "why": str(error)},
                    )
                    return
                await asyncio.sleep(1.0)
                continue
            moved = job.timeout_at > board.job.timeout_at
            board.job = job
            for other in self.boards[1:]:
                # The jobs of one request share their timeout; the answer is the first's.
                other.job = replace(
                    other.job, timeout_at=job.timeout_at, prolong_count=job.prolong_count
                )
            if moved:
                lead = prolong_lead(job, datetime.now(UTC))


class AsyncBoardsLease:
    """``async with client.lease_boards({"dut": caps, "relay": caps}) as boards:`` is
    AsyncLease for several boards at once: the request gets them all or waits holding
    none, and the block gets every board, by name or place."""

    def __init__(self, lease: AsyncLease) -> None:
        self._lease = lease

    @property
    def request(self) -> Request | None:
        return self._lease.request

    @property
    def lease(self) -> AsyncLease:
        """The lease underneath (its board is the first profile's)."""
        return self._lease

    async def __aenter__(self) -> AsyncBoards:
        await self._lease.__aenter__()
        return AsyncBoards(self._lease.boards)

    async def __aexit__(self, *exc: object) -> None:
        await self._lease.__aexit__(*exc)
