"""Between protobuf messages and the client's types; nothing outside the client sees protobuf."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from boruta.v1 import audit_pb2, requests_pb2, tokens_pb2, types_pb2, workers_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from boruta_client.errors import InvalidArgument
from boruta_client.types import (
    Access,
    Acquired,
    AcquiredBoard,
    AllocatedBoard,
    Allocation,
    AuditEvent,
    Colocation,
    FailureKind,
    HistoryEntry,
    HostStatus,
    Job,
    PendingBoard,
    PendingCode,
    PendingReason,
    Placement,
    Profile,
    Profiles,
    Request,
    RequestSort,
    RequestState,
    Stack,
    Together,
    Token,
    Usage,
    UsageBy,
    UsageTotals,
    Worker,
    WorkerChange,
    WorkerFailure,
    WorkerSort,
    WorkerState,
)

EPOCH = datetime.fromtimestamp(0, UTC)


def when(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def timestamp(moment: datetime) -> Timestamp:
    """A protobuf timestamp; naive datetimes are refused, since their zone is a guess."""
    if moment.tzinfo is None:
        raise InvalidArgument(f"{moment.isoformat()} has no time zone; use an aware datetime")
    ts = Timestamp()
    ts.FromDatetime(moment.astimezone(UTC))
    return ts


def job(info: types_pb2.JobInfo) -> Job:
    return Job(
        worker_uuid=info.worker_uuid,
        started_at=when(info.started_at),
        timeout_at=when(info.timeout_at),
        max_timeout_at=when(info.max_timeout_at),
        prolong_count=info.prolong_count,
    )


def pending_reason(info: types_pb2.PendingReason) -> PendingReason:
    def optional(ts: Timestamp, present: bool) -> datetime | None:
        return when(ts) if present else None

    try:
        code = PendingCode(info.code)
    except ValueError:
        code = PendingCode.UNKNOWN
    boards = tuple(
        PendingBoard(
            uuid=b.uuid,
            state=WorkerState(b.state),
            held_by=b.held_by or None,
            collateral=b.collateral,
            reserved_for=b.reserved_for or None,
            frees_at=optional(b.frees_at, b.HasField("frees_at")),
            frees_at_latest=optional(b.frees_at_latest, b.HasField("frees_at_latest")),
        )
        for b in info.boards
    )
    return PendingReason(
        code=code,
        message=info.message,
        requests_ahead=info.requests_ahead,
        boards=boards,
        boards_total=info.boards_total,
        reserved=tuple(info.reserved),
        expected_start=optional(info.expected_start, info.HasField("expected_start")),
        latest_start=optional(info.latest_start, info.HasField("latest_start")),
    )


def request(info: types_pb2.RequestInfo, queue_position: int | None = None) -> Request:
    return Request(
        id=info.id,
        priority=info.priority,
        owner=info.owner,
        owner_groups=frozenset(info.owner_groups),
        caps=dict(info.caps),
        valid_after=when(info.valid_after),
        deadline=when(info.deadline),
        state=RequestState(info.state),
        reason=info.reason,
        created_at=when(info.created_at),
        updated_at=when(info.updated_at),
        job=job(info.job) if info.HasField("job") else None,
        queue_position=queue_position,
        job_timeout=info.job_timeout.ToTimedelta() if info.HasField("job_timeout") else None,
        profiles=tuple(Profile(p.name, dict(p.caps)) for p in info.profiles),
        jobs=tuple(map(job, info.jobs)),
        pending_reason=pending_reason(info.pending_reason)
        if info.HasField("pending_reason")
        else None,
        together=tuple(
            Colocation(tuple(c.profiles), Placement(c.placement))
            for c in info.together
            if c.placement in _PLACEMENT_NUMBERS
        ),
    )


_PLACEMENT_NUMBERS = frozenset(p.value for p in Placement)
_PLACEMENT_WORDS = {p.name.lower(): p for p in Placement}


def parse_together(text: str) -> tuple[Colocation, ...]:
    """Groups from their written form: "host" or "stack" (every profile), or groups of
    named profiles separated by ";", each "host:dut,relay" or "stack:a,b"."""
    groups = []
    for part in text.split(";"):
        word, _, names = part.strip().partition(":")
        placement = _PLACEMENT_WORDS.get(word.strip().lower())
        if placement is None:
            raise InvalidArgument(
                f"together group {part.strip()!r} must start with host or stack (e.g. "
                "'host', 'stack', 'host:dut,relay' or 'host:dut,relay;stack:a,b')"
            )
        listed = tuple(n.strip() for n in names.split(",")) if names.strip() else ()
        if any(not n for n in listed):
            raise InvalidArgument(f"together group {part.strip()!r} has an empty profile name")
        groups.append(Colocation(listed, placement))
    return tuple(groups)


def colocations(together: Together) -> list[types_pb2.Colocation]:
    """Groups as NewRequest takes them."""
    groups = parse_together(together) if isinstance(together, str) else tuple(together)
    return [
        types_pb2.Colocation(profiles=list(g.profiles), placement=g.placement.value)  # type: ignore[arg-type]
        for g in groups
    ]


def together_text(groups: Iterable[Colocation]) -> str:
    """Groups in the form parse_together reads ("" for none)."""
    return ";".join(
        g.placement.name.lower() + (":" + ",".join(g.profiles) if g.profiles else "")
        for g in groups
    )


def request_reply(reply: requests_pb2.GetRequestInfoResponse) -> Request:
    position = reply.queue_position if reply.HasField("queue_position") else None
    return request(reply.request, position)


def access(a: types_pb2.AccessInfo) -> Access:
    return Access(a.host, a.port, a.username, a.private_key_pem, tuple(a.ssh_host_keys))


def acquired(reply: requests_pb2.AcquireWorkerResponse) -> Acquired:
    boards = tuple(AcquiredBoard(b.name, access(b.access), job(b.job)) for b in reply.boards)
    return Acquired(access(reply.access), job(reply.job), boards)


def profiles(asked: Profiles) -> list[types_pb2.Profile]:
    """Profiles as NewRequest takes them: named ones from a mapping, unnamed from a list."""
    if isinstance(asked, Mapping):
        return [types_pb2.Profile(name=name, caps=dict(caps)) for name, caps in asked.items()]
    return [types_pb2.Profile(caps=dict(caps)) for caps in asked]


def worker(info: types_pb2.WorkerInfo) -> Worker:
    status = None
    if info.HasField("host_status"):
        s = info.host_status
        status = HostStatus(
            load_1m=s.load_1m,
            memory_total_bytes=s.memory_total_bytes,
            memory_available_bytes=s.memory_available_bytes,
            disk_free_bytes=s.disk_free_bytes,
            uptime=timedelta(seconds=s.uptime.seconds, microseconds=s.uptime.nanos // 1000),
        )
    return Worker(
        uuid=info.uuid,
        state=WorkerState(info.state),
        groups=frozenset(info.groups),
        caps=dict(info.caps),
        dryad_address=info.dryad_address,
        ssh_address=info.ssh_address,
        reason=info.reason,
        request_id=info.request_id or None,
        registered_at=when(info.registered_at),
        last_seen=when(info.last_seen),
        jobs_done=info.jobs_done,
        failures=info.failures,
        dryad_version=info.dryad_version,
        host_status=status,
        stack=info.stack,
        collateral_of=info.collateral_of or None,
        recent_failures=tuple(
            WorkerFailure(when(f.time), f.reason, _failure_kind(f.kind))
            for f in info.recent_failures
        ),
        failures_per_day=info.failures_per_day,
        quarantined=info.quarantined,
        drain_reason=info.drain_reason,
    )


def _failure_kind(number: int) -> FailureKind:
    """A kind this client knows, else UNSPECIFIED (a newer scheduler may send others)."""
    try:
        return FailureKind(number)
    except ValueError:
        return FailureKind.UNSPECIFIED


def worker_change(reply: workers_pb2.WatchWorkersResponse) -> WorkerChange:
    return WorkerChange(worker(reply.worker), reply.removed)


def history_entry(entry: types_pb2.WorkerHistoryEntry) -> HistoryEntry:
    return HistoryEntry(
        time=when(entry.time),
        from_state=WorkerState(entry.from_state) if entry.from_state else None,
        to_state=WorkerState(entry.to_state),
        reason=entry.reason,
    )


# --------------------------------------------------------------- request messages


def new_request(
    caps: Mapping[str, str],
    priority: int,
    valid_after: datetime | None,
    deadline: datetime | None,
    accept_unsatisfiable: bool,
    no_wait: bool,
    job_timeout: timedelta | None = None,
) -> requests_pb2.NewRequestRequest:
    message = requests_pb2.NewRequestRequest(
        caps=dict(caps),
        priority=priority,
        accept_unsatisfiable=accept_unsatisfiable,
        no_wait=no_wait,
    )
    if valid_after is not None:
        message.valid_after.CopyFrom(timestamp(valid_after))
    if deadline is not None:
        message.deadline.CopyFrom(timestamp(deadline))
    if job_timeout is not None:
        message.job_timeout.FromTimedelta(job_timeout)
    return message


def update_request(
    request_id: int,
    priority: int | None,
    valid_after: datetime | None,
    deadline: datetime | None,
) -> requests_pb2.UpdateRequestRequest:
    message = requests_pb2.UpdateRequestRequest(request_id=request_id)
    if priority is not None:
        message.priority = priority
    if valid_after is not None:
        message.valid_after.CopyFrom(timestamp(valid_after))
    if deadline is not None:
        message.deadline.CopyFrom(timestamp(deadline))
    return message


def request_filter(
    ids: Iterable[int] = (),
    states: Iterable[RequestState] = (),
    priorities: Iterable[int] = (),
    owners: Iterable[str] = (),
) -> requests_pb2.RequestFilter:
    return requests_pb2.RequestFilter(
        ids=list(ids),
        states=[s.value for s in states],  # type: ignore[misc]
        priorities=list(priorities),
        owners=list(owners),
    )


def list_requests(
    flt: requests_pb2.RequestFilter, sort_by: RequestSort, descending: bool, page_size: int
) -> requests_pb2.ListRequestsRequest:
    return requests_pb2.ListRequestsRequest(
        filter=flt,
        sort_by=sort_by.value,  # type: ignore[arg-type]
        descending=descending,
        page_size=page_size,
    )


def worker_filter(
    uuids: Iterable[str] = (),
    states: Iterable[WorkerState] = (),
    groups: Iterable[str] = (),
    caps: Mapping[str, str] | None = None,
) -> workers_pb2.WorkerFilter:
    return workers_pb2.WorkerFilter(
        uuids=list(uuids),
        states=[s.value for s in states],  # type: ignore[misc]
        groups=list(groups),
        caps=dict(caps or {}),
    )


def list_workers(
    flt: workers_pb2.WorkerFilter, sort_by: WorkerSort, descending: bool, page_size: int
) -> workers_pb2.ListWorkersRequest:
    return workers_pb2.ListWorkersRequest(
        filter=flt,
        sort_by=sort_by.value,  # type: ignore[arg-type]
        descending=descending,
        page_size=page_size,
    )


def set_state(
    uuid: str, state: WorkerState, reason: str, after_job: bool = False
) -> workers_pb2.SetStateRequest:
    if state not in (WorkerState.IDLE, WorkerState.MAINTENANCE):
        raise InvalidArgument(f"a worker can be set IDLE or MAINTENANCE, not {state.name}")
    return workers_pb2.SetStateRequest(
        worker_uuid=uuid,
        state=state.value,
        reason=reason,
        after_job=after_job,
    )


def token(info: tokens_pb2.TokenInfo) -> Token:
    return Token(
        id=info.id,
        user=info.user,
        groups=frozenset(info.groups),
        admin=info.admin,
        created_at=when(info.created_at),
        expires_at=when(info.expires_at),
        revoked_at=when(info.revoked_at) if info.HasField("revoked_at") else None,
        issued_by=info.issued_by,
        description=info.description,
    )


def audit_event(e: audit_pb2.AuditEvent) -> AuditEvent:
    return AuditEvent(e.id, when(e.time), e.actor, e.role, e.action, e.target, e.detail)


def allocation(info: workers_pb2.Allocation) -> Allocation:
    return Allocation(
        request_id=info.request_id,
        owner=info.owner,
        boards=tuple(
            AllocatedBoard(b.profile, b.worker_uuid, b.dryad_address, b.stack) for b in info.boards
        ),
        collateral=tuple(info.collateral),
        started_at=when(info.started_at),
        timeout_at=when(info.timeout_at),
    )


def stack(info: workers_pb2.StackInfo) -> Stack:
    return Stack(
        name=info.name,
        worker_uuids=tuple(info.worker_uuids),
        created_at=when(info.created_at),
        holder=info.holder or None,
    )


def usage_request(
    since: datetime, until: datetime | None, by: UsageBy, owner: str
) -> requests_pb2.GetUsageRequest:
    message = requests_pb2.GetUsageRequest(since=timestamp(since), by=_GROUPING[by], owner=owner)
    if until is not None:
        message.until.CopyFrom(timestamp(until))
    return message


_GROUPING = {
    UsageBy.USER: requests_pb2.USAGE_GROUPING_USER,
    UsageBy.GROUP: requests_pb2.USAGE_GROUPING_GROUP,
}
_USAGE_BY = {grouping: by for by, grouping in _GROUPING.items()}


def usage(reply: requests_pb2.GetUsageResponse) -> Usage:
    return Usage(
        since=when(reply.since),
        until=when(reply.until),
        by=_USAGE_BY.get(reply.by, UsageBy.USER),
        totals=tuple(
            UsageTotals(
                key=t.key,
                board_time=t.board_time.ToTimedelta(),
                jobs=t.jobs,
                requests=t.requests,
                wait_time=t.wait_time.ToTimedelta(),
                max_wait=t.max_wait.ToTimedelta(),
                unstarted=t.unstarted,
                unstarted_wait_time=t.unstarted_wait_time.ToTimedelta(),
            )
            for t in reply.totals
        ),
    )
