"""AsyncClient: the client's one implementation, for asyncio code; Client is a blocking
facade over it (see _bridge)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar, Unpack, overload

import grpc
from boruta.schedulers import CHANNEL_OPTIONS, Backoff, SchedulerList, leader_of
from boruta.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    requests_pb2,
    requests_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
)

from boruta_client import _convert as convert
from boruta_client._base import ClientBase
from boruta_client._diagnose import explain
from boruta_client._resume import RequestResume, Resume, WorkerResume
from boruta_client._rpc import code_of, reason_of, translate, went_away
from boruta_client.errors import (
    AlreadyExists,
    BorutaError,
    InvalidArgument,
    NotFound,
    RequestEnded,
    ScheduleTimeout,
    Unavailable,
    WorkerNotFound,
    WrongRequestState,
    WrongWorkerState,
)
from boruta_client.lease import (
    AsyncBoard,
    AsyncBoards,
    AsyncBoardsLease,
    AsyncBoardSSH,
    AsyncLease,
    LeaseOptions,
    LeaseTerms,
)
from boruta_client.types import (
    Acquired,
    Allocation,
    AuditEvent,
    Caller,
    HistoryEntry,
    IssuedToken,
    Job,
    Profiles,
    Request,
    RequestSort,
    RequestState,
    Stack,
    Together,
    Token,
    Usage,
    UsageBy,
    Worker,
    WorkerChange,
    WorkerSort,
    WorkerState,
)

__all__ = [
    "AsyncBoard",
    "AsyncBoardSSH",
    "AsyncBoards",
    "AsyncBoardsLease",
    "AsyncClient",
    "AsyncLease",
    "AsyncWatch",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Ask = TypeVar("Ask")
Reply = TypeVar("Reply")
PAGE_SIZE = 500
# How far a retried Deregister or DeleteStack looks back in the audit log for its first
# attempt's event: the scheduler's clock may differ from ours by this much, and a busy
# farm's log is read no further than this many events.
AUDIT_CLOCK_SLACK = 300.0
AUDIT_LOOKS = 10_000
# AcquireWorker is called in slices so that a dead connection is noticed and the caller's
# progress callback runs between them.
ACQUIRE_SLICE = 30.0


class _PageAsk(Protocol):
    page_token: str


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


PageAsk = TypeVar("PageAsk", bound=_PageAsk)
Page = TypeVar("Page", bound=_Page)


class _Attempt:
    """One attempt at a call, on one scheduler address; error is set if it failed."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.error: grpc.RpcError | None = None

    def failed(self, error: grpc.RpcError) -> None:
        self.error = error


def _trailing(error: grpc.RpcError) -> Any:
    trailing = getattr(error, "trailing_metadata", None)
    return trailing() if callable(trailing) else None


