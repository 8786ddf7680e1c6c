"""Conversions between views and flat rows, and the request list query, shared by the SQL
stores."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from boruta_scheduler.core import Changes
from boruta_scheduler.listing import Page, RequestQuery, RequestSort
from boruta_scheduler.types import (
    Access,
    AuditEvent,
    Colocation,
    Failure,
    FailureKind,
    Health,
    HistoryEntry,
    JobUsage,
    JobView,
    Placement,
    ProfileView,
    RequestState,
    RequestView,
    StackView,
    TokenRecord,
    UsageQuery,
    UsageTotals,
    WorkerState,
    WorkerView,
)

Row = Mapping[str, Any]
V = TypeVar("V")
_REQUEST_STATES = {int(state): state for state in RequestState}
# Distinct caps and groups texts one Decoder keeps: enough for the shapes a farm has, few
# enough that a queue of unique caps does not hold them all while it loads.
DECODER_ROOM = 4096
_NO_HEALTH = Health()


class Decoder:
    """Decodes the JSON columns of request rows, once per distinct text while it has room:
    the rows of one load then share their caps, groups and owners (memory and time)."""

    __slots__ = ("_caps", "_groups", "_owners")

    def __init__(self) -> None:
        self._caps: dict[str, Mapping[str, str]] = {}
        self._groups: dict[str, frozenset[str]] = {}
        self._owners: dict[str, str] = {}

    def caps(self, text: str) -> Mapping[str, str]:
        return _shared(self._caps, text, lambda t: MappingProxyType(json.loads(t)))

    def groups(self, text: str) -> frozenset[str]:
        return _shared(self._groups, text, lambda t: frozenset(json.loads(t)))

    def owner(self, text: str) -> str:
        return _shared(self._owners, text, str)


def _shared(known: dict[str, V], text: str, decode: Callable[[str], V]) -> V:
    value = known.get(text)
    if value is None:
        value = decode(text)
        if len(known) < DECODER_ROOM:
            known[text] = value
    return value


def _json_set(values: frozenset[str]) -> str:
    return json.dumps(sorted(values))


def _json_caps(caps: Mapping[str, str]) -> str:
    return json.dumps(dict(caps), sort_keys=True)


def _json_keys(access: Access | None) -> str | None:
    return json.dumps(list(access.host_keys)) if access else None


def _access(username: str | None, key: str | None, host_keys: str | None) -> Access | None:
    """The stored access; host_keys is NULL in rows written before host keys were kept."""
    if username is None:
        return None
    return Access(username, key or "", tuple(json.loads(host_keys or "[]")))


def _json_profiles(profiles: Sequence[ProfileView]) -> str | None:
    if not profiles:
        return None
    return json.dumps([[p.name, dict(sorted(p.caps.items()))] for p in profiles])


def _json_together(together: Sequence[Colocation]) -> str | None:
    if not together:
        return None
    return json.dumps([[list(c.profiles), int(c.placement)] for c in together])


def _together(text: str | None) -> tuple[Colocation, ...]:
    if text is None:
        return ()
    return tuple(
        Colocation(tuple(names), Placement(placement)) for names, placement in json.loads(text)
    )


def _json_jobs(jobs: Sequence[JobView]) -> str | None:
    """The jobs of a request's later profiles (the first has columns of its own)."""
    if not jobs:
        return None
    return json.dumps(
        [
            {
                "worker_uuid": j.worker_uuid,
                "started_at": j.started_at,
                "timeout_at": j.timeout_at,
                "max_timeout_at": j.max_timeout_at,
                "prolong_count": j.prolong_count,
                "ssh_address": j.ssh_address,
                "tunnel_port": j.tunnel_port,
                "access": None
                if j.access is None
                else [j.access.username, j.access.private_key_pem, list(j.access.host_keys)],
            }
            for j in jobs
        ]
    )


def _jobs(text: str) -> list[JobView]:
    jobs = []
    for j in json.loads(text):
        access = j.pop("access")
        jobs.append(
            JobView(
                **j,
                access=None if access is None else Access(access[0], access[1], tuple(access[2])),
            )
        )
    return jobs


