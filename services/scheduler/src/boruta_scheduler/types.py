"""Shared value types of the scheduler: states, identities and immutable views of records.

Times are float seconds since the Unix epoch (UTC); adapters convert at the edges.
The enum numbers equal those of the ``boruta.v1`` protobuf enums.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

CapPair = tuple[str, str]
Caps = Mapping[str, str]

UUID_CAP = "UUID"
"""Key of the capability that carries a worker's UUID, as in Boruta."""


class RequestState(enum.IntEnum):
    """Where a request is in its life; every state but WAITING and IN_PROGRESS is terminal."""

    WAITING = 1
    IN_PROGRESS = 2
    CANCELLED = 3
    TIMEOUT = 4
    INVALID = 5
    DONE = 6
    FAILED = 7

    @property
    def is_terminal(self) -> bool:
        return self not in (RequestState.WAITING, RequestState.IN_PROGRESS)


class WorkerState(enum.IntEnum):
    """Where a worker is in its life."""

    MAINTENANCE = 1
    IDLE = 2
    RUNNING = 3
    FAILED = 4
    PREPARE = 5
    BUSY = 6


class PendingCode(enum.IntEnum):
    """Why a WAITING request waits (docs/api.md, "Pending reasons"); the first that applies,
    in this order of precedence."""

    NO_MATCHING_BOARD = 1
    NO_BOARD_IN_GROUPS = 2
    NOT_VALID_YET = 3
    BOARDS_UNAVAILABLE = 4
    HIGHER_PRIORITY = 5
    WAITING_FOR_SET = 6
    BOARDS_BUSY = 7


@dataclass(frozen=True, slots=True)
class PendingBoard:
    """A board a waiting request could use, and when it is expected to come free."""

    uuid: str
    state: WorkerState
    # The request running on it, or holding it as collateral (0: none).
    held_by: int = 0
    collateral: bool = False
    # The waiting request of several boards it is reserved for (0: none).
    reserved_for: int = 0
    # When the job holding it times out unless prolonged, and at the latest (its
    # max_timeout_at); 0 when no job holds it.
    frees_at: float = 0.0
    frees_at_latest: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingReason:
    """Why a WAITING request waits, of one moment of the core."""

    code: PendingCode
    message: str
    # Waiting requests served before it that could use a board it could use.
    requests_ahead: int = 0
    # The boards it could use (at most MAX_BOARDS_LISTED, soonest free first), and how
    # many there are among those looked at.
    boards: tuple[PendingBoard, ...] = ()
    boards_total: int = 0
    # The boards reserved for it (a request of several boards).
    reserved: tuple[str, ...] = ()
    # When it is expected to start if no running job is prolonged, and when at the latest
    # (jobs' max_timeout_at); 0: no estimate is given.
    expected_start: float = 0.0
    latest_start: float = 0.0


class Role(enum.Enum):
    """What kind of caller an identity is."""

    USER = "user"
    ADMIN = "admin"
    DRYAD = "dryad"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as established by the channel (never by request fields)."""

    user: str
    groups: frozenset[str] = frozenset()
    role: Role = Role.USER
    # The workers a dryad's certificate names; None on a plaintext channel, where
    # identities are taken as given and nothing can be checked.
    workers: frozenset[str] | None = None
    # The bearer token the caller came with, to check again before handing out secrets.
    token_id: int | None = None
    # The hosts a dryad's certificate names: the only ones it may send the scheduler's
    # calls and users' tunnels to. None where nothing is known (plaintext).
    hosts: frozenset[str] | None = None

    def may_speak_for(self, worker_uuid: str) -> bool:
        """Whether this caller may register, heartbeat or fail this worker."""
        if self.workers is None:
            return True
        return self.role is Role.DRYAD and worker_uuid in self.workers


@dataclass(frozen=True, slots=True)
class Access:
    """Login for one job: the per-job Unix user, the private half of its RSA key, and the
    host keys (OpenSSH public key lines) the board's sshd shows; none from old dryads."""

    username: str
    private_key_pem: str = field(repr=False)
    host_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FailedChecks:
    """A Prepare asked to run the board's health checks first found one failing and
    prepared nothing; what names the failed checks, worded as a failed Healthcheck's error."""

    what: str


