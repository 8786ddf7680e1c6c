"""Mutable records the core keeps for live requests, their jobs and registered workers."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from boruta_scheduler.core.caps import board_items
from boruta_scheduler.types import (
    Access,
    CapPair,
    Colocation,
    Health,
    HostStatus,
    JobView,
    ProfileView,
    RequestState,
    RequestView,
    WorkerState,
    WorkerView,
)

if TYPE_CHECKING:
    from boruta_scheduler.core.queue import BucketBase
    from boruta_scheduler.core.together import Group


def cap_pairs(caps: Mapping[str, str]) -> frozenset[CapPair]:
    """Caps as a set of pairs with interned keys and values, so that every request and
    worker with a key or value in common shares one string of it. (Interned strings are
    freed with their last user: the interpreter's table does not keep them alive.)"""
    intern = sys.intern
    return frozenset((intern(key), intern(value)) for key, value in caps.items())


def groups_compatible(worker_groups: frozenset[str], owner_groups: frozenset[str]) -> bool:
    """A worker serves an owner if it has no groups or shares at least one with them."""
    return not worker_groups or not worker_groups.isdisjoint(owner_groups)


class Job:
    """The reservation of one worker for one request."""

    __slots__ = (
        "access",
        "max_timeout_at",
        "prolong_count",
        "ssh_address",
        "started_at",
        "timeout_at",
        "tunnel_port",
        "worker_uuid",
    )

    def __init__(
        self,
        worker_uuid: str,
        started_at: float,
        timeout_at: float,
        max_timeout_at: float,
        ssh_address: str,
        access: Access | None,
        prolong_count: int = 0,
        tunnel_port: int = 0,
    ) -> None:
        self.worker_uuid = worker_uuid
        self.started_at = started_at
        self.timeout_at = timeout_at
        self.max_timeout_at = max_timeout_at
        self.ssh_address = ssh_address
        self.access = access
        self.prolong_count = prolong_count
        # Port of the job's tunnel on the scheduler; 0 until the tunnel is open.
        self.tunnel_port = tunnel_port

    def view(self) -> JobView:
        return JobView(
            worker_uuid=self.worker_uuid,
            started_at=self.started_at,
            timeout_at=self.timeout_at,
            max_timeout_at=self.max_timeout_at,
            prolong_count=self.prolong_count,
            ssh_address=self.ssh_address,
            access=self.access,
            tunnel_port=self.tunnel_port,
        )

    @classmethod
    def from_view(cls, view: JobView) -> Job:
        return cls(
            view.worker_uuid,
            view.started_at,
            view.timeout_at,
            view.max_timeout_at,
            view.ssh_address,
            view.access,
            view.prolong_count,
            view.tunnel_port,
        )


Profile = tuple[str, frozenset[CapPair]]


class Request:
    """A live (WAITING or IN_PROGRESS) request. Its caps are an interned frozenset of pairs:
    sig, its first profile's; profiles holds (name, caps) of every profile when there is more
    than one or the one is named (empty for one unnamed profile, the common case)."""

    __slots__ = (
        "arguments_hash",
        "bucket",
        "colocated",
        "created_at",
        "deadline",
        "id",
        "idempotency_key",
        "job_timeout",
        "jobs",
        "owner",
        "owner_groups",
        "priority",
        "profiles",
        "ready",
        "reason",
        "reserved",
        "sig",
        "state",
        "together",
        "updated_at",
        "valid_after",
    )

    def __init__(
        self,
        id: int,
        owner: str,
        owner_groups: frozenset[str],
        sig: frozenset[CapPair],
        priority: int,
        valid_after: float,
        deadline: float,
        created_at: float,
        job_timeout: float = 0.0,
        idempotency_key: str = "",
        arguments_hash: str = "",
        profiles: tuple[Profile, ...] = (),
        together: tuple[Colocation, ...] = (),
        colocated: tuple[Group, ...] = (),
    ) -> None:
        self.id = id
        self.owner = owner
        self.owner_groups = owner_groups
        self.sig = sig
        self.profiles = profiles
        # Co-located groups of profiles: as asked for (shown), and as profile indexes.
        self.together = together
        self.colocated = colocated
        self.priority = priority
        self.valid_after = valid_after
        self.deadline = deadline
        self.created_at = created_at
        self.updated_at = created_at
        # Seconds the job may go without a prolong, as asked; 0: the policy's.
        self.job_timeout = job_timeout
        self.idempotency_key = idempotency_key
        self.arguments_hash = arguments_hash
        self.state = RequestState.WAITING
        self.reason = ""
        # One job per profile, in profile order, while IN_PROGRESS.
        self.jobs: tuple[Job, ...] = ()
        # ready: valid_after has come, so the request sits in its bucket's ready heap.
        self.ready = False
        self.bucket: BucketBase | None = None
        # Workers reserved for this waiting request of several profiles (derived state,
        # never stored: see Core._reserve).
        self.reserved: tuple[Worker, ...] = ()

    @property
    def job(self) -> Job | None:
        """The first profile's job (the only one of a one-profile request)."""
        return self.jobs[0] if self.jobs else None

    @property
    def sigs(self) -> tuple[frozenset[CapPair], ...]:
        """The caps of every profile, in order."""
        return tuple(sig for _, sig in self.profiles) if self.profiles else (self.sig,)

    def view(self) -> RequestView:
        profiles = self.profiles
        jobs = self.jobs
        return RequestView(
            id=self.id,
            priority=self.priority,
            owner=self.owner,
            owner_groups=self.owner_groups,
            caps=MappingProxyType(dict(self.sig)),
            valid_after=self.valid_after,
            deadline=self.deadline,
            state=self.state,
            reason=self.reason,
            created_at=self.created_at,
            updated_at=self.updated_at,
            job=jobs[0].view() if jobs else None,
            job_timeout=self.job_timeout,
            idempotency_key=self.idempotency_key,
            arguments_hash=self.arguments_hash,
            profiles=tuple(ProfileView(name, MappingProxyType(dict(sig))) for name, sig in profiles)
            if profiles
            else (),
            jobs=tuple(job.view() for job in jobs) if profiles and jobs else (),
            together=self.together,
        )


class Worker:
    """A registered worker (one board)."""

    __slots__ = (
        "caps_sig",
        "checking",
        "collateral_of",
        "drain_reason",
        "dryad_address",
        "dryad_version",
        "failures",
        "groups",
        "hb_armed",
        "health",
        "health_due",
        "health_op",
        "host_status",
        "instance_id",
        "items",
        "jobs_done",
        "last_seen",
        "pending_op",
        "prepared",
        "rank",
        "reason",
        "registered_at",
        "request_id",
        "reserved_for",
        "ssh_address",
        "stack",
        "state",
        "uuid",
    )

    def __init__(
        self,
        uuid: str,
        caps_sig: frozenset[CapPair],
        groups: frozenset[str],
        state: WorkerState,
        dryad_address: str,
        ssh_address: str,
        registered_at: float,
    ) -> None:
        self.uuid = uuid
        self.caps_sig = caps_sig
        # Caps as (key, item) pairs, what requests are matched against (caps.py).
        self.items = board_items(caps_sig)
        self.groups = groups
        self.state = state
        self.dryad_address = dryad_address
        self.ssh_address = ssh_address
        self.registered_at = registered_at
        self.last_seen = registered_at
        self.instance_id = ""
        self.dryad_version = ""
        self.reason = ""
        self.request_id = 0
        # While RUNNING: the reason it goes into MAINTENANCE with when its job ends ("" for
        # none: it is prepared again).
        self.drain_reason = ""
        # The waiting request of several profiles this worker is kept for, if any: while
        # IDLE, or while it runs a backfilled job (and prepares after it).
        self.reserved_for: Request | None = None
        self.jobs_done = 0
        self.failures = 0
        self.prepared: Access | None = None
        self.pending_op = 0
        # Whether the call pending_op names is a Prepare that runs the board's checks.
        self.checking = False
        self.host_status: HostStatus | None = None
        self.hb_armed = False
        # Its stack ("" for none), and the request holding it as collateral (0 for none).
        self.stack = ""
        self.collateral_of = 0
        # Periodic healthcheck: when the next is due (0: none planned) and the one in flight.
        self.health_due = 0.0
        self.health_op = 0
        # Latest failures, quarantine and recovery (core/health.py).
        self.health = Health()
        self.rank = self.compute_rank()

    def compute_rank(self) -> tuple[int, str]:
        """Order among matching idle workers: least capable first, then by UUID."""
        return (len(self.items) + len(self.groups), self.uuid)

    def view(self) -> WorkerView:
        return WorkerView(
            uuid=self.uuid,
            state=self.state,
            groups=self.groups,
            caps=MappingProxyType(dict(self.caps_sig)),
            dryad_address=self.dryad_address,
            ssh_address=self.ssh_address,
            instance_id=self.instance_id,
            dryad_version=self.dryad_version,
            reason=self.reason,
            request_id=self.request_id,
            registered_at=self.registered_at,
            last_seen=self.last_seen,
            jobs_done=self.jobs_done,
            failures=self.failures,
            prepared=self.prepared,
            host_status=self.host_status,
            stack=self.stack,
            collateral_of=self.collateral_of,
            health=self.health,
            drain_reason=self.drain_reason,
        )