def request_row(r: RequestView) -> dict[str, Any]:
    job = r.job
    access = job.access if job else None
    return {
        "id": r.id,
        "owner": r.owner,
        "owner_groups": _json_set(r.owner_groups),
        "caps": _json_caps(r.caps),
        "priority": r.priority,
        "valid_after": r.valid_after,
        "deadline": r.deadline,
        "state": int(r.state),
        "reason": r.reason,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "job_worker_uuid": job.worker_uuid if job else None,
        "job_started_at": job.started_at if job else None,
        "job_timeout_at": job.timeout_at if job else None,
        "job_max_timeout_at": job.max_timeout_at if job else None,
        "job_prolong_count": job.prolong_count if job else None,
        "job_ssh_address": job.ssh_address if job else None,
        "access_username": access.username if access else None,
        "access_key": access.private_key_pem if access else None,
        "access_host_keys": _json_keys(access),
        "job_tunnel_port": job.tunnel_port if job else None,
        "job_timeout": r.job_timeout,
        "idempotency_key": r.idempotency_key or None,
        "arguments_hash": r.arguments_hash or None,
        "profiles": _json_profiles(r.profiles),
        "more_jobs": _json_jobs(r.jobs[1:]),
        "together": _json_together(r.together),
    }


def request_view(row: Row, decoder: Decoder | None = None) -> RequestView:
    """The view of a request row; rows decoded with one decoder share equal values."""
    decoder = decoder or Decoder()
    job = None
    if row["job_worker_uuid"] is not None:
        access = _access(row["access_username"], row["access_key"], row["access_host_keys"])
        job = JobView(
            worker_uuid=row["job_worker_uuid"],
            started_at=row["job_started_at"],
            timeout_at=row["job_timeout_at"],
            max_timeout_at=row["job_max_timeout_at"],
            prolong_count=row["job_prolong_count"],
            ssh_address=row["job_ssh_address"],
            access=access,
            tunnel_port=row["job_tunnel_port"] or 0,
        )
    # Times that are equal are one object, as they were in the core that stored them.
    created_at = row["created_at"]
    valid_after = row["valid_after"]
    updated_at = row["updated_at"]
    job_timeout = row["job_timeout"]
    profiles: tuple[ProfileView, ...] = ()
    jobs: tuple[JobView, ...] = ()
    if row["profiles"] is not None:
        profiles = tuple(
            ProfileView(name, decoder.caps(json.dumps(caps, sort_keys=True)))
            for name, caps in json.loads(row["profiles"])
        )
        if job is not None:
            jobs = (job, *_jobs(row["more_jobs"] or "[]"))
    return RequestView(
        id=row["id"],
        priority=row["priority"],
        owner=decoder.owner(row["owner"]),
        owner_groups=decoder.groups(row["owner_groups"]),
        caps=decoder.caps(row["caps"]),
        valid_after=created_at if valid_after == created_at else valid_after,
        deadline=row["deadline"],
        state=_REQUEST_STATES[row["state"]],
        reason=row["reason"],
        created_at=created_at,
        updated_at=created_at if updated_at == created_at else updated_at,
        job=job,
        job_timeout=job_timeout or 0.0,
        idempotency_key=row["idempotency_key"] or "",
        arguments_hash=row["arguments_hash"] or "",
        profiles=profiles,
        jobs=jobs,
        together=_together(row["together"]),
    )


def worker_row(w: WorkerView) -> dict[str, Any]:
    prepared = w.prepared
    return {
        "uuid": w.uuid,
        "state": int(w.state),
        "groups_json": _json_set(w.groups),
        "caps": _json_caps(w.caps),
        "dryad_address": w.dryad_address,
        "ssh_address": w.ssh_address,
        "instance_id": w.instance_id,
        "dryad_version": w.dryad_version,
        "reason": w.reason,
        "request_id": w.request_id,
        "registered_at": w.registered_at,
        "last_seen": w.last_seen,
        "jobs_done": w.jobs_done,
        "failures": w.failures,
        "prepared_username": prepared.username if prepared else None,
        "prepared_key": prepared.private_key_pem if prepared else None,
        "prepared_host_keys": _json_keys(prepared),
        "health": _json_health(w.health),
        "drain_reason": w.drain_reason,
    }


