"""AsyncClient: the asyncio way to use the farm, with the same methods as Client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import grpc
from boruta.tls import TlsFiles
from boruta.v1 import requests_pb2, requests_pb2_grpc, workers_pb2, workers_pb2_grpc

from boruta_client import _convert as convert
from boruta_client._rpc import Identity, code_of, translate
from boruta_client._rpc import login_name as _login_name
from boruta_client.client import ACQUIRE_SLICE, PAGE_SIZE, _credentials
from boruta_client.errors import (
    BorutaError,
    NotFound,
    RequestEnded,
    ScheduleTimeout,
    WrongRequestState,
)
from boruta_client.lease import (
    Board,
    lease_job_timeout,
    next_prolong_delay,
    prolong_lead,
    should_retry_prolong,
)
from boruta_client.ssh import BoardSSH, CommandResult, Sink
from boruta_client.types import (
    Access,
    Acquired,
    HistoryEntry,
    Job,
    Request,
    RequestSort,
    RequestState,
    Worker,
    WorkerChange,
    WorkerSort,
    WorkerState,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


class AsyncWatch(Generic[T]):
    """A stream of changes; ``async for`` over it, and close it when done."""

    def __init__(self, call: Any, convert_item: Callable[[Any], T], target: str) -> None:
        self._call = call
        self._convert = convert_item
        self._target = target
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            async for item in self._call:
                yield self._convert(item)
        except asyncio.CancelledError:
            self._call.cancel()
            task = asyncio.current_task()
            # close() from elsewhere ends the stream like the sync Watch; only a
            # cancellation of this task itself propagates.
            if self._closed and task is not None and not task.cancelling():
                return
            raise
        except grpc.RpcError as error:
            if code_of(error) is not grpc.StatusCode.CANCELLED:
                raise translate(error, self._target) from None

    def close(self) -> None:
        self._closed = True
        self._call.cancel()

    async def __aenter__(self) -> AsyncWatch[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """A connection to the scheduler for asyncio code; see Client for each method."""

    def __init__(
        self,
        target: str,
        *,
        user: str = "",
        groups: Iterable[str] = (),
        admin: bool = False,
        tls: TlsFiles | None = None,
        token: str | None = None,
        ca: str | None = None,
        call_timeout: float = 30.0,
    ) -> None:
        self.target = target
        # With TLS the scheduler knows the caller by its certificate, and user, groups
        # and admin are ignored; without, it takes them as given (loopback demos only).
        self.identity = (
            Identity(user or _login_name(), tuple(groups), admin)
            if tls is None
            else Identity.of_certificate(tls.cert)
        )
        self.tls = tls
        self.call_timeout = call_timeout
        self._metadata = self.identity.metadata()
        credentials = _credentials(tls, token, ca)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials)
        self._requests = requests_pb2_grpc.RequestsStub(self._channel)
        self._workers = workers_pb2_grpc.WorkersStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, message: Any, timeout: float | None = None) -> Any:
        try:
            return await method(
                message, timeout=timeout or self.call_timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise translate(error, self.target) from None

    async def _pages(self, method: Any, message: Any, field: str, limit: int | None) -> list[Any]:
        """The items of every page a list call returns, up to limit."""
        found: list[Any] = []
        while True:
            reply = await self._call(method, message)
            found.extend(getattr(reply, field))
            if not reply.next_page_token or (limit is not None and len(found) >= limit):
                return found[:limit]
            message.page_token = reply.next_page_token

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
    ) -> Request:
        message = convert.new_request(
            caps or {}, priority, valid_after, deadline, accept_unsatisfiable, no_wait, job_timeout
        )
        return convert.request((await self._call(self._requests.NewRequest, message)).request)

    async def get_request(self, request_id: int) -> Request:
        message = requests_pb2.GetRequestInfoRequest(request_id=request_id)
        return convert.request_reply(await self._call(self._requests.GetRequestInfo, message))

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
        flt = convert.request_filter(ids, states, priorities, owners)
        message = convert.list_requests(flt, sort_by, descending, PAGE_SIZE)
        found = await self._pages(self._requests.ListRequests, message, "requests", limit)
        return [convert.request(r) for r in found]

    async def update_request(
        self,
        request_id: int,
        *,
        priority: int | None = None,
        valid_after: datetime | None = None,
        deadline: datetime | None = None,
    ) -> Request:
        message = convert.update_request(request_id, priority, valid_after, deadline)
        return convert.request((await self._call(self._requests.UpdateRequest, message)).request)

    async def close_request(self, request_id: int) -> Request:
        message = requests_pb2.CloseRequestRequest(request_id=request_id)
        return convert.request((await self._call(self._requests.CloseRequest, message)).request)

    async def prolong_access(self, request_id: int) -> Job:
        message = requests_pb2.ProlongAccessRequest(request_id=request_id)
        return convert.job((await self._call(self._requests.ProlongAccess, message)).job)

    async def acquire_worker(
        self,
        request_id: int,
        *,
        timeout: float | None = None,
        on_wait: Callable[[Request], None] | None = None,
        poll_interval: float = 3.0,
    ) -> Acquired:
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
                reply = await self._requests.AcquireWorker(
                    message, timeout=slice_, metadata=self._metadata
                )
                return convert.acquired(reply)
            except grpc.RpcError as error:
                if code_of(error) is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    failure = translate(error, self.target)
                    if isinstance(failure, WrongRequestState):
                        state = (await self.get_request(request_id)).state
                        raise RequestEnded(str(failure), state.name) from None
                    raise failure from None
            if on_wait is not None:
                on_wait(await self.get_request(request_id))

    def lease(
        self,
        caps: Mapping[str, str] | None = None,
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
    ) -> AsyncLease:
        """``async with client.lease({"board": "rpi4"}) as board:``; see Client.lease."""
        return AsyncLease(
            self,
            caps or {},
            dict(
                priority=priority,
                valid_after=valid_after,
                deadline=deadline,
                accept_unsatisfiable=accept_unsatisfiable,
                no_wait=no_wait,
                job_timeout=lease_job_timeout(job_timeout, auto_prolong),
            ),
            wait_timeout,
            on_wait,
            auto_prolong,
        )

    async def watch_requests(
        self,
        *,
        ids: Iterable[int] = (),
        states: Iterable[RequestState] = (),
        priorities: Iterable[int] = (),
        owners: Iterable[str] = (),
        include_current: bool = False,
    ) -> AsyncWatch[Request]:
        message = requests_pb2.WatchRequestsRequest(
            filter=convert.request_filter(ids, states, priorities, owners),
            include_current=include_current,
        )
        call = self._requests.WatchRequests(message, metadata=self._metadata)
        await self._wait_in_place(call)
        return AsyncWatch(call, lambda item: convert.request(item.request), self.target)

    async def _wait_in_place(self, call: Any) -> None:
        try:
            await call.initial_metadata()
        except grpc.RpcError as error:
            raise translate(error, self.target) from None
        if call.done() and await call.code() is not grpc.StatusCode.OK:
            try:
                await call.read()
            except grpc.RpcError as error:
                raise translate(error, self.target) from None

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
        flt = convert.worker_filter(uuids, states, groups, caps)
        message = convert.list_workers(flt, sort_by, descending, PAGE_SIZE)
        found = await self._pages(self._workers.ListWorkers, message, "workers", None)
        return [convert.worker(w) for w in found]

    async def get_worker(self, uuid: str) -> Worker:
        message = workers_pb2.GetWorkerInfoRequest(worker_uuid=uuid)
        return convert.worker((await self._call(self._workers.GetWorkerInfo, message)).worker)

    async def worker_history(self, uuid: str, *, limit: int = 100) -> list[HistoryEntry]:
        message = workers_pb2.ListWorkerHistoryRequest(worker_uuid=uuid, page_size=limit)
        reply = await self._call(self._workers.ListWorkerHistory, message)
        return [convert.history_entry(e) for e in reply.entries]

    async def set_worker_state(self, uuid: str, state: WorkerState, reason: str = "") -> Worker:
        message = convert.set_state(uuid, state, reason)
        return convert.worker((await self._call(self._workers.SetState, message)).worker)

    async def set_worker_groups(self, uuid: str, groups: Iterable[str]) -> Worker:
        message = workers_pb2.SetGroupsRequest(worker_uuid=uuid, groups=list(groups))
        return convert.worker((await self._call(self._workers.SetGroups, message)).worker)

    async def deregister_worker(self, uuid: str) -> None:
        message = workers_pb2.DeregisterRequest(worker_uuid=uuid)
        await self._call(self._workers.Deregister, message)

    async def watch_workers(
        self,
        *,
        uuids: Iterable[str] = (),
        states: Iterable[WorkerState] = (),
        groups: Iterable[str] = (),
        caps: Mapping[str, str] | None = None,
        include_current: bool = False,
    ) -> AsyncWatch[WorkerChange]:
        message = workers_pb2.WatchWorkersRequest(
            filter=convert.worker_filter(uuids, states, groups, caps),
            include_current=include_current,
        )
        call = self._workers.WatchWorkers(message, metadata=self._metadata)
        await self._wait_in_place(call)
        return AsyncWatch(call, convert.worker_change, self.target)


class AsyncBoardSSH:
    """BoardSSH for asyncio: each operation runs in a thread; sinks run in the event loop."""

    def __init__(self, ssh: BoardSSH) -> None:
        self.sync = ssh

    async def run(
        self,
        command: str | Sequence[str],
        *,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        loop = asyncio.get_running_loop()

        def in_loop(sink: Sink | None) -> Sink | None:
            if sink is None:
                return None

            def forward(data: bytes) -> None:
                loop.call_soon_threadsafe(sink, data)

            return forward

        return await asyncio.to_thread(
            self.sync.run,
            command,
            stdout=in_loop(stdout),
            stderr=in_loop(stderr),
            input=input,
            timeout=timeout,
        )

    async def put(self, local: str, remote: str) -> None:
        await asyncio.to_thread(self.sync.put, local, remote)

    async def get(self, remote: str, local: str) -> None:
        await asyncio.to_thread(self.sync.get, remote, local)


class AsyncBoard:
    """A board leased for a job, for asyncio code."""

    def __init__(self, board: Board) -> None:
        self._board = board
        self._ssh: AsyncBoardSSH | None = None

    @property
    def request(self) -> Request:
        return self._board.request

    @property
    def access(self) -> Access:
        return self._board.access

    @property
    def job(self) -> Job:
        return self._board.job

    @property
    def worker_uuid(self) -> str:
        return self._board.worker_uuid

    @property
    def prolong_error(self) -> BorutaError | None:
        return self._board.prolong_error

    async def ssh(self) -> AsyncBoardSSH:
        """The SSH connection to the board, opened on first use."""
        if self._ssh is None:
            self._ssh = AsyncBoardSSH(await asyncio.to_thread(lambda: self._board.ssh))
        return self._ssh


class AsyncLease:
    """``async with client.lease(caps) as board:``; see Lease."""

    def __init__(
        self,
        client: AsyncClient,
        caps: Mapping[str, str],
        new: dict[str, Any],
        wait_timeout: float | None,
        on_wait: Callable[[Request], None] | None,
        auto_prolong: bool,
    ) -> None:
        self._client = client
        self._caps = dict(caps)
        self._new = new
        self._wait_timeout = wait_timeout
        self._on_wait = on_wait
        self._auto_prolong = auto_prolong
        self.request: Request | None = None
        self.board: AsyncBoard | None = None
        self._prolonger: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncBoard:
        client = self._client
        # Shielded: if this task is cancelled while NewRequest is in flight, the answer is
        # still awaited so that the request it created gets closed.
        creating = asyncio.ensure_future(client.new_request(self._caps, **self._new))
        try:
            request = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(BorutaError):
                self.request = await creating
                await self._give_back()
            raise
        self.request = request
        try:
            if self._on_wait is not None and request.state is RequestState.WAITING:
                self._on_wait(await client.get_request(request.id))
            acquired = await client.acquire_worker(
                request.id, timeout=self._wait_timeout, on_wait=self._on_wait
            )
            board = Board(request, acquired)
            self.board = AsyncBoard(board)
            if self._auto_prolong:
                self._prolonger = asyncio.create_task(self._keep_alive(board))
        except BaseException:
            await asyncio.shield(self._give_back())
            raise
        return self.board

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
        if self.board is not None:
            await asyncio.to_thread(self.board._board.close)
        if self.request is not None:
            with contextlib.suppress(WrongRequestState, NotFound):
                self.request = await self._client.close_request(self.request.id)

    async def _keep_alive(self, board: Board) -> None:
        lead = prolong_lead(board.job, datetime.now(UTC))
        moved = True
        while True:
            await asyncio.sleep(next_prolong_delay(board.job, datetime.now(UTC), lead, moved))
            try:
                job = await self._client.prolong_access(board.request.id)
            except BorutaError as error:
                if not should_retry_prolong(error):
                    board.prolong_error = error
                    return
                await asyncio.sleep(1.0)
                continue
            moved = job.timeout_at > board.job.timeout_at
            board.job = job
            if moved:
                lead = prolong_lead(job, datetime.now(UTC))