@dataclass(frozen=True, slots=True)
class HostStatus:
    """Resource usage a dryad reports with its heartbeats."""

    load_1m: float = 0.0
    memory_total_bytes: int = 0
    memory_available_bytes: int = 0
    disk_free_bytes: int = 0
    uptime_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class JobView:
    """The job of a request: its worker, times and, while it runs, its access secret."""

    worker_uuid: str
    started_at: float
    timeout_at: float
    max_timeout_at: float
    prolong_count: int
    ssh_address: str
    access: Access | None = field(default=None, repr=False)
    tunnel_port: int = 0


class Placement(enum.IntEnum):
    """Where the boards of a co-located group of profiles must be (docs/api.md)."""

    HOST = 1  # one host: the same dryad address, one dryad process
    STACK = 2  # one stack


@dataclass(frozen=True, slots=True)
class Colocation:
    """Profiles of a request whose boards must share a place: their names, in the owner's
    order (empty: every profile of the request)."""

    profiles: tuple[str, ...]
    placement: Placement


@dataclass(frozen=True, slots=True)
class ProfileView:
    """One board a request asks for: the name its owner gave it ("": none) and its caps."""

    name: str
    caps: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RequestView:
    """An immutable snapshot of a request."""

    id: int
    priority: int
    owner: str
    owner_groups: frozenset[str]
    caps: Mapping[str, str]
    valid_after: float
    deadline: float
    state: RequestState
    reason: str
    created_at: float
    updated_at: float
    job: JobView | None
    # Seconds the job may go without a prolong, as asked for; 0: the policy's.
    job_timeout: float = 0.0
    # The key its owner created it with ("": none) and a hash of the arguments it was
    # asked with, so that a retried NewRequest finds it and checks it asks the same.
    idempotency_key: str = ""
    arguments_hash: str = ""
    # Every profile, in the owner's order, when there is more than one or the one is named;
    # empty for a request of one unnamed profile (its caps). caps is profiles[0]'s.
    profiles: tuple[ProfileView, ...] = ()
    # Every job, one per profile in profile order, when there are profiles; job is jobs[0].
    jobs: tuple[JobView, ...] = ()
    # Groups of profiles whose boards must share a host or a stack, as asked for.
    together: tuple[Colocation, ...] = ()

    @property
    def all_profiles(self) -> tuple[ProfileView, ...]:
        """The profiles, the one unnamed profile of caps included."""
        return self.profiles or (ProfileView("", self.caps),)

    @property
    def all_jobs(self) -> tuple[JobView, ...]:
        """The jobs in profile order: none while the request waits."""
        if self.jobs:
            return self.jobs
        return () if self.job is None else (self.job,)


class FailureKind(enum.Enum):
    """What made a worker FAILED (core/health.py)."""

    # Its dryad went silent for longer than the heartbeat timeout.
    HEARTBEAT = "heartbeat"
    # A call to its dryad (Prepare, Healthcheck, PutInMaintenance) failed.
    DRYAD_CALL = "dryad_call"
    # Its dryad reported it with SetFail (a local check failed).
    REPORTED = "reported"
    # Anything else the scheduler found wrong (e.g. Prepare returned no access).
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Failure:
    """One time a worker entered FAILED."""

    time: float
    reason: str
    kind: FailureKind


@dataclass(frozen=True, slots=True)
class Health:
    """A worker's latest failures (oldest first, at most health.KEPT of them) and what
    they led to: quarantined, put into MAINTENANCE by the scheduler after too many;
    recoverable, FAILED only because its heartbeats stopped while it was in service, so it
    goes back into service once its dryad is heard again and a healthcheck passes;
    counted_from, when an admin last took it out of quarantine: failures before it no longer
    count towards another."""

    failures: tuple[Failure, ...] = ()
    quarantined: bool = False
    recoverable: bool = False
    counted_from: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """An immutable snapshot of a worker."""

    uuid: str
    state: WorkerState
    groups: frozenset[str]
    caps: Mapping[str, str]
    dryad_address: str
    ssh_address: str
    instance_id: str
    dryad_version: str
    reason: str
    request_id: int
    registered_at: float
    last_seen: float
    jobs_done: int
    failures: int
    prepared: Access | None = field(default=None, repr=False)
    host_status: HostStatus | None = None
    # The stack the worker belongs to ("" for none) and the request that holds it as
    # collateral (0 for none): not matched to any other request until that one ends.
    stack: str = ""
    collateral_of: int = 0
    health: Health = Health()
    # While RUNNING: the reason it goes into MAINTENANCE with when its job ends (an admin
    # asked for maintenance after the job); "" when it is prepared again after the job.
    drain_reason: str = ""