def worker_view(row: Row) -> WorkerView:
    prepared = _access(row["prepared_username"], row["prepared_key"], row["prepared_host_keys"])
    return WorkerView(
        uuid=row["uuid"],
        state=WorkerState(row["state"]),
        groups=frozenset(json.loads(row["groups_json"])),
        caps=MappingProxyType(json.loads(row["caps"])),
        dryad_address=row["dryad_address"],
        ssh_address=row["ssh_address"],
        instance_id=row["instance_id"],
        dryad_version=row["dryad_version"],
        reason=row["reason"],
        request_id=row["request_id"],
        registered_at=row["registered_at"],
        last_seen=row["last_seen"],
        jobs_done=row["jobs_done"],
        failures=row["failures"],
        prepared=prepared,
        health=_health(row["health"]),
        drain_reason=row["drain_reason"],
    )


def _json_health(health: Health) -> str:
    if health == _NO_HEALTH:
        return "{}"
    data: dict[str, Any] = {
        "failures": [[f.time, f.kind.value, f.reason] for f in health.failures],
        "quarantined": health.quarantined,
        "recoverable": health.recoverable,
    }
    if health.counted_from:
        data["counted_from"] = health.counted_from
    return json.dumps(data)


def _health(text: str) -> Health:
    data = json.loads(text)
    if not data:
        return _NO_HEALTH
    return Health(
        tuple(Failure(t, reason, FailureKind(kind)) for t, kind, reason in data["failures"]),
        quarantined=data["quarantined"],
        recoverable=data["recoverable"],
        # Absent in records written before quarantines were ended afresh: count them all.
        counted_from=data.get("counted_from", 0.0),
    )


def history_row(h: HistoryEntry) -> dict[str, Any]:
    return {
        "worker_uuid": h.worker_uuid,
        "time": h.time,
        "from_state": int(h.from_state) if h.from_state is not None else None,
        "to_state": int(h.to_state),
        "reason": h.reason,
    }


def history_entry(row: Row) -> HistoryEntry:
    from_state = row["from_state"]
    return HistoryEntry(
        worker_uuid=row["worker_uuid"],
        time=row["time"],
        from_state=WorkerState(from_state) if from_state is not None else None,
        to_state=WorkerState(row["to_state"]),
        reason=row["reason"],
    )


def token_row(token: TokenRecord) -> dict[str, Any]:
    return {
        "id": token.id,
        "user": token.user,
        "groups_json": _json_set(token.groups),
        "admin": bool(token.admin),
        "secret_hash": token.secret_hash,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "issued_by": token.issued_by,
        "description": token.description,
        "idempotency_key_hash": token.idempotency_key_hash or None,
        "arguments_hash": token.arguments_hash or None,
        "sealed_secret": token.sealed_secret,
    }


