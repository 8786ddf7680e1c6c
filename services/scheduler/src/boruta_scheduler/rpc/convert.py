"""Conversions between boruta.v1 messages and the scheduler's domain values."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import TypeVar, cast

from boruta.v1 import audit_pb2, requests_pb2, tokens_pb2, types_pb2, workers_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from boruta_scheduler.core import health
from boruta_scheduler.errors import InvalidArgument
from boruta_scheduler.listing import (
    INT64_MAX,
    Page,
    PageTokens,
    RequestQuery,
    RequestSort,
    Scope,
    SortKey,
    TokenQuery,
    WorkerQuery,
    WorkerSort,
    page_size,
)
from boruta_scheduler.types import (
    Allocation,
    AuditEvent,
    Colocation,
    FailureKind,
    HistoryEntry,
    HostStatus,
    JobView,
    PendingReason,
    Placement,
    RequestState,
    RequestView,
    StackView,
    TokenRecord,
    UsageBy,
    UsageQuery,
    UsageTotals,
    WorkerState,
    WorkerView,
)

E = TypeVar("E", RequestState, WorkerState)
V = TypeVar("V")
M = TypeVar("M", bound=Message)

# The most bytes of items one list reply carries, well under the 4 MiB a gRPC client
# accepts by default: a board keeps up to 64 failures of up to 1 KiB each, a request may
# carry 16 profiles of 8 KiB of caps, so a page of them is cut short, at an item, rather
# than refused whole by the client.
PAGE_BYTES = 2 << 20


def fitted(
    page: Page[V], make: Callable[[V], M], key: Callable[[V], SortKey]
) -> tuple[list[M], SortKey | None]:
    """The page's items as messages, up to the last that keeps them within PAGE_BYTES (the
    first always), and the sort key to go on after."""
    made, after = fitted_run(page.items, make, key)
    return made, after if len(made) < len(page.items) else page.next_after


def fitted_run(
    items: Iterable[V],
    make: Callable[[V], M],
    key: Callable[[V], SortKey],
    limit: int | None = None,
) -> tuple[list[M], SortKey | None]:
    """The first items as messages, read lazily: at most limit (None: no count limit) and
    up to the last that keeps them within PAGE_BYTES (the first always); and the sort key
    to go on after, None once no item is left."""
    made: list[M] = []
    size = 0
    taken: list[V] = []
    for item in items:
        if len(made) == limit:
            return made, key(taken[-1])
        message = make(item)
        size += message.ByteSize()
        if made and size > PAGE_BYTES:
            return made, key(taken[-1])
        made.append(message)
        taken.append(item)
    return made, None


_REQUEST_SORT = {
    requests_pb2.REQUEST_SORT_FIELD_UNSPECIFIED: RequestSort.ID,
    requests_pb2.REQUEST_SORT_FIELD_ID: RequestSort.ID,
    requests_pb2.REQUEST_SORT_FIELD_PRIORITY: RequestSort.PRIORITY,
    requests_pb2.REQUEST_SORT_FIELD_STATE: RequestSort.STATE,
    requests_pb2.REQUEST_SORT_FIELD_VALID_AFTER: RequestSort.VALID_AFTER,
    requests_pb2.REQUEST_SORT_FIELD_DEADLINE: RequestSort.DEADLINE,
    requests_pb2.REQUEST_SORT_FIELD_UPDATED_AT: RequestSort.UPDATED_AT,
}
_WORKER_SORT = {
    workers_pb2.WORKER_SORT_FIELD_UNSPECIFIED: WorkerSort.UUID,
    workers_pb2.WORKER_SORT_FIELD_UUID: WorkerSort.UUID,
    workers_pb2.WORKER_SORT_FIELD_STATE: WorkerSort.STATE,
    workers_pb2.WORKER_SORT_FIELD_REGISTERED_AT: WorkerSort.REGISTERED_AT,
    workers_pb2.WORKER_SORT_FIELD_LAST_SEEN: WorkerSort.LAST_SEEN,
}


def timestamp(seconds: float) -> Timestamp:
    whole, nanos = divmod(round(seconds * 1e9), 1_000_000_000)
    return Timestamp(seconds=whole, nanos=nanos)


def seconds(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


# The range protobuf defines for Timestamp: 0001-01-01 to 9999-12-31.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def optional_seconds(message: object, field: str) -> float | None:
    """The time in a Timestamp field, or None when the field is unset; a timestamp out of
    protobuf's range is refused rather than misread."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    ts = getattr(message, field)
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos <= 999_999_999):
        raise InvalidArgument(
            f"{field} is not a valid timestamp (seconds {ts.seconds}, nanos {ts.nanos}); "
            "use years 1 to 9999 and nanos 0 to 999999999"
        )
    return seconds(ts)