@dataclass(frozen=True, slots=True)
class StackView:
    """A named set of workers wired together; holder is the request that has a board of it
    (0 for none), which holds the others as collateral."""

    name: str
    workers: tuple[str, ...]
    created_at: float
    holder: int = 0


@dataclass(frozen=True, slots=True)
class AllocatedBoard:
    """One board a running request holds for one profile, with its host and stack."""

    profile: str
    worker_uuid: str
    dryad_address: str
    stack: str


@dataclass(frozen=True, slots=True)
class Allocation:
    """What a running request holds: a board per profile and its stacks' collateral."""

    request_id: int
    owner: str
    boards: tuple[AllocatedBoard, ...]
    collateral: tuple[str, ...]
    started_at: float
    timeout_at: float


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change of a worker's state; from_state is None for the first registration."""

    worker_uuid: str
    time: float
    from_state: WorkerState | None
    to_state: WorkerState
    reason: str


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A bearer token as the store keeps it: the identity it carries and a hash of it;
    id is 0 until the store keeps it."""

    user: str
    groups: frozenset[str]
    admin: bool
    secret_hash: bytes = field(repr=False)
    created_at: float
    expires_at: float
    issued_by: str
    description: str
    revoked_at: float | None = None
    id: int = 0
    # IssueToken's idempotency key, hashed with the issuer's name (empty: none), a hash of
    # the call's arguments, and the secret sealed with a pad only the key gives, kept for
    # SEAL_KEPT seconds after issuing (app/tokens.py; None: cleared, or no key).
    idempotency_key_hash: bytes = b""
    arguments_hash: str = ""
    sealed_secret: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing someone did or was refused; id is 0 until the store keeps it."""

    time: float
    actor: str
    role: str
    action: str
    target: str
    detail: str = ""
    id: int = 0


OPEN_GROUP = "(open)"
"""The group a job counts for in usage when its board has no groups (open to everyone)."""
NO_GROUP = "(none)"
"""The group of usage no group granted: requests that never got a board, and jobs whose
board no longer shares a group with their owner when their record is first written."""


def granting_group(worker_groups: frozenset[str], owner_groups: frozenset[str]) -> str:
    """The one group a job on a board counts for in usage: the first (by name) of the
    board's groups that its owner is in, OPEN_GROUP for a board with no groups."""
    if not worker_groups:
        return OPEN_GROUP
    shared = worker_groups & owner_groups
    return min(shared) if shared else NO_GROUP


@dataclass(frozen=True, slots=True)
class JobUsage:
    """The usage record of one job (index: its profile), written when it starts and again
    when it ends; a request that ended without starting has one record of index 0, with no
    worker and no start. Kept apart from the request, with a retention of its own."""

    request_id: int
    index: int
    owner: str
    group: str  # the group that granted the board (granting_group), fixed at the start
    worker_uuid: str  # "" for a request that never started
    submitted_at: float  # when the request was created
    started_at: float | None
    ended_at: float | None  # None while the job runs
    state: RequestState  # the request's state when the record was written


class UsageBy(enum.Enum):
    """What usage figures are summed by."""

    USER = "user"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Usage over [since, until), summed by user or group; now is when running jobs end for
    the sums; owner, if set, keeps only that owner's records."""

    since: float
    until: float
    now: float
    by: UsageBy = UsageBy.USER
    owner: str = ""


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """The usage of one user or group over a period (docs/api.md, "Usage")."""

    key: str  # the user, or the group
    board_seconds: float = 0.0  # every board's job time inside the period
    jobs: int = 0  # jobs (one per board) that started in the period
    requests: int = 0  # requests that started in the period
    wait_seconds: float = 0.0  # their waits, created to started, summed
    max_wait_seconds: float = 0.0
    unstarted: int = 0  # requests that ended in the period without ever starting
    unstarted_wait_seconds: float = 0.0  # their waits, created to ended, summed