def token_record(row: Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user=row["user"],
        groups=frozenset(json.loads(row["groups_json"])),
        admin=bool(row["admin"]),
        secret_hash=bytes(row["secret_hash"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        issued_by=row["issued_by"],
        description=row["description"],
        idempotency_key_hash=bytes(row["idempotency_key_hash"] or b""),
        arguments_hash=row["arguments_hash"] or "",
        sealed_secret=None if row["sealed_secret"] is None else bytes(row["sealed_secret"]),
    )


def stack_row(stack: StackView) -> dict[str, Any]:
    return {
        "name": stack.name,
        "workers_json": json.dumps(list(stack.workers)),
        "created_at": stack.created_at,
    }


def stack_view(row: Row) -> StackView:
    return StackView(row["name"], tuple(json.loads(row["workers_json"])), row["created_at"])


def audit_row(e: AuditEvent) -> dict[str, Any]:
    return {
        "time": e.time,
        "actor": e.actor,
        "role": e.role,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
    }


def audit_event(row: Row) -> AuditEvent:
    return AuditEvent(
        row["time"],
        row["actor"],
        row["role"],
        row["action"],
        row["target"],
        row["detail"],
        row["id"],
    )


def usage_row(u: JobUsage) -> dict[str, Any]:
    return {
        "request_id": u.request_id,
        "job_index": u.index,
        "owner": u.owner,
        "grp": u.group,
        "worker_uuid": u.worker_uuid,
        "submitted_at": u.submitted_at,
        "started_at": u.started_at,
        "ended_at": u.ended_at,
        "state": int(u.state),
    }


def usage_params(query: UsageQuery) -> dict[str, Any]:
    """The parameters of the usage_totals statement."""
    return {
        "since": query.since,
        "until": query.until,
        "now": query.now,
        "by": query.by.value,
        "owner": query.owner,
    }


def usage_totals(row: Row) -> UsageTotals:
    return UsageTotals(
        key=row["key"],
        board_seconds=float(row["board_seconds"]),
        jobs=int(row["jobs"]),
        requests=int(row["requests"]),
        wait_seconds=float(row["wait_seconds"]),
        max_wait_seconds=float(row["max_wait_seconds"]),
        unstarted=int(row["unstarted"]),
        unstarted_wait_seconds=float(row["unstarted_wait_seconds"]),
    )


def commit_statements(changes: Changes) -> list[tuple[str, list[dict[str, Any]]]]:
    """The named statements that make changes durable, in order, each with its rows: the
    same for every SQL store, which runs them all in one transaction."""
    removed = [{"uuid": w.uuid} for w in changes.removed_workers]
    steps = [
        ("upsert_request", [request_row(r) for r in changes.requests]),
        # In the order the core made them: a job's start before its end.
        ("record_usage", [usage_row(u) for u in changes.usage]),
        ("upsert_worker", [worker_row(w) for w in changes.workers]),
        ("touch_worker", [{"uuid": u, "last_seen": t} for u, t in changes.last_seen.items()]),
        ("delete_worker", removed),
        ("delete_worker_history", removed),
        ("insert_history", [history_row(h) for h in changes.history]),
        ("upsert_token", [token_row(t) for t in changes.tokens]),
        # After the upserts: a token issued and purged in one (merged) commit goes.
        ("delete_token", [{"id": token_id} for token_id in changes.removed_tokens]),
        # Kept apart from the rows, which the purge deletes, so that no id is handed out twice.
        (
            "set_last_token_id",
            [{"value": max(t.id for t in changes.tokens)}] if changes.tokens else [],
        ),
        # Deletions first: a stack deleted and made again in one commit is made again.
        ("delete_stack", [{"name": name} for name in changes.removed_stacks]),
        ("upsert_stack", [stack_row(s) for s in changes.stacks]),
        ("insert_audit", [audit_row(e) for e in changes.audit]),
        ("set_last_request_id", [{"value": changes.last_request_id}]),
    ]
    return [(name, rows) for name, rows in steps if rows]


_SORT_COLUMNS = {sort: sort.value for sort in RequestSort}


def select_requests(query: RequestQuery, mark: str) -> tuple[str, list[Any]]:
    """SQL and parameters for one page of a request list, one row more than the page to
    tell whether another follows; mark is the dialect's placeholder ("?" or "%s")."""
    where: list[str] = []
    params: list[Any] = []
    for column, values in (
        ("id", query.ids),
        ("state", {int(s) for s in query.states}),
        ("priority", query.priorities),
        ("owner", query.owners),
    ):
        if values:
            where.append(f"{column} IN ({','.join([mark] * len(values))})")
            params.extend(sorted(values))
    column = _SORT_COLUMNS[query.sort]
    direction = "DESC" if query.descending else "ASC"
    if query.after is not None:
        where.append(f"({column}, id) {'<' if query.descending else '>'} ({mark}, {mark})")
        params.extend(query.after)
    sql = "SELECT * FROM requests"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {column} {direction}, id {direction} LIMIT {mark}"
    params.append(query.limit + 1)
    return sql, params


def request_page(query: RequestQuery, rows: Sequence[Row]) -> Page[RequestView]:
    """The page that rows, as select_requests fetched them, make."""
    items = [request_view(row) for row in rows[: query.limit]]
    next_after = None
    if len(rows) > query.limit:
        last = rows[query.limit - 1]
        next_after = (last[_SORT_COLUMNS[query.sort]], last["id"])
    return Page(items, next_after)