# The range protobuf defines for Duration: about 10,000 years either way.
_MAX_DURATION = 315_576_000_000


def optional_duration(message: object, field: str) -> float | None:
    """Seconds in a Duration field, or None when the field is unset; a duration protobuf
    would not accept (nanos of the wrong sign or size) is refused."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    d = getattr(message, field)
    if (
        not -_MAX_DURATION <= d.seconds <= _MAX_DURATION
        or not -999_999_999 <= d.nanos <= 999_999_999
        or d.seconds * d.nanos < 0
    ):
        raise InvalidArgument(
            f"{field} is not a valid duration (seconds {d.seconds}, nanos {d.nanos}); "
            f"protobuf's Duration holds at most {_MAX_DURATION} seconds either way"
        )
    return float(d.seconds + d.nanos / 1e9)


def enum_values(kind: type[E], values: Iterable[int], what: str) -> frozenset[E]:
    """Known, specified enum values; anything else is refused."""
    result = set()
    for value in values:
        try:
            result.add(kind(value))
        except ValueError:
            raise InvalidArgument(f"{what} has unknown value {value}") from None
    return frozenset(result)


def request_sort(value: int) -> RequestSort:
    try:
        return _REQUEST_SORT[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(f"sort_by has unknown value {value}") from None


def worker_sort(value: int) -> WorkerSort:
    try:
        return _WORKER_SORT[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(f"sort_by has unknown value {value}") from None


def request_query(
    msg: requests_pb2.ListRequestsRequest, tokens: PageTokens
) -> tuple[RequestQuery, Scope]:
    """The query a ListRequests call asks for, and the scope of its page tokens."""
    sort = request_sort(msg.sort_by)
    query = dataclasses.replace(
        request_filter(msg.filter),
        sort=sort,
        descending=msg.descending,
        limit=page_size(msg.page_size),
    )
    scope = PageTokens.scope(
        "ListRequests",
        sorted(query.ids),
        sorted(query.states),
        sorted(query.priorities),
        sorted(query.owners),
        sort.value,
        query.descending,
    )
    # Every request sort key is a number, and ties are ordered by id.
    after = tokens.decode(scope, msg.page_token, first=(int, float), second=(int,))
    return dataclasses.replace(query, after=after), scope


MAX_REQUEST_ID = INT64_MAX  # ids are stored as signed 64-bit integers


def request_filter(f: requests_pb2.RequestFilter) -> RequestQuery:
    too_big = [i for i in f.ids if i > MAX_REQUEST_ID]
    if too_big:
        raise InvalidArgument(f"filter.ids: {too_big[0]} is no request id (at most 2^63-1)")
    return RequestQuery(
        ids=frozenset(f.ids),
        states=enum_values(RequestState, f.states, "filter.states"),
        priorities=frozenset(f.priorities),
        owners=frozenset(f.owners),
    )


def worker_filter(f: workers_pb2.WorkerFilter) -> WorkerQuery:
    return WorkerQuery(
        uuids=frozenset(f.uuids),
        states=enum_values(WorkerState, f.states, "filter.states"),
        groups=frozenset(f.groups),
        caps=dict(f.caps),
    )


def worker_query(
    msg: workers_pb2.ListWorkersRequest, tokens: PageTokens
) -> tuple[WorkerQuery, Scope]:
    """The query a ListWorkers call asks for, and the scope of its page tokens."""
    sort = worker_sort(msg.sort_by)
    query = dataclasses.replace(
        worker_filter(msg.filter),
        sort=sort,
        descending=msg.descending,
        limit=page_size(msg.page_size),
    )
    scope = PageTokens.scope(
        "ListWorkers",
        sorted(query.uuids),
        sorted(query.states),
        sorted(query.groups),
        sorted(query.caps.items()),
        sort.value,
        query.descending,
    )
    # Workers are ordered by uuid, or by a number with ties ordered by uuid.
    first = (str,) if sort is WorkerSort.UUID else (int, float)
    after = tokens.decode(scope, msg.page_token, first=first, second=(str,))
    return dataclasses.replace(query, after=after), scope


def token_query(msg: tokens_pb2.ListTokensRequest, tokens: PageTokens) -> tuple[TokenQuery, Scope]:
    """The query a ListTokens call asks for, and the scope of its page tokens. A page_size
    of 0, what clients from before paging send, is as many tokens as fit one reply."""
    scope = PageTokens.scope("ListTokens", msg.user, msg.active_only)
    after = tokens.decode(scope, msg.page_token, first=(int,), second=(int,))
    return (
        TokenQuery(
            user=msg.user,
            active_only=msg.active_only,
            limit=page_size(msg.page_size) if msg.page_size else None,
            after=int(after[0]) if after else 0,
        ),
        scope,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class NewestFirst:
    """A page of a list that runs newest first by a numeric id: how many, and the id to
    continue below (None for the first page)."""

    limit: int
    before: int | None
    scope: Scope

    def next_token(self, tokens: PageTokens, last_id: int | None) -> str:
        """The token for the page after one that ended at last_id (None: the list ended)."""
        return tokens.encode(self.scope, None if last_id is None else (last_id, 0))


def newest_first(
    tokens: PageTokens, page_token: str, requested_size: int, list_name: str, *scope: object
) -> NewestFirst:
    """Where a newest-first list (a worker's history, the audit log) continues."""
    bound = PageTokens.scope(list_name, *scope)
    after = tokens.decode(bound, page_token, first=(int,), second=(int,))
    return NewestFirst(page_size(requested_size), int(after[0]) if after else None, bound)


def job_info(job: JobView) -> types_pb2.JobInfo:
    return types_pb2.JobInfo(
        worker_uuid=job.worker_uuid,
        started_at=timestamp(job.started_at),
        timeout_at=timestamp(job.timeout_at),
        prolong_count=job.prolong_count,
        max_timeout_at=timestamp(job.max_timeout_at),
    )


def pending_reason(reason: PendingReason) -> types_pb2.PendingReason:
    info = types_pb2.PendingReason(
        code=int(reason.code),  # type: ignore[arg-type]
        message=reason.message,
        requests_ahead=reason.requests_ahead,
        boards_total=reason.boards_total,
        reserved=reason.reserved,
    )
    for board in reason.boards:
        shown = info.boards.add(
            uuid=board.uuid,
            state=int(board.state),
            held_by=board.held_by,
            collateral=board.collateral,
            reserved_for=board.reserved_for,
        )
        if board.frees_at:
            shown.frees_at.CopyFrom(timestamp(board.frees_at))
        if board.frees_at_latest:
            shown.frees_at_latest.CopyFrom(timestamp(board.frees_at_latest))
    if reason.expected_start:
        info.expected_start.CopyFrom(timestamp(reason.expected_start))
    if reason.latest_start:
        info.latest_start.CopyFrom(timestamp(reason.latest_start))
    return info


def colocations(groups: Iterable[types_pb2.Colocation]) -> tuple[Colocation, ...]:
    """NewRequest's groups; an unknown placement stays a number the core refuses."""
    return tuple(
        Colocation(
            tuple(group.profiles),
            Placement(group.placement)
            if group.placement in _PLACEMENTS
            else cast(Placement, int(group.placement)),
        )
        for group in groups
    )


_PLACEMENTS = frozenset(int(p) for p in Placement)


def allocation(a: Allocation) -> workers_pb2.Allocation:
    return workers_pb2.Allocation(
        request_id=a.request_id,
        owner=a.owner,
        boards=[
            workers_pb2.AllocatedBoard(
                profile=b.profile,
                worker_uuid=b.worker_uuid,
                dryad_address=b.dryad_address,
                stack=b.stack,
            )
            for b in a.boards
        ],
        collateral=a.collateral,
        started_at=timestamp(a.started_at),
        timeout_at=timestamp(a.timeout_at),
    )


def request_info(r: RequestView, pending: PendingReason | None = None) -> types_pb2.RequestInfo:
    info = types_pb2.RequestInfo(
        id=r.id,
        priority=r.priority,
        owner=r.owner,
        owner_groups=sorted(r.owner_groups),
        caps=dict(r.caps),
        valid_after=timestamp(r.valid_after),
        deadline=timestamp(r.deadline),
        state=int(r.state),  # type: ignore[arg-type]
        reason=r.reason,
        created_at=timestamp(r.created_at),
        updated_at=timestamp(r.updated_at),
    )
    if r.job is not None:
        info.job.CopyFrom(job_info(r.job))
    if r.profiles:
        info.profiles.extend(types_pb2.Profile(name=p.name, caps=dict(p.caps)) for p in r.profiles)
        info.jobs.extend(job_info(job) for job in r.jobs)
    if r.together:
        info.together.extend(
            types_pb2.Colocation(profiles=c.profiles, placement=int(c.placement))  # type: ignore[arg-type]
            for c in r.together
        )
    if r.job_timeout:
        info.job_timeout.FromNanoseconds(round(r.job_timeout * 1e9))
    if pending is not None:
        info.pending_reason.CopyFrom(pending_reason(pending))
    return info


def access_info(job: JobView, public_host: str) -> types_pb2.AccessInfo:
    """How the owner logs in: through the job's tunnel, checking the board's host keys."""
    access = job.access
    assert access is not None
    return types_pb2.AccessInfo(
        host=public_host,
        port=job.tunnel_port,
        username=access.username,
        private_key_pem=access.private_key_pem,
        ssh_host_keys=access.host_keys,
    )


def host_status_info(s: HostStatus) -> types_pb2.HostStatus:
    info = types_pb2.HostStatus(
        load_1m=s.load_1m,
        memory_total_bytes=s.memory_total_bytes,
        memory_available_bytes=s.memory_available_bytes,
        disk_free_bytes=s.disk_free_bytes,
    )
    info.uptime.FromNanoseconds(round(s.uptime_seconds * 1e9))
    return info


def host_status(info: types_pb2.HostStatus) -> HostStatus:
    if not 0 <= info.uptime.seconds <= _MAX_DURATION:
        raise InvalidArgument(
            f"host_status.uptime must be 0 to {_MAX_DURATION} seconds, got {info.uptime.seconds}"
        )
    return HostStatus(
        load_1m=info.load_1m,
        memory_total_bytes=info.memory_total_bytes,
        memory_available_bytes=info.memory_available_bytes,
        disk_free_bytes=info.disk_free_bytes,
        uptime_seconds=info.uptime.ToNanoseconds() / 1e9,
    )


def worker_info(w: WorkerView, now: float | None = None) -> types_pb2.WorkerInfo:
    """The worker as the API shows it; its failure rate is as of now (default: the clock)."""
    record = w.health
    info = types_pb2.WorkerInfo(
        uuid=w.uuid,
        state=int(w.state),  # type: ignore[arg-type]
        groups=sorted(w.groups),
        caps=dict(w.caps),
        dryad_address=w.dryad_address,
        ssh_address=w.ssh_address,
        reason=w.reason,
        request_id=w.request_id,
        registered_at=timestamp(w.registered_at),
        last_seen=timestamp(w.last_seen),
        jobs_done=w.jobs_done,
        failures=w.failures,
        dryad_version=w.dryad_version,
        stack=w.stack,
        collateral_of=w.collateral_of,
        recent_failures=[
            types_pb2.WorkerFailure(
                time=timestamp(f.time),
                reason=f.reason,
                kind=_FAILURE_KINDS[f.kind],
            )
            for f in reversed(record.failures)
        ],
        failures_per_day=health.failures_per_day(
            record, time.time() if now is None else now, w.registered_at
        ),
        quarantined=record.quarantined,
        drain_reason=w.drain_reason,
    )
    if w.host_status is not None:
        info.host_status.CopyFrom(host_status_info(w.host_status))
    return info


_FAILURE_KINDS = {
    FailureKind.HEARTBEAT: types_pb2.FAILURE_KIND_HEARTBEAT,
    FailureKind.DRYAD_CALL: types_pb2.FAILURE_KIND_DRYAD_CALL,
    FailureKind.REPORTED: types_pb2.FAILURE_KIND_REPORTED,
    FailureKind.OTHER: types_pb2.FAILURE_KIND_OTHER,
}


def stack_info(s: StackView) -> workers_pb2.StackInfo:
    return workers_pb2.StackInfo(
        name=s.name,
        worker_uuids=list(s.workers),
        created_at=timestamp(s.created_at),
        holder=s.holder,
    )


def history_entry(e: HistoryEntry) -> types_pb2.WorkerHistoryEntry:
    return types_pb2.WorkerHistoryEntry(
        time=timestamp(e.time),
        from_state=int(e.from_state) if e.from_state is not None else 0,  # type: ignore[arg-type]
        to_state=int(e.to_state),  # type: ignore[arg-type]
        reason=e.reason,
    )


def audit_event(e: AuditEvent) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        id=e.id,
        time=timestamp(e.time),
        actor=e.actor,
        role=e.role,
        action=e.action,
        target=e.target,
        detail=e.detail,
    )