class AsyncWatch(Generic[T]):
    """A stream of changes; ``async for`` over it, and close it (or ``async with``) when
    done. It ends when closed or when the watch's timeout passes. When its scheduler goes
    away (a restart, a takeover by a standby) the watch opens again on the leader and
    catches up (see Resume): no change is lost and none comes twice."""

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[Ask, Reply],
        convert_item: Callable[[Reply], T],
        failure: Callable[[grpc.RpcError], Awaitable[BorutaError]],
        resume: Resume[T, Reply] | None = None,
    ) -> None:
        self._call: grpc.aio.UnaryStreamCall[Any, Reply] = call
        self._convert = convert_item
        self._failure = failure
        self._resume = resume
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[T]:
        resume = self._resume
        while True:
            try:
                async for reply in self._call:
                    item = self._convert(reply)
                    if resume is None or resume.fresh(item):
                        yield item
                return
            except asyncio.CancelledError:
                self._call.cancel()
                task = asyncio.current_task()
                # close() from elsewhere ends the stream; only a cancellation of this task
                # itself propagates.
                if self._closed and task is not None and not task.cancelling():
                    return
                raise
            except grpc.RpcError as error:
                code = code_of(error)
                if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return
                if code is not grpc.StatusCode.UNAVAILABLE or resume is None or self._closed:
                    raise await self._failure(error) from None
            assert resume is not None
            self._call, missed = await resume.reopen()
            for item in missed:
                if resume.fresh(item):
                    yield item

    def close(self) -> None:
        self._closed = True
        self._call.cancel()

    async def __aenter__(self) -> AsyncWatch[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Stubs:
    """The typed stubs of one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.requests: requests_pb2_grpc.RequestsAsyncStub = requests_pb2_grpc.RequestsStub(channel)
        self.workers: workers_pb2_grpc.WorkersAsyncStub = workers_pb2_grpc.WorkersStub(channel)
        self.tokens: tokens_pb2_grpc.TokensAsyncStub = tokens_pb2_grpc.TokensStub(channel)
        self.audit: audit_pb2_grpc.AuditAsyncStub = audit_pb2_grpc.AuditStub(channel)


# Which method of a scheduler's stubs a call makes.
Pick = Callable[[_Stubs], grpc.aio.UnaryUnaryMultiCallable[Ask, Reply]]
PickStream = Callable[[_Stubs], grpc.aio.UnaryStreamMultiCallable[Ask, Reply]]


class AsyncClient(ClientBase):
    """A connection to the farm's scheduler for asyncio code; its coroutines return the
    client's typed values. ``AsyncClient()`` finds the farm as schedctl does (see
    ClientBase). Given several scheduler addresses it calls the leader and follows it.

    Errors are :class:`boruta_client.BorutaError` subclasses carrying the scheduler's message.
    """

    def _open(self) -> None:
        # Channels are opened in the loop of the first call: grpc.aio binds them to a loop.
        self._channels: dict[str, _Stubs] = {}
        self._schedulers = SchedulerList(self.context.schedulers())

    def _stubs(self, address: str) -> _Stubs:
        stubs = self._channels.get(address)
        if stubs is None:
            credentials = self._credentials()
            if credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
            stubs = self._channels[address] = _Stubs(channel)
        return stubs

    @property
    def scheduler(self) -> str:
        """The address of the scheduler the client calls now (the leader, as far as known)."""
        return self._schedulers.current

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for stubs in channels.values():
            await stubs.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _failure(self, error: grpc.RpcError, address: str | None = None) -> BorutaError:
        """The client's exception for a failed call; an unreachable scheduler that is there
        but speaks another TLS than we do is named as such."""
        address = address or self._schedulers.current
        known = self._schedulers.addresses
        named = address if known == (address,) else f"{address} (of {', '.join(known)})"
        failure = translate(error, named)
        if type(failure) is Unavailable:
            why = await asyncio.to_thread(explain, address, self.context)
            if why is not None:
                return type(failure)(why)
        return failure

    async def _attempts(self, deadline: float | None) -> AsyncIterator[_Attempt]:
        """Attempts at a call, each on the scheduler to call now: after an answer that the
        scheduler went away (UNAVAILABLE, or CANCELLED: see went_away), on the leader it
        names or the next address, with backoff, until deadline (monotonic) or the failover
        timeout after the first failure. The caller reports each failure with
        attempt.failed(error), and stops iterating once it succeeded."""
        backoff = Backoff()
        give_up: float | None = None
        while True:
            attempt = _Attempt(self._schedulers.current)
            yield attempt
            error = attempt.error
            if error is None or not went_away(error):
                return
            now = time.monotonic()
            if give_up is None:
                give_up = now + self.failover_timeout
                if deadline is not None:
                    give_up = min(give_up, deadline)
                unavailable = code_of(error) is grpc.StatusCode.UNAVAILABLE
                if unavailable and not leader_of(_trailing(error)) and not reason_of(error):
                    # Nothing answered as a scheduler: a TLS mismatch does not heal.
                    why = await asyncio.to_thread(explain, attempt.address, self.context)
                    if why is not None:
                        raise Unavailable(why) from None
            leader = leader_of(_trailing(error))
            delay = 0.0 if self._schedulers.failed(attempt.address, leader) else backoff.next()
            if now + delay >= give_up:
                raise error
            log.info(
                "scheduler unavailable; trying another",
                extra={"scheduler": attempt.address, "next": self._schedulers.current},
            )
            await asyncio.sleep(delay)

    async def _invoke(
        self,
        pick: Pick[Ask, Reply],
        message: Ask,
        timeout: float | None = None,
        deadline: float | None = None,
        retried: list[grpc.RpcError] | None = None,
    ) -> Reply:
        """Make a unary call on the leader, following it (see _attempts); each attempt
        waits up to timeout, all of them together until deadline (monotonic; default now
        plus timeout). Raises the last attempt's grpc.RpcError. retried collects the
        errors of the attempts that were tried again."""
        timeout = timeout or self.call_timeout
        deadline = time.monotonic() + timeout if deadline is None else deadline
        async for attempt in self._attempts(deadline):
            left = max(0.001, min(timeout, deadline - time.monotonic()))
            method = pick(self._stubs(attempt.address))
            try:
                return await method(message, timeout=left, metadata=self._metadata())
            except grpc.RpcError as error:
                attempt.failed(error)
                if not went_away(error):
                    raise
                if retried is not None:
                    retried.append(error)
        raise AssertionError("unreachable: _attempts ends only after a success or an error")

    async def _call(
        self, pick: Pick[Ask, Reply], message: Ask, timeout: float | None = None
    ) -> Reply:
        try:
            return await self._invoke(pick, message, timeout)
        except grpc.RpcError as error:
            raise await self._failure(error) from None

    async def _call_or_done(
        self,
        pick: Pick[Ask, Reply],
        message: Ask,
        done: type[BorutaError],
        audited: tuple[str, str] | None = None,
    ) -> Reply | BorutaError:
        """Make the call; a failure of type done met only by a retry after a lost
        connection is returned rather than raised: the first attempt may have done what
        was asked, its answer lost (docs/api.md, "Calls safe to retry"). With audited (an
        action and its target), only if the audit log has that event since the call began:
        else the first attempt did nothing either, and the failure is raised."""
        retried: list[grpc.RpcError] = []
        began = time.time()
        try:
            return await self._invoke(pick, message, retried=retried)
        except grpc.RpcError as error:
            failure = await self._failure(error)
            if (
                retried
                and isinstance(failure, done)
                and (audited is None or await self._audited(*audited, since=began))
            ):
                return failure
            raise failure from None

    async def _audited(self, action: str, target: str, *, since: float) -> bool:
        """Whether the audit log has an event of action on target at or after since (this
        machine's clock, AUDIT_CLOCK_SLACK allowed for the scheduler's), among its latest
        AUDIT_LOOKS events."""
        message = audit_pb2.ListAuditEventsRequest(page_size=1000)
        looked = 0
        while looked < AUDIT_LOOKS:
            reply = await self._call(lambda s: s.audit.ListAuditEvents, message)
            for event in reply.events:
                if event.action == action and event.target == target:
                    return True
                if event.time.ToNanoseconds() / 1e9 < since - AUDIT_CLOCK_SLACK:
                    return False
            looked += len(reply.events)
            if not reply.next_page_token:
                return False
            message.page_token = reply.next_page_token
        return False

    async def _pages(
        self,
        pick: Pick[PageAsk, Page],
        message: PageAsk,
        items: Callable[[Page], Sequence[T]],
        limit: int | None,
    ) -> list[T]:
        """The items of every page a list call returns, up to limit."""
        found: list[T] = []
        while True:
            reply = await self._call(pick, message)
            found.extend(items(reply))
            if not reply.next_page_token or (limit is not None and len(found) >= limit):
                return found[:limit]
            message.page_token = reply.next_page_token

    async def _open_stream(
        self, pick: PickStream[Ask, Reply], message: Ask, deadline: float | None
    ) -> grpc.aio.UnaryStreamCall[Ask, Reply]:
        """A stream call on the leader, once it is in place (the server's initial metadata)."""
        async for attempt in self._attempts(deadline):
            timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
            method = pick(self._stubs(attempt.address))
            call = method(message, metadata=self._metadata(), timeout=timeout)
            try:
                await call.initial_metadata()
                if call.done() and await call.code() is not grpc.StatusCode.OK:
                    await call.read()
                return call
            except grpc.RpcError as error:
                attempt.failed(error)
                if not went_away(error):
                    raise await self._failure(error) from None
        raise AssertionError("unreachable: _attempts ends only after a success or an error")

    async def _watch(
        self,
        pick: PickStream[Ask, Reply],
        message: Ask,
        timeout: float | None,
        convert_item: Callable[[Reply], T],
        resume: Resume[T, Reply],
    ) -> AsyncWatch[T]:
        """A watch opened with message, once it is in place; it follows the leader."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            call = await self._open_stream(pick, message, deadline)
        except grpc.RpcError as error:
            raise await self._failure(error) from None

        async def reopen() -> tuple[grpc.aio.UnaryStreamCall[Any, Reply], list[T]]:
            again = resume.message_again(message)
            try:
                stream = await self._open_stream(pick, again, deadline)
            except grpc.RpcError as error:
                raise await self._failure(error) from None
            return stream, await resume.missed()

        resume.reopen = reopen
        return AsyncWatch(call, convert_item, self._failure, resume)

    # ----------------------------------------------------------------- requests

    async def new_request(
        self,
        caps: Mapping[str, str] | None = None,
        *,
        priority: int = 0,
        valid_after: datetime | None = None,
        deadline: datetime | None = None,
        accept_unsatisfiable: bool = False,
        no_wait: bool = False,
        job_timeout: timedelta | None = None,
        idempotency_key: str | None = None,
        profiles: Profiles | None = None,
        together: Together | None = None,
    ) -> Request:
        """Queue a request for a board with these caps (a value may name alternatives,
        ``"linux|android"``, or items of a board's list, ``"vcc,battery"``: docs/api.md;
        ``no_wait``: run now or raise Busy);
        ``job_timeout``: how long its job may go without a prolong (None: the scheduler's).
        ``profiles`` instead of caps asks for several boards, all at once or none: caps per
        name (``{"dut": {...}, "relay": {...}}``) or a list of caps; ``together`` keeps
        boards on one host or in one stack: ``"host"``, ``"stack"`` (every board),
        ``"host:dut,relay;stack:a,b"`` or Colocation values (docs/api.md, co-location).

        The call carries an idempotency key (a new random one unless given), so that its
        retries after a dropped connection or a takeover make no second request."""
        message = convert.new_request(
            caps or {}, priority, valid_after, deadline, accept_unsatisfiable, no_wait, job_timeout
        )
        message.idempotency_key = idempotency_key or str(uuid.uuid4())
        if profiles is not None:
            message.profiles.extend(convert.profiles(profiles))
        if together:
            message.together.extend(convert.colocations(together))
        return convert.request((await self._call(lambda s: s.requests.NewRequest, message)).request)

    async def get_request(self, request_id: int) -> Request:
        """One request; a WAITING one comes with its queue position."""
        message = requests_pb2.GetRequestInfoRequest(request_id=request_id)
        return convert.request_reply(await self._call(lambda s: s.requests.GetRequestInfo, message))

    async def list_requests(
        self,
        *,
        ids: Iterable[int] = (),
        states: Iterable[RequestState] = (),
        priorities: Iterable[int] = (),
        owners: Iterable[str] = (),
        sort_by: RequestSort = RequestSort.ID,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Request]:
        """Requests that pass the filter, sorted; every page is fetched up to ``limit``."""
        flt = convert.request_filter(ids, states, priorities, owners)
        message = convert.list_requests(flt, sort_by, descending, PAGE_SIZE)
        found = await self._pages(
            lambda s: s.requests.ListRequests, message, lambda r: r.requests, limit
        )
        return [convert.request(r) for r in found]

    async def usage(
        self,
        since: datetime,
        until: datetime | None = None,
        *,
        by: UsageBy = UsageBy.USER,
        owner: str = "",
    ) -> Usage:
        """Board time, jobs and waits over [since, until) (None: now), per owner or per
        group that granted the boards. Users get their own usage; admins everyone's, or
        ``owner``'s."""
        message = convert.usage_request(since, until, by, owner)
        return convert.usage(await self._call(lambda s: s.requests.GetUsage, message))

    async def update_request(
        self,
        request_id: int,
        *,
        priority: int | None = None,
        valid_after: datetime | None = None,
        deadline: datetime | None = None,
    ) -> Request:
        """Change a WAITING request; fields left None stay as they are."""
        message = convert.update_request(request_id, priority, valid_after, deadline)
        reply = await self._call(lambda s: s.requests.UpdateRequest, message)
        return convert.request(reply.request)

    async def close_request(self, request_id: int) -> Request:
        """Cancel a waiting request or end its job; returns it in its final state."""
        message = requests_pb2.CloseRequestRequest(request_id=request_id)
        reply = await self._call_or_done(
            lambda s: s.requests.CloseRequest, message, WrongRequestState
        )
        if isinstance(reply, BorutaError):
            # An earlier attempt may have closed it, its answer lost with the scheduler
            # (a kill, a takeover): a request ended as a close ends it is what we asked.
            request = await self.get_request(request_id)
            if request.state in (RequestState.DONE, RequestState.CANCELLED):
                return request
            raise reply
        return convert.request(reply.request)

    async def prolong_access(self, request_id: int, *, prolong_count: int | None = None) -> Job:
        """Push the job's timeout further, within the scheduler's limits.

        The call sends the job's prolong_count as last seen (given, else read first), so a
        retry after a dropped connection, or a prolong by someone else meanwhile, does not
        count twice: it returns the job as it is."""
        if prolong_count is None:
            job = (await self.get_request(request_id)).job
            prolong_count = None if job is None else job.prolong_count
        message = requests_pb2.ProlongAccessRequest(
            request_id=request_id, prolong_count=prolong_count
        )
        return convert.job((await self._call(lambda s: s.requests.ProlongAccess, message)).job)

    async def acquire_worker(
        self,
        request_id: int,
        *,
        timeout: float | None = None,
        on_wait: Callable[[Request], None] | None = None,
        poll_interval: float = 3.0,
    ) -> Acquired:
        """Wait until the request runs and return how to log in to its board.

        Raises ScheduleTimeout after ``timeout`` seconds of waiting and RequestEnded if the
        request ends first. ``on_wait`` gets the request (with its queue position) every
        ``poll_interval`` seconds while it waits (for a Client, in the client's thread).
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        message = requests_pb2.AcquireWorkerRequest(request_id=request_id)
        while True:
            slice_ = poll_interval if on_wait is not None else ACQUIRE_SLICE
            if give_up is not None:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise ScheduleTimeout(
                        f"request {request_id} was still waiting after {timeout:g} s"
                    )
                slice_ = min(slice_, left)
            try:
                # Each slice follows the leader; retries stop at the caller's own timeout.
                reply = await self._invoke(
                    lambda s: s.requests.AcquireWorker, message, slice_, give_up or math.inf
                )
                return convert.acquired(reply)
            except grpc.RpcError as error:
                if code_of(error) is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    failure = await self._failure(error)
                    if isinstance(failure, WrongRequestState):
                        state = (await self.get_request(request_id)).state
                        raise RequestEnded(str(failure), state.name) from None
                    raise failure from None
            if on_wait is not None:
                on_wait(await self.get_request(request_id))

    @overload
    def lease(
        self, caps: Mapping[str, str] | None = None, **options: Unpack[LeaseOptions]
    ) -> AsyncLease: ...

    @overload
    def lease(
        self, caps: Sequence[Mapping[str, str]], **options: Unpack[LeaseOptions]
    ) -> AsyncBoardsLease: ...

    def lease(
        self,
        caps: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        *,
        priority: int = 0,
        valid_after: datetime | None = None,
        deadline: datetime | None = None,
        wait_timeout: float | None = None,
        no_wait: bool = False,
        accept_unsatisfiable: bool = False,
        on_wait: Callable[[Request], None] | None = None,
        auto_prolong: bool = True,
        job_timeout: timedelta | None = None,
        together: Together | None = None,
    ) -> AsyncLease | AsyncBoardsLease:
        """``async with client.lease({"board": "rpi4"}) as board:`` (``with`` for a Client):
        a board for the block's run. ``job_timeout`` defaults to LEASE_JOB_TIMEOUT while the
        lease prolongs by itself (see lease_job_timeout). A list of caps asks for several
        boards, as lease_boards: ``client.lease([{"board": "rpi4"}, {"board": "relay"}],
        together="host")`` gets both on one host."""
        if together and (caps is None or isinstance(caps, Mapping)):
            raise InvalidArgument(
                "together groups several boards; give a list of caps (one per board)"
            )
        terms = LeaseTerms(
            priority=priority,
            valid_after=valid_after,
            deadline=deadline,
            accept_unsatisfiable=accept_unsatisfiable,
            no_wait=no_wait,
            job_timeout=job_timeout,
            wait_timeout=wait_timeout,
            on_wait=on_wait,
            auto_prolong=auto_prolong,
        )
        if caps is not None and not isinstance(caps, Mapping):
            return AsyncBoardsLease(AsyncLease(self, {}, terms, profiles=caps, together=together))
        return AsyncLease(self, caps or {}, terms)

    def lease_boards(
        self,
        profiles: Profiles,
        *,
        priority: int = 0,
        valid_after: datetime | None = None,
        deadline: datetime | None = None,
        wait_timeout: float | None = None,
        no_wait: bool = False,
        accept_unsatisfiable: bool = False,
        on_wait: Callable[[Request], None] | None = None,
        auto_prolong: bool = True,
        job_timeout: timedelta | None = None,
        together: Together | None = None,
    ) -> AsyncBoardsLease:
        """``async with client.lease_boards({"dut": {"board": "rpi4"}, "relay": {"board":
        "relay"}}) as boards:`` (``with`` for a Client): several boards for the block's
        run, taken all at once; ``boards["relay"]`` or ``boards[1]`` is one. A list of caps
        asks for unnamed boards. ``together`` keeps boards on one host or in one stack (as
        new_request). The rest is as lease()."""
        terms = LeaseTerms(
            priority=priority,
            valid_after=valid_after,
            deadline=deadline,
            accept_unsatisfiable=accept_unsatisfiable,
            no_wait=no_wait,
            job_timeout=job_timeout,
            wait_timeout=wait_timeout,
            on_wait=on_wait,
            auto_prolong=auto_prolong,
        )
        lease = AsyncLease(self, {}, terms, profiles=profiles, together=together)
        return AsyncBoardsLease(lease)

    def attach(self, request_id: int, *, auto_prolong: bool = True) -> AsyncLease:
        """``async with client.attach(42) as board:``: a lease on a request that already
        exists; it waits and prolongs like any lease but leaves the request open on exit."""
        return AsyncLease(self, {}, LeaseTerms(auto_prolong=auto_prolong), existing=request_id)

    async def watch_requests(
        self,
        *,
        ids: Iterable[int] = (),
        states: Iterable[RequestState] = (),
        priorities: Iterable[int] = (),
        owners: Iterable[str] = (),
        include_current: bool = False,
        timeout: float | None = None,
    ) -> AsyncWatch[Request]:
        """Stream each change of a request that passes the filter; it is in place on return
        and ends after ``timeout`` seconds if one is given."""
        flt = convert.request_filter(ids, states, priorities, owners)
        message = requests_pb2.WatchRequestsRequest(filter=flt, include_current=include_current)
        return await self._watch(
            lambda s: s.requests.WatchRequests,
            message,
            timeout,
            lambda r: convert.request(r.request),
            RequestResume(self, flt),
        )

    # -------------------------------------------------------------------- audit

    async def audit_events(self, limit: int = 100) -> list[AuditEvent]:
        """The latest audit events, newest first (admins only)."""
        message = audit_pb2.ListAuditEventsRequest(page_size=min(limit, 1000))
        found = await self._pages(
            lambda s: s.audit.ListAuditEvents, message, lambda r: r.events, limit
        )
        return [convert.audit_event(e) for e in found]

    # ------------------------------------------------------------------- tokens

    async def issue_token(
        self,
        user: str,
        *,
        groups: Iterable[str] = (),
        admin: bool = False,
        ttl: float | None = None,
        description: str = "",
        idempotency_key: str | None = None,
    ) -> IssuedToken:
        """A bearer token for user (admins only); its secret is shown this once.

        The call carries an idempotency key (a new random one unless given), so that a
        retry after a dropped connection gets the same token and secret instead of a
        second token (within 10 minutes of the first attempt; see docs/security.md)."""
        message = tokens_pb2.IssueTokenRequest(
            user=user,
            groups=list(groups),
            admin=admin,
            description=description,
            idempotency_key=idempotency_key or str(uuid.uuid4()),
        )
        if ttl is not None:
            message.ttl.FromNanoseconds(round(ttl * 1e9))
        reply = await self._call(lambda s: s.tokens.IssueToken, message)
        return IssuedToken(convert.token(reply.token), reply.secret)

    async def list_tokens(self, *, user: str = "", active_only: bool = False) -> list[Token]:
        """Every token, oldest first, without their secrets (admins only): only user's if
        given, and only the live ones (neither expired nor revoked) with active_only."""
        message = tokens_pb2.ListTokensRequest(
            page_size=PAGE_SIZE, user=user, active_only=active_only
        )
        found = await self._pages(lambda s: s.tokens.ListTokens, message, lambda r: r.tokens, None)
        return [convert.token(t) for t in found]

    async def revoke_token(self, token_id: int) -> Token:
        """Revoke a token at once; calls made with it are refused from now on (admins only)."""
        message = tokens_pb2.RevokeTokenRequest(token_id=token_id)
        return convert.token((await self._call(lambda s: s.tokens.RevokeToken, message)).token)

    # ------------------------------------------------------------------ workers

    async def list_workers(
        self,
        *,
        uuids: Iterable[str] = (),
        states: Iterable[WorkerState] = (),
        groups: Iterable[str] = (),
        caps: Mapping[str, str] | None = None,
        sort_by: WorkerSort = WorkerSort.UUID,
        descending: bool = False,
    ) -> list[Worker]:
        """Every worker that passes the filter, sorted."""
        flt = convert.worker_filter(uuids, states, groups, caps)
        message = convert.list_workers(flt, sort_by, descending, PAGE_SIZE)
        found = await self._pages(
            lambda s: s.workers.ListWorkers, message, lambda r: r.workers, None
        )
        return [convert.worker(w) for w in found]

    async def whoami(self) -> Caller:
        """Who the scheduler takes us for: with a token, its user, not the local login."""
        reply = await self._call(lambda s: s.workers.WhoAmI, workers_pb2.WhoAmIRequest())
        return Caller(reply.user, frozenset(reply.groups), reply.admin, reply.token_id or None)

    async def get_worker(self, uuid: str) -> Worker:
        """One worker, by its UUID."""
        message = workers_pb2.GetWorkerInfoRequest(worker_uuid=uuid)
        return convert.worker((await self._call(lambda s: s.workers.GetWorkerInfo, message)).worker)

    async def worker_history(self, uuid: str, *, limit: int = 100) -> list[HistoryEntry]:
        """The worker's latest state changes, newest first."""
        message = workers_pb2.ListWorkerHistoryRequest(worker_uuid=uuid, page_size=limit)
        reply = await self._call(lambda s: s.workers.ListWorkerHistory, message)
        return [convert.history_entry(e) for e in reply.entries]

    async def set_worker_state(
        self, uuid: str, state: WorkerState, reason: str = "", after_job: bool = False
    ) -> Worker:
        """Put a worker into service (IDLE) or take it out (MAINTENANCE); with after_job, a
        RUNNING worker goes when its job ends (IDLE calls that off). Admins only."""
        message = convert.set_state(uuid, state, reason, after_job)
        if state is not WorkerState.IDLE:
            return convert.worker((await self._call(lambda s: s.workers.SetState, message)).worker)
        # An IDLE that called a drain off finds, on its own retry, the board RUNNING with
        # no drain: the first attempt did it.
        reply = await self._call_or_done(
            lambda s: s.workers.SetState, message, WrongWorkerState, ("SetState", f"worker {uuid}")
        )
        if isinstance(reply, BorutaError):
            worker = await self.get_worker(uuid)
            if worker.state is not WorkerState.RUNNING or worker.drain_reason:
                raise reply
            return worker
        return convert.worker(reply.worker)

    async def set_worker_groups(self, uuid: str, groups: Iterable[str]) -> Worker:
        """Replace the worker's groups; none opens it to everyone. Admins only."""
        message = workers_pb2.SetGroupsRequest(worker_uuid=uuid, groups=list(groups))
        return convert.worker((await self._call(lambda s: s.workers.SetGroups, message)).worker)

    async def deregister_worker(self, uuid: str) -> None:
        """Remove a worker in MAINTENANCE or FAILED. Admins only.

        A call retried after its connection dropped takes NOT_FOUND as done if the audit
        log shows the worker deregistered since the call began (the first attempt did it,
        its answer lost); a mistyped UUID raises WorkerNotFound either way."""
        message = workers_pb2.DeregisterRequest(worker_uuid=uuid)
        await self._call_or_done(
            lambda s: s.workers.Deregister,
            message,
            WorkerNotFound,
            ("Deregister", f"worker {uuid}"),
        )

    async def create_stack(self, name: str, worker_uuids: Iterable[str]) -> Stack:
        """Name two or more registered workers wired together, none in another stack. Admins
        only. A retry after a dropped connection that finds the stack made, of the same
        workers, returns it (the first attempt made it, its answer lost)."""
        message = workers_pb2.CreateStackRequest(name=name, worker_uuids=list(worker_uuids))
        reply = await self._call_or_done(lambda s: s.workers.CreateStack, message, AlreadyExists)
        if isinstance(reply, BorutaError):
            wanted = set(message.worker_uuids)
            for stack in await self.list_stacks():
                if stack.name == name and set(stack.worker_uuids) == wanted:
                    return stack
            raise reply
        return convert.stack(reply.stack)

    async def list_stacks(self) -> list[Stack]:
        """Every stack by name, with the request holding it. Admins only."""
        message = workers_pb2.ListStacksRequest()
        reply = await self._call(lambda s: s.workers.ListStacks, message)
        return [convert.stack(info) for info in reply.stacks]

    async def list_allocations(self) -> list[Allocation]:
        """Every running request with its boards (profile, worker, host, stack) and its
        collateral, by request id. Admins only."""
        message = workers_pb2.ListAllocationsRequest()
        reply = await self._call(lambda s: s.workers.ListAllocations, message)
        return [convert.allocation(info) for info in reply.allocations]

    async def delete_stack(self, name: str) -> None:
        """Forget a stack; its collateral is free at once. Admins only. A retry after a
        dropped connection takes NOT_FOUND as done only if the audit log shows the stack
        deleted since the call began, as deregister_worker does."""
        message = workers_pb2.DeleteStackRequest(name=name)
        await self._call_or_done(
            lambda s: s.workers.DeleteStack, message, NotFound, ("DeleteStack", f"stack {name}")
        )

    async def watch_workers(
        self,
        *,
        uuids: Iterable[str] = (),
        states: Iterable[WorkerState] = (),
        groups: Iterable[str] = (),
        caps: Mapping[str, str] | None = None,
        include_current: bool = False,
        timeout: float | None = None,
    ) -> AsyncWatch[WorkerChange]:
        """Stream each change of a worker that passes the filter; it is in place on return
        and ends after ``timeout`` seconds if one is given."""
        message = workers_pb2.WatchWorkersRequest(
            filter=convert.worker_filter(uuids, states, groups, caps),
            include_current=include_current,
        )
        return await self._watch(
            lambda s: s.workers.WatchWorkers,
            message,
            timeout,
            convert.worker_change,
            WorkerResume(),
        )
