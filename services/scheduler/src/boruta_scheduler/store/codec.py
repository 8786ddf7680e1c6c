"""Conversions between views and flat rows, shared by the SQL stores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from boruta_scheduler.types import (
    Access,
    HistoryEntry,
    JobView,
    RequestState,
    RequestView,
    WorkerState,
    WorkerView,
)

Row = Mapping[str, Any]


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
    }


def request_view(row: Row) -> RequestView:
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
    return RequestView(
        id=row["id"],
        priority=row["priority"],
        owner=row["owner"],
        owner_groups=frozenset(json.loads(row["owner_groups"])),
        caps=MappingProxyType(json.loads(row["caps"])),
        valid_after=row["valid_after"],
        deadline=row["deadline"],
        state=RequestState(row["state"]),
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        job=job,
        job_timeout=row["job_timeout"],
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
