"""Client: the blocking way Python code uses the farm."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import grpc
from boruta.tls import TlsFiles, channel_credentials
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
from boruta_client._rpc import Identity, code_of, translate
from boruta_client._rpc import login_name as _login_name
from boruta_client.errors import (
    InvalidArgument,
    RequestEnded,
    ScheduleTimeout,
    WrongRequestState,
)
from boruta_client.lease import Lease
from boruta_client.types import (
    Acquired,
    AuditEvent,
    HistoryEntry,
    IssuedToken,
    Job,
    Request,
    RequestSort,
    RequestState,
    Token,
    Worker,
    WorkerChange,
    WorkerSort,
    WorkerState,
)

T = TypeVar("T")
PAGE_SIZE = 500
# AcquireWorker is called in slices so that a dead connection is noticed and the caller's
# progress callback runs between them.
ACQUIRE_SLICE = 30.0


class Watch(Generic[T]):
    """A stream of changes; iterate over it, and close it (or use ``with``) when done."""

    def __init__(self, call: Any, convert_item: Callable[[Any], T], target: str) -> None:
        self._call = call
        self._convert = convert_item
        self._target = target

    def __iter__(self) -> Iterator[T]:
        """Changes as they come; ends when closed or when the watch's timeout passes."""
        try:
            for item in self._call:
                yield self._convert(item)
        except grpc.RpcError as error:
            if code_of(error) in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                return
            raise translate(error, self._target) from None

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Watch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _credentials(
    tls: TlsFiles | None, token: str | None, ca: str | None
) -> grpc.ChannelCredentials | None:
    """TLS with our certificate, or TLS plus a bearer token (the scheduler's token port),
    or None for a plaintext demo scheduler."""
    if tls is not None:
        return channel_credentials(tls)
    if token is None:
        return None
    try:
        roots = open(ca, "rb").read() if ca else None  # noqa: SIM115 - read at once
    except OSError as exc:
        raise InvalidArgument(f"cannot read the CA certificate {ca}: {exc}") from None
    return grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=roots),
        grpc.access_token_call_credentials(token),
    )