def token_info(t: TokenRecord) -> tokens_pb2.TokenInfo:
    info = tokens_pb2.TokenInfo(
        id=t.id,
        user=t.user,
        groups=sorted(t.groups),
        admin=t.admin,
        created_at=timestamp(t.created_at),
        expires_at=timestamp(t.expires_at),
        issued_by=t.issued_by,
        description=t.description,
    )
    if t.revoked_at is not None:
        info.revoked_at.CopyFrom(timestamp(t.revoked_at))
    return info


USAGE_BY: dict[int, UsageBy] = {
    requests_pb2.USAGE_GROUPING_UNSPECIFIED: UsageBy.USER,
    requests_pb2.USAGE_GROUPING_USER: UsageBy.USER,
    requests_pb2.USAGE_GROUPING_GROUP: UsageBy.GROUP,
}
_GROUPING_OF = {
    UsageBy.USER: requests_pb2.USAGE_GROUPING_USER,
    UsageBy.GROUP: requests_pb2.USAGE_GROUPING_GROUP,
}


def usage_by(value: int) -> UsageBy:
    """The grouping of a GetUsage call; an unknown value is refused."""
    by = USAGE_BY.get(value)
    if by is None:
        raise InvalidArgument(f"by has no grouping {value}; use USAGE_GROUPING_USER or _GROUP")
    return by


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def usage_response(query: UsageQuery, totals: list[UsageTotals]) -> requests_pb2.GetUsageResponse:
    return requests_pb2.GetUsageResponse(
        totals=[
            requests_pb2.UsageTotals(
                key=t.key,
                board_time=_duration(t.board_seconds),
                jobs=t.jobs,
                requests=t.requests,
                wait_time=_duration(t.wait_seconds),
                max_wait=_duration(t.max_wait_seconds),
                unstarted=t.unstarted,
                unstarted_wait_time=_duration(t.unstarted_wait_seconds),
            )
            for t in totals
        ],
        since=timestamp(query.since),
        until=timestamp(query.until),
        by=_GROUPING_OF[query.by],
    )