class Client:
    """A connection to the scheduler; methods block and return the client's typed values.

    Errors are :class:`boruta_client.BorutaError` subclasses carrying the scheduler's message.
    """

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
            Identity.of_certificate(tls.cert)
            if tls is not None
            else Identity(user or _login_name(), tuple(groups), admin)
        )
        self.tls = tls
        self.call_timeout = call_timeout
        self._metadata = self.identity.metadata()
        credentials = _credentials(tls, token, ca)
        if credentials is None:
            self._channel = grpc.insecure_channel(target)
        else:
            self._channel = grpc.secure_channel(target, credentials)
        self._requests = requests_pb2_grpc.RequestsStub(self._channel)
        self._workers = workers_pb2_grpc.WorkersStub(self._channel)
        self._tokens = tokens_pb2_grpc.TokensStub(self._channel)
        self._audit = audit_pb2_grpc.AuditStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, message: Any, timeout: float | None = None) -> Any:
        try:
            # .future() rather than a plain call: waiting on it can be interrupted by Ctrl-C.
            future = method.future(
                message, timeout=timeout or self.call_timeout, metadata=self._metadata
            )
            try:
                return future.result()
            except BaseException:
                future.cancel()
                raise
        except grpc.RpcError as error:
            raise translate(error, self.target) from None

    def _pages(self, method: Any, message: Any, field: str, limit: int | None) -> list[Any]:
        """The items of every page a list call returns, up to limit."""
        found: list[Any] = []
        while True:
            reply = self._call(method, message)
            found.extend(getattr(reply, field))
            if not reply.next_page_token or (limit is not None and len(found) >= limit):
                return found[:limit]
            message.page_token = reply.next_page_token

    # ----------------------------------------------------------------- requests

    def new_request(
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
        """Queue a request for a board with these caps (``no_wait``: run now or raise Busy);
        ``job_timeout``: how long its job may go without a prolong (None: the scheduler's)."""
        message = convert.new_request(
            caps or {}, priority, valid_after, deadline, accept_unsatisfiable, no_wait, job_timeout
        )
        return convert.request(self._call(self._requests.NewRequest, message).request)

    def _new_request_shielded(
        self, caps: Mapping[str, str], **fields: Any
    ) -> tuple[Request, BaseException | None]:
        """NewRequest that, if interrupted (Ctrl-C), still waits for the answer, so that
        the caller can close what was created; returns the interrupt to re-raise."""
        message = convert.new_request(
            caps,
            fields.get("priority", 0),
            fields.get("valid_after"),
            fields.get("deadline"),
            fields.get("accept_unsatisfiable", False),
            fields.get("no_wait", False),
            fields.get("job_timeout"),
        )
        future = self._requests.NewRequest.future(
            message, timeout=self.call_timeout, metadata=self._metadata
        )
        interrupt: BaseException | None = None
        while True:
            try:
                reply = future.result()
                break
            except grpc.RpcError as error:
                if interrupt is not None:
                    raise interrupt from None
                raise translate(error, self.target) from None
            except KeyboardInterrupt as exc:
                interrupt = exc
        return convert.request(reply.request), interrupt

    def get_request(self, request_id: int) -> Request:
        """One request; a WAITING one comes with its queue position."""
        message = requests_pb2.GetRequestInfoRequest(request_id=request_id)
        return convert.request_reply(self._call(self._requests.GetRequestInfo, message))

    def list_requests(
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
        found = self._pages(self._requests.ListRequests, message, "requests", limit)
        return [convert.request(r) for r in found]

    def update_request(
        self,
        request_id: int,
        *,
        priority: int | None = None,
        valid_after: datetime | None = None,
        deadline: datetime | None = None,
    ) -> Request:
        """Change a WAITING request; fields left None stay as they are."""
        message = convert.update_request(request_id, priority, valid_after, deadline)
        return convert.request(self._call(self._requests.UpdateRequest, message).request)

    def close_request(self, request_id: int) -> Request:
        """Cancel a waiting request or end its job; returns it in its final state."""
        message = requests_pb2.CloseRequestRequest(request_id=request_id)
        return convert.request(self._call(self._requests.CloseRequest, message).request)

    def prolong_access(self, request_id: int) -> Job:
        """Push the job's timeout further, within the scheduler's limits."""
        message = requests_pb2.ProlongAccessRequest(request_id=request_id)
        return convert.job(self._call(self._requests.ProlongAccess, message).job)

    def acquire_worker(
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
        ``poll_interval`` seconds while it waits.
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
                reply = self._requests.AcquireWorker.future(
                    message, timeout=slice_, metadata=self._metadata
                )
                try:
                    return convert.acquired(reply.result())
                except BaseException:
                    reply.cancel()
                    raise
            except grpc.RpcError as error:
                if code_of(error) is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    failure = translate(error, self.target)
                    if isinstance(failure, WrongRequestState):
                        state = self.get_request(request_id).state
                        raise RequestEnded(str(failure), state.name) from None
                    raise failure from None
            if on_wait is not None:
                on_wait(self.get_request(request_id))

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
    ) -> Lease:
        """``with client.lease({"board": "rpi4"}) as board:``: a board for the block's run.
        ``job_timeout`` defaults to LEASE_JOB_TIMEOUT while the lease prolongs by itself
        (see lease_job_timeout)."""
        return Lease(
            self,
            caps or {},
            priority=priority,
            valid_after=valid_after,
            deadline=deadline,
            wait_timeout=wait_timeout,
            no_wait=no_wait,
            accept_unsatisfiable=accept_unsatisfiable,
            on_wait=on_wait,
            auto_prolong=auto_prolong,
            job_timeout=job_timeout,
        )

    def attach(self, request_id: int, *, auto_prolong: bool = True) -> Lease:
        """``with client.attach(42) as board:``: a lease on a request that already exists;
        it waits and prolongs like any lease but leaves the request open on exit."""
        return Lease(self, {}, auto_prolong=auto_prolong, existing=request_id)

    def watch_requests(
        self,
        *,
        ids: Iterable[int] = (),
        states: Iterable[RequestState] = (),
        priorities: Iterable[int] = (),
        owners: Iterable[str] = (),
        include_current: bool = False,
        timeout: float | None = None,
    ) -> Watch[Request]:
        """Stream each change of a request that passes the filter; it is in place on return
        and ends after ``timeout`` seconds if one is given."""
        message = requests_pb2.WatchRequestsRequest(
            filter=convert.request_filter(ids, states, priorities, owners),
            include_current=include_current,
        )
        call = self._requests.WatchRequests(message, metadata=self._metadata, timeout=timeout)
        self._wait_in_place(call)
        return Watch(call, lambda item: convert.request(item.request), self.target)

    def _wait_in_place(self, call: Any) -> None:
        try:
            call.initial_metadata()
        except grpc.RpcError as error:
            raise translate(error, self.target) from None
        if call.done() and call.code() is not grpc.StatusCode.OK:
            raise translate(call, self.target)

    # -------------------------------------------------------------------- audit

    def audit_events(self, limit: int = 100) -> list[AuditEvent]:
        """The latest audit events, newest first (admins only)."""
        message = audit_pb2.ListAuditEventsRequest(page_size=min(limit, 1000))
        found = self._pages(self._audit.ListAuditEvents, message, "events", limit)
        return [convert.audit_event(e) for e in found]

    # ------------------------------------------------------------------- tokens

    def issue_token(
        self,
        user: str,
        *,
        groups: Iterable[str] = (),
        admin: bool = False,
        ttl: float | None = None,
        description: str = "",
    ) -> IssuedToken:
        """A bearer token for user (admins only); its secret is shown this once."""
        message = tokens_pb2.IssueTokenRequest(
            user=user, groups=list(groups), admin=admin, description=description
        )
        if ttl is not None:
            message.ttl.FromNanoseconds(round(ttl * 1e9))
        reply = self._call(self._tokens.IssueToken, message)
        return IssuedToken(convert.token(reply.token), reply.secret)

    def list_tokens(self) -> list[Token]:
        reply = self._call(self._tokens.ListTokens, tokens_pb2.ListTokensRequest())
        return [convert.token(t) for t in reply.tokens]

    def revoke_token(self, token_id: int) -> Token:
        message = tokens_pb2.RevokeTokenRequest(token_id=token_id)
        return convert.token(self._call(self._tokens.RevokeToken, message).token)

    # ------------------------------------------------------------------ workers

    def list_workers(
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
        found = self._pages(self._workers.ListWorkers, message, "workers", None)
        return [convert.worker(w) for w in found]

    def get_worker(self, uuid: str) -> Worker:
        message = workers_pb2.GetWorkerInfoRequest(worker_uuid=uuid)
        return convert.worker(self._call(self._workers.GetWorkerInfo, message).worker)

    def worker_history(self, uuid: str, *, limit: int = 100) -> list[HistoryEntry]:
        """The worker's latest state changes, newest first."""
        message = workers_pb2.ListWorkerHistoryRequest(worker_uuid=uuid, page_size=limit)
        reply = self._call(self._workers.ListWorkerHistory, message)
        return [convert.history_entry(e) for e in reply.entries]

    def set_worker_state(self, uuid: str, state: WorkerState, reason: str = "") -> Worker:
        """Put a worker into service (IDLE) or take it out (MAINTENANCE). Admins only."""
        message = convert.set_state(uuid, state, reason)
        return convert.worker(self._call(self._workers.SetState, message).worker)

    def set_worker_groups(self, uuid: str, groups: Iterable[str]) -> Worker:
        """Replace the worker's groups; none opens it to everyone. Admins only."""
        message = workers_pb2.SetGroupsRequest(worker_uuid=uuid, groups=list(groups))
        return convert.worker(self._call(self._workers.SetGroups, message).worker)

    def deregister_worker(self, uuid: str) -> None:
        """Remove a worker in MAINTENANCE or FAILED. Admins only."""
        self._call(self._workers.Deregister, workers_pb2.DeregisterRequest(worker_uuid=uuid))

    def watch_workers(
        self,
        *,
        uuids: Iterable[str] = (),
        states: Iterable[WorkerState] = (),
        groups: Iterable[str] = (),
        caps: Mapping[str, str] | None = None,
        include_current: bool = False,
        timeout: float | None = None,
    ) -> Watch[WorkerChange]:
        """Stream each change of a worker that passes the filter; it is in place on return
        and ends after ``timeout`` seconds if one is given."""
        message = workers_pb2.WatchWorkersRequest(
            filter=convert.worker_filter(uuids, states, groups, caps),
            include_current=include_current,
        )
        call = self._workers.WatchWorkers(message, metadata=self._metadata, timeout=timeout)
        self._wait_in_place(call)
        return Watch(call, convert.worker_change, self.target)
